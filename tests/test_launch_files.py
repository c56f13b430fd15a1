"""Launch files, checked statically (ast): every executable they name is a console script of
this package with a main(), every params file they name exists under config/ and (after
config/base.yaml) has a section for every node name they start, and they take the transport
environment and the node action from the one helper, eva_ros/launch_common.py. They run for
real only where launch_ros exists."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


def console_scripts() -> dict:
    """name -> "module:function" from setup.py (parsed, not executed), and the nodes' scripts from the
    node registry that setup.py reads (eva_ros/registry.py)."""
    from eva_ros.registry import console_scripts as node_scripts
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):
            for k, v in zip(node.keys, node.values):
                if isinstance(k.value, str) and k.value.startswith("eva-") and isinstance(v, ast.Constant):
                    scripts[k.value] = v.value
    return {**scripts, **node_scripts()}


def launch_nodes(path: Path):
    """(executable, name) of every Node(...) call, including tuples in a NODES list."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            kw = {k.arg: k.value for k in node.keywords}
            fn = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if fn == "Node" and isinstance(kw.get("executable"), ast.Constant):
                found.append((kw["executable"].value, kw["name"].value))
            elif fn in ("node", "eva_node") and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2]):
                found.append((node.args[0].value, node.args[1].value))
        if isinstance(node, ast.Tuple) and len(node.elts) == 2 and all(isinstance(e, ast.Constant) for e in node.elts):
            exe, name = (e.value for e in node.elts)
            if isinstance(exe, str) and exe.startswith("eva-"):
                found.append((exe, name))
    return sorted(set(found))


def config_files(path: Path, suffix: str) -> list[str]:
    tree = ast.parse(path.read_text())
    return sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and n.value.endswith(suffix)})


def yaml_files(path: Path) -> list[str]:
    return config_files(path, ".yaml")


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_executables_are_console_scripts_with_main(path):
    scripts = console_scripts()
    nodes = launch_nodes(path)
    assert nodes, f"{path.name}: no Node(...) found"
    for exe, _name in nodes:
        assert exe in scripts, f"{path.name}: executable {exe!r} is not a console script in setup.py"
        module, _, func = scripts[exe].partition(":")
        assert importlib.util.find_spec(module) is not None, f"{exe} -> {module} not importable"
        assert callable(getattr(importlib.import_module(module), func)), f"{exe}: {module}.{func} missing"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_params_files_exist_and_cover_the_nodes(path):
    files = yaml_files(path)
    assert files, f"{path.name}: names no params file"
    sections = {}
    for name in ["base.yaml", *files]:   # eva_node loads config/base.yaml first
        f = REPO / "config" / name
        assert f.exists(), f"{path.name}: config/{name} does not exist"
        data = yaml.safe_load(f.read_text())
        for section, body in data.items():
            assert "ros__parameters" in body, f"config/{name}: section {section!r} lacks ros__parameters"
            sections[section.rsplit("/", 1)[-1]] = body["ros__parameters"]   # "/**/camera" -> camera
    for exe, name in launch_nodes(path):
        assert name in sections, f"{path.name}: node {name!r} has no section in {files}"


def called_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {getattr(n.func, "id", getattr(n.func, "attr", "")) for n in ast.walk(tree) if isinstance(n, ast.Call)}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_uses_the_one_transport_and_node_helper(path):
    src = path.read_text()
    assert "from eva_ros.launch_common import" in src
    calls = called_names(path)
    assert "transport_actions" in calls and "eva_node" in calls
    # no copy of the environment block or of the node action left in the file
    assert "FASTDDS" not in src and "SetEnvironmentVariable" not in calls and "Node" not in calls


