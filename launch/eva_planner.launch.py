"""GPU host: planner (world model) and idm_action (IDM + reward + safety filter).

    export ROS_DOMAIN_ID=42          # the same on the robot PC
    ros2 launch eva_ros eva_planner.launch.py [config:=/path/planner.yaml]

They subscribe the robot PC's camera and joint_states and publish the trajectory its
controller executes; see docs/ros_interface.md (two-machine setup). Every node reads
config/base.yaml, then `config` (eva_ros.launch_common).
"""

from launch import LaunchDescription
from launch.substitutions import LaunchConfiguration

from eva_ros.launch_common import config_argument, eva_node, transport_actions


def generate_launch_description():
    config = LaunchConfiguration("config")
    return LaunchDescription([
        config_argument("config", "planner.yaml", "params file of the planner and idm_action nodes"),
        *transport_actions(),
        eva_node("eva-planner-node", "planner", config),
        eva_node("eva-idm-action-node", "idm_action", config),
    ])
