"""Layering rules from ARCHITECTURE.md, checked on the source."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return mods


def test_eva_core_never_imports_ros():
    ros = {"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "trajectory_msgs", "diagnostic_msgs",
           "builtin_interfaces", "launch", "launch_ros", "eva_ros"}
    bad = {str(p.relative_to(ROOT)): sorted(imported_modules(p) & ros) for p in (ROOT / "eva_core").rglob("*.py")}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"eva_core must not import ROS: {bad}"
    # and not even by a string mention (the acceptance check is a plain grep)
    assert not [p for p in (ROOT / "eva_core").rglob("*.py") if "rclpy" in p.read_text()]


def test_training_does_not_import_eva_ros():
    for p in (ROOT / "training").rglob("*.py"):
        assert "eva_ros" not in imported_modules(p), p
