"""Packaging: ament_python layout, data_files under share/eva_ros, every console script resolves."""

import importlib
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]


def setup_kwargs():
    """Run setup.py's setup() with a recorder instead of installing."""
    import setuptools

    captured = {}
    orig = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        src = (ROOT / "setup.py").read_text()
        exec(compile(src, "setup.py", "exec"), {"__name__": "__main__", "__file__": str(ROOT / "setup.py")})
    finally:
        setuptools.setup = orig
        os.chdir(cwd)
    return captured


def test_package_xml_is_format3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "eva_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "trajectory_msgs", "diagnostic_msgs"} <= deps


def test_data_files_install_share_tree():
    kw = setup_kwargs()
    installed = {os.path.join(dest, os.path.basename(f)) for dest, files in kw["data_files"] for f in files}
    assert "share/ament_index/resource_index/packages/eva_ros" in installed
    assert "share/eva_ros/package.xml" in installed
    # what the nodes load at run time (not a re-listing of the folders setup.py globs)
    assert "share/eva_ros/urdf/cobot_magic.urdf" in installed
    assert "share/eva_ros/launch/eva_sim.launch.py" in installed and "share/eva_ros/config/base.yaml" in installed
    assert not [f for f in installed if "__pycache__" in f]
    assert "share/eva_ros/config/cobot_magic.yaml" in installed


def test_packages_include_core_ros_and_training():
    kw = setup_kwargs()
    assert {"eva_core", "eva_ros", "training"} <= set(kw["packages"])


def test_every_console_script_resolves_to_main():
    kw = setup_kwargs()
    scripts = kw["entry_points"]["console_scripts"]
    assert all(s.split("=")[0].strip().startswith("eva-") for s in scripts)
    for spec in scripts:
        name, target = (x.strip() for x in spec.split("="))
        module, func = target.split(":")
        mod = importlib.import_module(module)
        assert callable(getattr(mod, func, None)), f"{name}: {target} has no {func}()"


@pytest.mark.parametrize("script", ["eva-check-embodiment"])
def test_cli_help(script):
    exe = Path(sys.executable).parent / script
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage" in out.stdout.lower()


def test_base_params_file_is_installed_and_layered_under_any_overlay(tmp_path):
    """config/base.yaml ships in share/eva_ros/config and comes first under a user's own file."""
    from eva_core.paths import config_path
    from eva_ros.params import params_layers

    kw = setup_kwargs()
    installed = {os.path.join(dest, os.path.basename(f)) for dest, files in kw["data_files"] for f in files}
    assert "share/eva_ros/config/base.yaml" in installed
    mine = tmp_path / "mine.yaml"
    mine.write_text("/**/controller:\n  ros__parameters:\n    auto_enable: false\n")
    assert params_layers(mine) == [config_path("base.yaml"), mine]
    assert params_layers([config_path("base.yaml"), mine]) == [config_path("base.yaml"), mine]   # not twice
    assert params_layers(mine, base=False) == [mine]


def test_node_scripts_come_from_the_node_registry_without_importing_the_package():
    """setup.py reads eva_ros/registry.py by its path: a build without numpy or rclpy still gets
    every node's console script."""
    from eva_ros.registry import NODE_KINDS

    scripts = dict(s.replace(" ", "").split("=") for s in setup_kwargs()["entry_points"]["console_scripts"])
    for kind, k in NODE_KINDS.items():
        assert scripts[k.script] == k.target.partition(":")[0] + ":main", kind
    code = ("import sys, setuptools; setuptools.setup = lambda **kw: None; "
            "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), {'__name__': '__main__', '__file__': 'setup.py'}); "
            "bad = {'numpy', 'rclpy', 'eva_ros', 'eva_core'} & set(sys.modules); assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr
