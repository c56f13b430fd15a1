"""What every launch file in launch/ shares: the DDS transport environment, the params files
(config/base.yaml, then the overlay) and the node action. The transport values are the ones
`eva_ros.runtime.configure_transport` sets for eva-bringup and the node mains, so a launched
graph and a composed one use the same DDS setup.

`launch` / `launch_ros` are imported inside the functions: this module imports without them.
"""

from __future__ import annotations

import os

from eva_ros.params import BASE
from eva_ros.runtime import DEFAULT_TRANSPORT, SHM_PROFILE

PACKAGE = "eva_ros"
TRANSPORTS = "LARGE_DATA, SHM, UDPv4, DEFAULT"


def share() -> str:
    from ament_index_python.packages import get_package_share_directory

    return get_package_share_directory(PACKAGE)


def config_file(name: str, share_dir: str | None = None) -> str:
    return os.path.join(share_dir or share(), "config", name)


def transport_environment(share_dir: str, transport: str = DEFAULT_TRANSPORT,
                          discovery_range: str | None = None) -> dict:
    """The environment of every launched eva node:
    - FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA: UDP discovery, TCP for samples between machines;
    - FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_shm.xml: a 16 MB shared-memory segment, so a
      640x480 image takes ~3 ms instead of ~13 ms on one host (bench/ros_latency.py);
    - ROS_AUTOMATIC_DISCOVERY_RANGE, when given (LOCALHOST for the one-machine simulation)."""
    env = {"FASTDDS_BUILTIN_TRANSPORTS": transport,
           "FASTDDS_DEFAULT_PROFILES_FILE": config_file(SHM_PROFILE, share_dir)}
    if discovery_range:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = discovery_range
    return env


def transport_actions(discovery_range: str | None = None) -> list:
    """The `transport` launch argument and the SetEnvironmentVariable actions of
    `transport_environment` (the transport from the argument)."""
    from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration

    env = transport_environment(share(), "", discovery_range)
    env["FASTDDS_BUILTIN_TRANSPORTS"] = LaunchConfiguration("transport")
    return [DeclareLaunchArgument("transport", default_value=DEFAULT_TRANSPORT,
                                  description=f"FASTDDS_BUILTIN_TRANSPORTS ({TRANSPORTS})"),
            *[SetEnvironmentVariable(k, v) for k, v in env.items()]]


def config_argument(name: str, overlay: str, description: str):
    """A launch argument naming an overlay params file (default: config/<overlay>)."""
    from launch.actions import DeclareLaunchArgument

    return DeclareLaunchArgument(name, default_value=config_file(overlay),
                                 description=f"{description} (loaded after config/{BASE})")


def eva_node(executable: str, name: str, config, condition=None):
    """A launch_ros Node of this package that reads config/base.yaml, then `config` (the same
    layering as eva-bringup: eva_ros.params.params_layers)."""
    from launch_ros.actions import Node

    return Node(package=PACKAGE, executable=executable, name=name, parameters=[config_file(BASE), config],
                output="screen", emulate_tty=True, condition=condition)
