"""GPU host: planner (world model) and idm_action (IDM + reward + safety filter).

    export ROS_DOMAIN_ID=42          # the same on the robot PC
    ros2 launch eva_ros eva_planner.launch.py [config:=/path/planner.yaml]

They subscribe the robot PC's camera and /joint_states and publish the trajectory its
controller executes; see docs/ros_interface.md (two-machine setup).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "eva_ros"


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    config = LaunchConfiguration("config")

    def node(executable, name):
        return Node(package=PACKAGE, executable=executable, name=name, parameters=[config],
                    output="screen", emulate_tty=True)

    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "planner.yaml"),
                              description="params file of the planner and idm_action nodes"),
        DeclareLaunchArgument("transport", default_value="LARGE_DATA",
                              description="FASTDDS_BUILTIN_TRANSPORTS (LARGE_DATA, SHM, UDPv4, DEFAULT)"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", LaunchConfiguration("transport")),
        # + a 16 MB shared-memory segment: 640x480 images in ~3 ms instead of ~13 ms on one host (bench/ros_latency.py)
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds_shm.xml")),
        node("eva-planner-node", "planner"),
        node("eva-idm-action-node", "idm_action"),
    ])
