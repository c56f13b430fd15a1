"""Robot PC: camera and controller; planner and IDM optional (they normally run on the GPU host,
started there by eva_planner.launch.py with the same ROS_DOMAIN_ID).

    ros2 launch eva_ros eva_robot.launch.py                       # camera + controller
    ros2 launch eva_ros eva_robot.launch.py with_planner:=true    # everything on this PC
    ros2 launch eva_ros eva_robot.launch.py config:=/path/robot.yaml planner_config:=/path/planner.yaml
    ros2 launch eva_ros eva_robot.launch.py rviz:=true            # + RViz (docs/ros_interface.md)
    ros2 launch eva_ros eva_robot.launch.py enclave:=/eva         # SROS2 (docs/hardware.md)

robot_state_publisher publishes robot_description and /tf from joint_states (rsp:=false: not
started; not installed: one log line). rviz:=true starts rviz2 with share/eva_ros/rviz/eva.rviz.

Every node reads config/base.yaml, then its overlay: the same files `eva-bringup --config` reads
(eva_ros.launch_common); only console-script names are used.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration

from eva_ros.launch_common import config_argument, eva_node, robot_model_actions, transport_actions


def generate_launch_description():
    config = LaunchConfiguration("config")
    planner_config = LaunchConfiguration("planner_config")
    with_planner = IfCondition(LaunchConfiguration("with_planner"))
    return LaunchDescription([
        config_argument("config", "robot.yaml", "params file of the camera and controller nodes"),
        config_argument("planner_config", "planner.yaml", "params file of the planner and idm_action nodes"),
        DeclareLaunchArgument("with_planner", default_value="false",
                              description="also run planner + idm_action here (no GPU host)"),
        *transport_actions(),
        eva_node("eva-camera-node", "camera", config),
        eva_node("eva-controller-node", "controller", config),
        eva_node("eva-planner-node", "planner", planner_config, with_planner),
        eva_node("eva-idm-action-node", "idm_action", planner_config, with_planner),
        *robot_model_actions(),
    ])
