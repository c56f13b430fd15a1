"""The launch descriptions, evaluated without launch_ros (which has no wheel here): small stand-ins
for the launch / launch_ros classes the launch files use record what they are given, and
`evaluate` runs a description the way `ros2 launch` would (argument defaults, overrides,
conditions, OpaqueFunctions). Checked: robot_state_publisher with the URDF text as
robot_description in eva_robot / eva_sim (rsp:=false removes it; not installed: one log line),
rviz:=true adds rviz2 with share/eva_ros/rviz/eva.rviz, the eva.rviz file names topics of this
project, and `enclave:=/eva` gives every node `--enclave /eva/<node>` (none when empty)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
URDF = REPO / "urdf" / "cobot_magic.urdf"


# ---- stand-ins for launch / launch_ros --------------------------------------------------------
class Recorded:
    """An action: keeps its positional and keyword arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.condition = kwargs.get("condition")


class LaunchConfiguration:
    def __init__(self, name, default=None):
        self.name, self.default = name, default

    def perform(self, context):
        value = context.get(self.name, self.default)
        if value is None:
            raise KeyError(f"launch configuration {self.name!r} is not set")
        return value


class IfCondition:
    def __init__(self, expr):
        self.expr = expr

    def evaluate(self, context):
        value = self.expr.perform(context) if hasattr(self.expr, "perform") else self.expr
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"IfCondition: {value!r} is not a boolean")
        return value.lower() in ("true", "1")


class LaunchConfigurationEquals:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def evaluate(self, context):
        return context.get(self.name) == self.value


def fake_launch_modules() -> dict:
    mods = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.conditions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    mods["launch"].LaunchDescription = type("LaunchDescription", (Recorded,), {})
    for name in ("DeclareLaunchArgument", "SetEnvironmentVariable", "OpaqueFunction", "LogInfo", "ExecuteProcess"):
        setattr(mods["launch.actions"], name, type(name, (Recorded,), {}))
    mods["launch.conditions"].IfCondition = IfCondition
    mods["launch.conditions"].LaunchConfigurationEquals = LaunchConfigurationEquals
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (Recorded,), {})
    return mods


def evaluate(path: Path, **args) -> list[Recorded]:
    """The actions `ros2 launch <path> k:=v ...` would execute (conditions applied, OpaqueFunctions run)."""
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = dict(args)
    done = []

    def run(entity):
        kind = type(entity).__name__
        if entity.condition is not None and not entity.condition.evaluate(context):
            return
        if kind == "DeclareLaunchArgument":
            name = entity.args[0]
            context.setdefault(name, entity.kwargs.get("default_value"))
            choices = entity.kwargs.get("choices")
            assert choices is None or context[name] in choices, f"{name}:={context[name]} not in {choices}"
        elif kind == "OpaqueFunction":
            for sub in entity.kwargs["function"](context) or []:
                run(sub)
        else:
            done.append(entity)

    for entity in module.generate_launch_description().args[0]:
        run(entity)
    evaluate.context = context   # the launch configurations after the run
    return done


@pytest.fixture
def launch(monkeypatch):
    """evaluate() with the stand-ins, share/ = this checkout, and `installed` (a set the test may
    change) as the ament index's packages."""
    from eva_ros import launch_common

    for name, mod in fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(launch_common, "share", lambda: str(REPO))
    installed = {"robot_state_publisher", "rviz2", "tf2_ros"}
    monkeypatch.setattr(launch_common, "package_installed", lambda p: p in installed)
    evaluate.installed = installed
    return evaluate


def nodes(actions) -> dict:
    return {a.kwargs["name"]: a.kwargs for a in actions if type(a).__name__ == "Node"}


def logs(actions) -> list[str]:
    return [a.kwargs["msg"] for a in actions if type(a).__name__ == "LogInfo"]


ROBOT_LAUNCHES = [REPO / "launch" / "eva_robot.launch.py", REPO / "launch" / "eva_sim.launch.py"]
EVA_NODES = {"eva_robot.launch.py": {"camera", "controller"},
             "eva_sim.launch.py": {"camera", "controller", "planner", "idm_action"}}