def test_transport_environment_matches_the_runtime():
    """The launched nodes get the DDS environment eva-bringup and the node mains set."""
    import os

    from eva_ros import runtime
    from eva_ros.launch_common import transport_environment

    env = transport_environment(str(REPO))
    assert env == {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
                   "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_shm.xml")}
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).exists()
    assert transport_environment(str(REPO), discovery_range="LOCALHOST")["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    saved = {k: os.environ.pop(k, None) for k in env}
    try:
        got = runtime.configure_transport()
        assert got["FASTDDS_BUILTIN_TRANSPORTS"] == env["FASTDDS_BUILTIN_TRANSPORTS"]
        assert Path(got["FASTDDS_DEFAULT_PROFILES_FILE"]).name == Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).name
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def test_launch_nodes_load_base_then_the_overlay():
    """eva_node builds the one Node action of the eva nodes (robot_state_publisher and rviz2 are
    other packages' nodes, in their own helpers)."""
    tree = ast.parse((REPO / "eva_ros" / "launch_common.py").read_text())
    (eva_node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "eva_node"]
    node_calls = [n for n in ast.walk(eva_node) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    assert len(node_calls) == 1
    params = {k.arg: k.value for k in node_calls[0].keywords}["parameters"]
    assert ast.unparse(params) == "[config_file(BASE), config]"


OVERLAYS = sorted(f for f in (REPO / "config").glob("*.yaml") if f.name not in ("cobot_magic.yaml", "base.yaml"))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_params_file_validates_with_its_backends(overlay):
    """base.yaml + each overlay: every section typed and in range, backends registered, and the
    backend options valid for the backend's Options (where its module imports here)."""
    from eva_ros.backends import ARM_BACKENDS, CAMERA_SOURCES
    from eva_ros.params import check_bringup, params_layers

    files = params_layers(overlay)
    assert [f.name for f in files] == ["base.yaml", overlay.name]
    _bringup, nodes = check_bringup(files)
    for name, registry, kind_key, options_key in (("camera", CAMERA_SOURCES, "source", "source_options"),
                                                   ("controller", ARM_BACKENDS, "arm_backend", "arm")):
        if name not in nodes:
            continue
        cfg = nodes[name]
        kind = getattr(cfg, kind_key)
        assert kind in registry, f"{overlay.name}: {name}.{kind_key} {kind!r} is not registered"
        module, _, cls = registry[kind].partition(":")
        try:
            options = getattr(importlib.import_module(module), cls).Options
        except ImportError:   # an SDK that is not installed here (pyrealsense2)
            continue
        options.from_dict(getattr(cfg, options_key), source=overlay.name, section=f"{name}.{options_key}")


def test_overlays_only_hold_what_differs_from_base():
    """An overlay key that repeats base.yaml's value is noise (and drifts): none allowed."""
    from eva_ros.params import bare_name, load_params_yaml, unflatten

    base = {bare_name(k): v for k, v in load_params_yaml(REPO / "config" / "base.yaml").items()}

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    for overlay in OVERLAYS:
        for section, params in load_params_yaml(overlay).items():
            base_leaves = dict(leaves(unflatten(base.get(bare_name(section), {}))))
            same = [k for k, v in leaves(unflatten(params)) if k in base_leaves and base_leaves[k] == v]
            assert not same, f"{overlay.name}: {section}: {same} repeat config/base.yaml"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_builds(path):
    """Real launch_ros only: the file loads and yields a LaunchDescription."""
    pytest.importorskip("launch_ros")
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)


@pytest.mark.parametrize("exe", ["eva-camera-node", "eva-planner-node", "eva-idm-action-node", "eva-controller-node"])
def test_node_mains_have_help(exe):
    import subprocess
    import sys

    out = subprocess.run([str(Path(sys.executable).parent / exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and exe in out.stdout and "Parameters" in out.stdout


def test_sim_launch_runs_for_real(monkeypatch):
    """Real launch_ros only (a colcon-installed eva_ros): eva_sim.launch.py starts the four nodes,
    none exits during 15 s, and the launch shuts down cleanly."""
    pytest.importorskip("launch_ros")

    from launch import LaunchDescription, LaunchService
    from launch.actions import (IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler, Shutdown,
                                TimerAction)
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from eva_ros.testing import unique_domain_id

    monkeypatch.setenv("ROS_DOMAIN_ID", str(unique_domain_id()))   # the launched nodes' domain
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    state = {"stopping": False, "early_exits": []}

    def on_exit(event, context):
        if not state["stopping"]:
            state["early_exits"].append((event.action.name, event.returncode))

    def stop(context):
        state["stopping"] = True
        return [Shutdown(reason="test done")]

    ld = LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(REPO / "launch" / "eva_sim.launch.py"))),
        RegisterEventHandler(OnProcessExit(on_exit=on_exit)),
        TimerAction(period=15.0, actions=[OpaqueFunction(function=stop)]),
    ])
    service = LaunchService()
    service.include_launch_description(ld)
    assert service.run() == 0
    assert state["early_exits"] == [], f"nodes exited before the shutdown: {state['early_exits']}"
