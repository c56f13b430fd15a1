"""Record a (teleoperated) episode to a rosbag2 MCAP bag.

    ros2 launch eva_ros record.launch.py [out:=bags/pick_001] [recorder:=ros2bag|eva] [config:=...]

recorder:=ros2bag (default) runs `ros2 bag record -s mcap` on the topics of config/record.yaml
(`eva_record` section: cameras, joint_states, leader/joint_states, eva/instruction, ...) with its
storage preset, split duration/size and QoS overrides file (eva_ros.bag_recorder.ros2_bag_command).
recorder:=eva runs eva-record instead (no ros2 CLI needed; crash-safe short segments; episodes
under its out_dir). Convert either with `eva-bag-to-episodes`. See docs/twin_and_data.md.
enclave:=/eva (SROS2, docs/hardware.md): eva-record runs in /eva/eva_record, `ros2 bag record`
in /eva/ros2bag (through ROS_SECURITY_ENCLAVE_OVERRIDE, which rcl reads in any process).
"""

import time

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import LaunchConfigurationEquals
from launch.substitutions import LaunchConfiguration

from eva_ros.launch_common import config_argument, config_file, enclave_path, eva_node, transport_actions


def _ros2_bag(context):
    from eva_ros.bag_recorder import ros2_bag_command

    config = LaunchConfiguration("config").perform(context)
    out = LaunchConfiguration("out").perform(context)
    enclave = enclave_path(LaunchConfiguration("enclave").perform(context), "ros2bag")
    return [ExecuteProcess(cmd=ros2_bag_command([config_file("base.yaml"), config], out), output="screen",
                           additional_env={"ROS_SECURITY_ENCLAVE_OVERRIDE": enclave} if enclave else None,
                           condition=LaunchConfigurationEquals("recorder", "ros2bag"))]


def generate_launch_description():
    config = LaunchConfiguration("config")
    return LaunchDescription([
        config_argument("config", "record.yaml", "params file with the eva_record section"),
        DeclareLaunchArgument("recorder", default_value="ros2bag", choices=["ros2bag", "eva"],
                              description="ros2bag: ros2 bag record -s mcap; eva: eva-record"),
        DeclareLaunchArgument("out", default_value=time.strftime("bags/episode_%Y%m%dT%H%M%SZ", time.gmtime()),
                              description="bag directory for recorder:=ros2bag (must not exist)"),
        *transport_actions(),
        OpaqueFunction(function=_ros2_bag),
        eva_node("eva-record", "eva_record", config, condition=LaunchConfigurationEquals("recorder", "eva")),
    ])