# ---- robot_state_publisher and rviz2 ----------------------------------------------------------
@pytest.mark.parametrize("path", ROBOT_LAUNCHES, ids=lambda p: p.name)
def test_robot_state_publisher_gets_the_urdf_text(launch, path):
    from eva_ros import names
    from eva_ros.launch_common import COMMAND_DESCRIPTION, COMMAND_PREFIX

    got = nodes(launch(path))
    assert EVA_NODES[path.name] <= set(got)
    rsp = got["robot_state_publisher"]
    assert (rsp["package"], rsp["executable"]) == ("robot_state_publisher", "robot_state_publisher")
    assert rsp["parameters"] == [{"robot_description": URDF.read_text()}]
    assert not rsp.get("remappings")
    # the commanded pose: a second robot_state_publisher on the controller's commands, prefixed,
    # tied to the root link by an identity static transform
    cmd = got["command_state_publisher"]
    assert cmd["parameters"] == [{"robot_description": URDF.read_text(), "frame_prefix": COMMAND_PREFIX}]
    assert dict(cmd["remappings"]) == {names.JOINT_STATES: names.CONTROLLER_COMMAND,
                                       "robot_description": COMMAND_DESCRIPTION}
    static = got["command_frame"]
    assert static["package"] == "tf2_ros" and static["executable"] == "static_transform_publisher"
    assert static["arguments"] == ["--frame-id", "base_link", "--child-frame-id", COMMAND_PREFIX + "base_link"]
    assert "rviz2" not in got    # rviz defaults to false


@pytest.mark.parametrize("path", ROBOT_LAUNCHES, ids=lambda p: p.name)
def test_rsp_false_removes_the_state_publishers(launch, path):
    got = nodes(launch(path, rsp="false"))
    assert EVA_NODES[path.name] <= set(got)
    assert not {"robot_state_publisher", "command_state_publisher", "command_frame"} & set(got)


@pytest.mark.parametrize("path", ROBOT_LAUNCHES, ids=lambda p: p.name)
def test_missing_robot_state_publisher_is_one_log_line(launch, path):
    launch.installed.discard("robot_state_publisher")
    actions = launch(path, rviz="true")
    got = nodes(actions)
    assert EVA_NODES[path.name] <= set(got) and "rviz2" in got
    assert "robot_state_publisher" not in got and "command_state_publisher" not in got
    (line,) = logs(actions)
    assert "robot_state_publisher is not installed" in line and "\n" not in line
    launch.installed.discard("rviz2")
    actions = launch(path, rviz="true")
    assert "rviz2" not in nodes(actions)
    assert any("rviz2 is not installed" in m for m in logs(actions))


@pytest.mark.parametrize("path", ROBOT_LAUNCHES, ids=lambda p: p.name)
def test_rviz_true_starts_rviz2_with_the_config(launch, path):
    rviz = nodes(launch(path, rviz="true"))["rviz2"]
    assert (rviz["package"], rviz["executable"]) == ("rviz2", "rviz2")
    assert rviz["arguments"] == ["-d", str(REPO / "rviz" / "eva.rviz")]
    assert Path(rviz["arguments"][1]).is_file()


def test_urdf_argument_names_the_default_embodiment_urdf(launch):
    from eva_core.embodiment import load_embodiment
    from eva_ros.launch_common import urdf_file

    assert Path(urdf_file(str(REPO))) == URDF == load_embodiment().urdf_file.resolve()


def test_rviz_config_is_installed_by_setup_py():
    import os

    from test_packaging import setup_kwargs   # runs setup.py with a recorder

    installed = {os.path.join(dest, os.path.basename(f)) for dest, files in setup_kwargs()["data_files"] for f in files}
    assert "share/eva_ros/rviz/eva.rviz" in installed


# ---- eva.rviz ----------------------------------------------------------------------------------
def rviz_displays() -> list[dict]:
    return yaml.safe_load((REPO / "rviz" / "eva.rviz").read_text())["Visualization Manager"]["Displays"]


def test_rviz_config_shows_robot_tf_cameras_and_commanded_pose():
    from eva_core.embodiment import load_embodiment
    from eva_ros import launch_common

    emb = load_embodiment()
    doc = yaml.safe_load((REPO / "rviz" / "eva.rviz").read_text())
    root = launch_common.urdf_root_link(URDF.read_text())
    assert doc["Visualization Manager"]["Global Options"]["Fixed Frame"] == root
    displays = rviz_displays()
    by_class = {}
    for d in displays:
        by_class.setdefault(d["Class"], []).append(d)
    assert "rviz_default_plugins/TF" in by_class
    models = {d["Description Topic"]["Value"]: d for d in by_class["rviz_default_plugins/RobotModel"]}
    assert set(models) == {"/robot_description", "/" + launch_common.COMMAND_DESCRIPTION}
    assert models["/robot_description"]["TF Prefix"] == ""
    # rviz joins prefix and link with "/"; robot_state_publisher's frame_prefix carries it
    assert models["/" + launch_common.COMMAND_DESCRIPTION]["TF Prefix"] + "/" == launch_common.COMMAND_PREFIX
    for d in models.values():   # robot_state_publisher latches robot_description
        assert d["Description Topic"]["Durability Policy"] == "Transient Local"
    images = {d["Topic"]["Value"] for d in by_class["rviz_default_plugins/Image"]}
    cameras = {"/" + c["topic"].lstrip("/") for c in emb.cameras.values()}
    assert images == cameras and cameras


