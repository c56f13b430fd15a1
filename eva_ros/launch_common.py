"""What every launch file in launch/ shares: the DDS transport environment, the params files
(config/base.yaml, then the overlay), the SROS2 enclave of each node and the node action; and,
for the robot and simulation launches, robot_state_publisher and rviz2. The transport values are
the ones `eva_ros.runtime.configure_transport` sets for eva-bringup and the node mains, so a
launched graph and a composed one use the same DDS setup.

Launch arguments added here:
- `transport:=LARGE_DATA`, `fastdds_profile:=<share>/config/fastdds_shm.xml` (the DDS environment);
- `enclave:=/eva` (default "": none): each node runs with `--ros-args --enclave /eva/<node name>`
  (docs/hardware.md, "DDS security (SROS2)");
- `rsp:=true|false` (default true): robot_state_publisher with the URDF text as robot_description,
  publishing /tf from joint_states; a second one (`command_state_publisher`) draws the commanded
  pose (eva/controller/command) under the TF prefix `command/`;
- `urdf:=PATH` (default: the default embodiment's URDF in share/eva_ros/urdf);
- `rviz:=true|false` (default false): rviz2 with share/eva_ros/rviz/eva.rviz.
A package that is not installed (robot_state_publisher, rviz2) is one log line, not an error.

`launch` / `launch_ros` are imported inside the functions: this module imports without them.
"""

from __future__ import annotations

import os

from eva_core import yaml_io
from eva_core.embodiment import DEFAULT_EMBODIMENT
from eva_ros import names
from eva_ros.params import BASE
from eva_ros.runtime import DEFAULT_TRANSPORT, SHM_PROFILE

PACKAGE = "eva_ros"
TRANSPORTS = "LARGE_DATA, SHM, UDPv4, DEFAULT"
RVIZ_CONFIG = "eva.rviz"
RSP_PACKAGE = "robot_state_publisher"
TF_PACKAGE = "tf2_ros"                                  # static_transform_publisher
RVIZ_PACKAGE = "rviz2"
COMMAND_PREFIX = "command/"                             # TF prefix of the commanded pose
COMMAND_DESCRIPTION = "command/robot_description"       # its robot_description topic


def share() -> str:
    from ament_index_python.packages import get_package_share_directory

    return get_package_share_directory(PACKAGE)


def config_file(name: str, share_dir: str | None = None) -> str:
    return os.path.join(share_dir or share(), "config", name)


def urdf_file(share_dir: str | None = None, embodiment: str = DEFAULT_EMBODIMENT) -> str:
    """share/eva_ros/urdf/<the URDF that config/<embodiment>.yaml names>."""
    share_dir = share_dir or share()
    with open(config_file(f"{embodiment}.yaml", share_dir)) as f:
        name = yaml_io.load(f)["embodiment"]["urdf"]
    return os.path.join(share_dir, "urdf", os.path.basename(name))


def rviz_file(share_dir: str | None = None) -> str:
    return os.path.join(share_dir or share(), "rviz", RVIZ_CONFIG)


