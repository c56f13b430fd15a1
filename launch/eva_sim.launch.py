"""Simulation on one machine: all four nodes on the MuJoCo twin (config/sim.yaml: the sim arm
poses the twin, the sim camera renders it). `config:=.../loopback.yaml` runs the ideal loopback
arm with a playback camera instead.

    ros2 launch eva_ros eva_sim.launch.py [config:=/path/params.yaml]

Discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST). The same file runs
without launch_ros: `eva-bringup --config config/sim.yaml`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "eva_ros"
NODES = [("eva-camera-node", "camera"), ("eva-controller-node", "controller"),
         ("eva-idm-action-node", "idm_action"), ("eva-planner-node", "planner")]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    config = LaunchConfiguration("config")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "sim.yaml"),
                              description="params file of all four nodes"),
        DeclareLaunchArgument("transport", default_value="LARGE_DATA",
                              description="FASTDDS_BUILTIN_TRANSPORTS (LARGE_DATA, SHM, UDPv4, DEFAULT)"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", LaunchConfiguration("transport")),
        # + a 16 MB shared-memory segment: 640x480 images in ~3 ms instead of ~13 ms on one host (bench/ros_latency.py)
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds_shm.xml")),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        *[Node(package=PACKAGE, executable=exe, name=name, parameters=[config], output="screen", emulate_tty=True)
          for exe, name in NODES],
    ])
