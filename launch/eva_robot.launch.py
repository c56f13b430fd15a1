"""Robot PC: camera and controller; planner and IDM optional (they normally run on the GPU host,
started there by eva_planner.launch.py with the same ROS_DOMAIN_ID).

    ros2 launch eva_ros eva_robot.launch.py                       # camera + controller
    ros2 launch eva_ros eva_robot.launch.py with_planner:=true    # everything on this PC
    ros2 launch eva_ros eva_robot.launch.py config:=/path/robot.yaml planner_config:=/path/planner.yaml

Every node gets the same params file that `eva-bringup --config` reads (one source of truth);
only console-script names are used. FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for big images.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "eva_ros"


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    config = LaunchConfiguration("config")
    planner_config = LaunchConfiguration("planner_config")
    with_planner = IfCondition(LaunchConfiguration("with_planner"))

    def node(executable, name, params, condition=None):
        return Node(package=PACKAGE, executable=executable, name=name, parameters=[params],
                    output="screen", emulate_tty=True, condition=condition)

    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "robot.yaml"),
                              description="params file of the camera and controller nodes"),
        DeclareLaunchArgument("planner_config", default_value=os.path.join(share, "config", "planner.yaml"),
                              description="params file of the planner and idm_action nodes"),
        DeclareLaunchArgument("with_planner", default_value="false",
                              description="also run planner + idm_action here (no GPU host)"),
        DeclareLaunchArgument("transport", default_value="LARGE_DATA",
                              description="FASTDDS_BUILTIN_TRANSPORTS (LARGE_DATA, SHM, UDPv4, DEFAULT)"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", LaunchConfiguration("transport")),
        # + a 16 MB shared-memory segment: 640x480 images in ~3 ms instead of ~13 ms on one host (bench/ros_latency.py)
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds_shm.xml")),
        node("eva-camera-node", "camera", config),
        node("eva-controller-node", "controller", config),
        node("eva-planner-node", "planner", planner_config, with_planner),
        node("eva-idm-action-node", "idm_action", planner_config, with_planner),
    ])