def package_installed(package: str) -> bool:
    """Whether the ament index knows `package` (robot_state_publisher and rviz2 are optional)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory(package)
    except PackageNotFoundError:
        return False
    return True


def enclave_path(root: str, node_name: str) -> str:
    """The SROS2 enclave of one node under the root given as `enclave:=` ("" -> none)."""
    root = root.strip()
    if not root:
        return ""
    if not root.startswith("/") or root.endswith("/") and root != "/":
        raise ValueError(f"enclave:={root!r}: needs an absolute enclave path without a trailing '/', e.g. /eva")
    return f"{root.rstrip('/')}/{node_name}"


def ros_arguments(context, node_name: str) -> list[str] | None:
    """`--enclave <root>/<node>` for launch_ros Node(ros_arguments=...) when `enclave` is set."""
    from launch.substitutions import LaunchConfiguration

    enclave = enclave_path(LaunchConfiguration("enclave", default="").perform(context), node_name)
    return ["--enclave", enclave] if enclave else None


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
    """The `transport`, `fastdds_profile` and `enclave` launch arguments and the
    SetEnvironmentVariable actions of `transport_environment` (transport and profile from the
    arguments)."""
    from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration

    env = transport_environment(share(), "", discovery_range)
    default_profile = env["FASTDDS_DEFAULT_PROFILES_FILE"]
    env["FASTDDS_BUILTIN_TRANSPORTS"] = LaunchConfiguration("transport")
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = LaunchConfiguration("fastdds_profile")
    return [DeclareLaunchArgument("transport", default_value=DEFAULT_TRANSPORT,
                                  description=f"FASTDDS_BUILTIN_TRANSPORTS ({TRANSPORTS})"),
            DeclareLaunchArgument("fastdds_profile", default_value=default_profile,
                                  description="FASTDDS_DEFAULT_PROFILES_FILE, e.g. a profile with an interface "
                                              "allow-list for the robot LAN (docs/hardware.md)"),
            DeclareLaunchArgument("enclave", default_value="",
                                  description="SROS2 root enclave, e.g. /eva: each node gets <root>/<node name> "
                                              "(with ROS_SECURITY_* set; see docs/hardware.md)"),
            *[SetEnvironmentVariable(k, v) for k, v in env.items()]]


def config_argument(name: str, overlay: str, description: str):
    """A launch argument naming an overlay params file (default: config/<overlay>)."""
    from launch.actions import DeclareLaunchArgument

    return DeclareLaunchArgument(name, default_value=config_file(overlay),
                                 description=f"{description} (loaded after config/{BASE})")


def eva_node(executable: str, name: str, config, condition=None):
    """A launch_ros Node of this package that reads config/base.yaml, then `config` (the same
    layering as eva-bringup: eva_ros.params.params_layers), in its enclave when `enclave` is set
    (built at launch time, when the argument's value is known)."""
    from launch.actions import OpaqueFunction
    from launch_ros.actions import Node

    def build(context):
        return [Node(package=PACKAGE, executable=executable, name=name, parameters=[config_file(BASE), config],
                     ros_arguments=ros_arguments(context, name), output="screen", emulate_tty=True)]

    return OpaqueFunction(function=build, condition=condition)


def robot_model_actions() -> list:
    """The `rsp`, `urdf` and `rviz` arguments, robot_state_publisher (rsp:=true) and rviz2
    (rviz:=true); each only where its package is installed, else one log line."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration

    return [
        DeclareLaunchArgument("rsp", default_value="true",
                              description="robot_state_publisher: robot_description and /tf from joint_states"),
        DeclareLaunchArgument("urdf", default_value=urdf_file(), description="URDF published as robot_description"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description=f"rviz2 with share/{PACKAGE}/rviz/{RVIZ_CONFIG}"),
        OpaqueFunction(function=_state_publishers, condition=IfCondition(LaunchConfiguration("rsp"))),
        OpaqueFunction(function=_rviz, condition=IfCondition(LaunchConfiguration("rviz"))),
    ]


def _missing(package: str, what: str) -> list:
    from launch.actions import LogInfo

    return [LogInfo(msg=f"{package} is not installed (apt install ros-$ROS_DISTRO-{package.replace('_', '-')}): "
                        f"{what}")]


def urdf_root_link(description: str) -> str:
    """The URDF's root link: the one link that is no joint's child."""
    import xml.etree.ElementTree as ET

    robot = ET.fromstring(description)
    children = {j.find("child").get("link") for j in robot.iter("joint")}
    roots = [link.get("name") for link in robot.iter("link") if link.get("name") not in children]
    if len(roots) != 1:
        raise ValueError(f"URDF: expected one root link, found {roots}")
    return roots[0]


def _state_publishers(context) -> list:
    """robot_state_publisher on joint_states, and command_state_publisher on the controller's
    commands (eva/controller/command) drawing the commanded pose under the TF prefix `command/`,
    tied to the robot's root link by an identity static transform."""
    if not package_installed(RSP_PACKAGE):
        return _missing(RSP_PACKAGE, "no robot_description and no /tf; the eva nodes run without them")
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    with open(LaunchConfiguration("urdf").perform(context)) as f:
        description = f.read()
    root = urdf_root_link(description)
    if package_installed(TF_PACKAGE):
        out = [Node(package=TF_PACKAGE, executable="static_transform_publisher", name="command_frame",
                    arguments=["--frame-id", root, "--child-frame-id", COMMAND_PREFIX + root],
                    ros_arguments=ros_arguments(context, "command_frame"), output="screen")]
    else:
        out = _missing(TF_PACKAGE, f"no {COMMAND_PREFIX}{root} frame: the commanded pose is not drawn")
    for name, params, remap in (
            ("robot_state_publisher", {}, []),
            ("command_state_publisher", {"frame_prefix": COMMAND_PREFIX},
             [(names.JOINT_STATES, names.CONTROLLER_COMMAND), ("robot_description", COMMAND_DESCRIPTION)])):
        out.append(Node(package=RSP_PACKAGE, executable=RSP_PACKAGE, name=name,
                        parameters=[{"robot_description": description, **params}], remappings=remap,
                        ros_arguments=ros_arguments(context, name), output="screen"))
    return out


def _rviz(context) -> list:
    if not package_installed(RVIZ_PACKAGE):
        return _missing(RVIZ_PACKAGE, "no RViz window")
    from launch_ros.actions import Node

    return [Node(package=RVIZ_PACKAGE, executable=RVIZ_PACKAGE, name="rviz2", arguments=["-d", rviz_file()],
                 ros_arguments=ros_arguments(context, "rviz2"), output="screen")]