def test_rviz_topics_exist_in_the_project():
    """Every topic eva.rviz subscribes is one the project publishes: a camera of the embodiment's
    table, robot_description, or the commanded pose's description."""
    from eva_core.embodiment import load_embodiment
    from eva_ros import launch_common, names
    from eva_ros.nodes.camera_node import camera_topic

    emb = load_embodiment()
    known = {"/robot_description", "/" + launch_common.COMMAND_DESCRIPTION}
    known |= {"/" + camera_topic(emb, c, "") for c in emb.cameras}
    known |= {"/" + names.camera_topic(c) for c in emb.cameras}
    topics = [d[k]["Value"] for d in rviz_displays() for k in ("Topic", "Description Topic") if k in d]
    assert topics and set(topics) <= known, set(topics) - known


def test_fixed_frame_and_root_link_come_from_the_urdf():
    from eva_ros.launch_common import urdf_root_link

    assert urdf_root_link(URDF.read_text()) == "base_link"
    with pytest.raises(ValueError, match="one root link"):
        urdf_root_link('<robot name="r"><link name="a"/><link name="b"/></robot>')


# ---- SROS2 enclaves ----------------------------------------------------------------------------
ALL_LAUNCHES = sorted((REPO / "launch").glob("*.launch.py"))


@pytest.mark.parametrize("path", ALL_LAUNCHES, ids=lambda p: p.name)
def test_enclave_per_node_when_given_none_when_empty(launch, path):
    args = {"rviz": "true", "recorder": "eva"} if path.name != "eva_planner.launch.py" else {}
    plain = nodes(launch(path, **args))
    assert plain
    for name, kw in plain.items():
        assert kw.get("ros_arguments") is None, f"{path.name}: {name} has {kw['ros_arguments']} without enclave"
    secured = nodes(launch(path, enclave="/eva", **args))
    assert set(secured) == set(plain)
    for name, kw in secured.items():
        assert kw["ros_arguments"] == ["--enclave", f"/eva/{name}"], f"{path.name}: {name}"


def test_ros2_bag_gets_its_enclave_through_the_override(launch):
    path = REPO / "launch" / "record.launch.py"
    (bag,) = [a for a in launch(path, out="bags/x") if type(a).__name__ == "ExecuteProcess"]
    assert bag.kwargs["additional_env"] is None
    (bag,) = [a for a in launch(path, out="bags/x", enclave="/eva") if type(a).__name__ == "ExecuteProcess"]
    assert bag.kwargs["additional_env"] == {"ROS_SECURITY_ENCLAVE_OVERRIDE": "/eva/ros2bag"}


@pytest.mark.parametrize("bad", ["eva", "/eva/", "eva/camera"])
def test_a_relative_enclave_is_refused_in_one_line(launch, bad):
    with pytest.raises(ValueError, match=r"enclave:=.*absolute enclave path") as err:
        launch(REPO / "launch" / "eva_sim.launch.py", enclave=bad)
    assert "\n" not in str(err.value)


def test_enclave_names_in_the_docs_match_the_launch_files(launch):
    """docs/hardware.md creates one enclave per node the launch files start."""
    doc = (REPO / "docs" / "hardware.md").read_text()
    started = set()
    for path in ALL_LAUNCHES:
        started |= set(nodes(launch(path, enclave="/eva", rviz="true", recorder="eva")))
    started.add("ros2bag")
    for name in started:
        assert f"/eva/{name}" in doc, f"docs/hardware.md: no enclave /eva/{name}"



@pytest.mark.parametrize("path", ALL_LAUNCHES, ids=lambda p: p.name)
def test_fastdds_profile_defaults_to_the_shm_profile_and_can_be_replaced(launch, path):
    def profile(**args):
        (value,) = [a.args[1] for a in launch(path, **args)
                    if type(a).__name__ == "SetEnvironmentVariable" and a.args[0] == "FASTDDS_DEFAULT_PROFILES_FILE"]
        return value.perform(launch.context)

    assert profile() == str(REPO / "config" / "fastdds_shm.xml")
    assert profile(fastdds_profile="/etc/eva/fastdds_lan.xml") == "/etc/eva/fastdds_lan.xml"
