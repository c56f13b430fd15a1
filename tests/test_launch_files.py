"""Launch files, checked statically (ast): every executable they name is a console script of
this package with a main(), every params file they name exists under config/ and has a
section for every node name they start. They run for real only where launch_ros exists."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


def console_scripts() -> dict:
    """name -> "module:function" from setup.py (parsed, not executed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):
            for k, v in zip(node.keys, node.values):
                if isinstance(k.value, str) and k.value.startswith("eva-") and isinstance(v, ast.Constant):
                    scripts[k.value] = v.value
    return scripts


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
            elif fn == "node" and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2]):
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


def test_the_three_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} == {"eva_robot.launch.py", "eva_planner.launch.py", "eva_sim.launch.py"}


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
    for name in files:
        f = REPO / "config" / name
        assert f.exists(), f"{path.name}: config/{name} does not exist"
        data = yaml.safe_load(f.read_text())
        for section, body in data.items():
            assert "ros__parameters" in body, f"config/{name}: section {section!r} lacks ros__parameters"
            sections[section] = body["ros__parameters"]
    for exe, name in launch_nodes(path):
        assert name in sections, f"{path.name}: node {name!r} has no section in {files}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_sets_fastdds_transport(path):
    src = path.read_text()
    assert "FASTDDS_BUILTIN_TRANSPORTS" in src and "LARGE_DATA" in src
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in src
    profiles = config_files(path, ".xml")
    assert profiles and all((REPO / "config" / f).exists() for f in profiles)


def test_config_backends_are_registered():
    from eva_ros.backends import ARM_BACKENDS, CAMERA_SOURCES

    for f in (REPO / "config").glob("*.yaml"):
        data = yaml.safe_load(f.read_text())
        if not isinstance(data, dict) or "eva_bringup" not in data:
            continue
        cam = (data.get("camera") or {}).get("ros__parameters", {})
        ctl = (data.get("controller") or {}).get("ros__parameters", {})
        if cam:
            assert cam["source"] in CAMERA_SOURCES, f"{f.name}: camera source {cam['source']!r}"
        if ctl:
            assert ctl["arm_backend"] in ARM_BACKENDS, f"{f.name}: arm backend {ctl['arm_backend']!r}"


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


def test_sim_launch_runs_for_real():
    """Real launch_ros only (a colcon-installed eva_ros): eva_sim.launch.py starts the four nodes,
    none exits during 15 s, and the launch shuts down cleanly."""
    pytest.importorskip("launch_ros")
    import os

    from launch import LaunchDescription, LaunchService
    from launch.actions import (IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler, Shutdown,
                                TimerAction)
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    os.environ.update(ROS_DOMAIN_ID=str(1 + os.getpid() % 99), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
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
