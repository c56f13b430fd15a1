"""Simulation on one machine: all four nodes on the MuJoCo twin (config/sim.yaml: the sim arm
poses the twin, the sim camera renders it). `config:=.../loopback.yaml` runs the ideal loopback
arm with a playback camera instead.

    ros2 launch eva_ros eva_sim.launch.py [config:=/path/params.yaml] [rviz:=true] [rsp:=false] [enclave:=/eva]

robot_state_publisher publishes robot_description and /tf from joint_states (rsp:=false: not
started; not installed: one log line); rviz:=true starts rviz2 with share/eva_ros/rviz/eva.rviz
(docs/ros_interface.md, "Seeing the robot in RViz"). enclave:=/eva: SROS2 (docs/hardware.md).

Discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST). Every node reads
config/base.yaml, then `config` (eva_ros.launch_common); the same files run without launch_ros:
`eva-bringup --config config/sim.yaml`.
"""

from launch import LaunchDescription
from launch.substitutions import LaunchConfiguration

from eva_ros.launch_common import config_argument, eva_node, robot_model_actions, transport_actions

NODES = [("eva-camera-node", "camera"), ("eva-controller-node", "controller"),
         ("eva-idm-action-node", "idm_action"), ("eva-planner-node", "planner")]


def generate_launch_description():
    config = LaunchConfiguration("config")
    return LaunchDescription([
        config_argument("config", "sim.yaml", "params file of all four nodes"),
        *transport_actions(discovery_range="LOCALHOST"),
        *[eva_node(exe, name, config) for exe, name in NODES],
        *robot_model_actions(),
    ])
