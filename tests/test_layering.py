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


def _calls(func: ast.AST, attr: str) -> list[ast.Call]:
    return [n for n in ast.walk(func) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and n.func.attr == attr]


def test_only_the_controller_sends_arm_commands_and_only_after_its_safety_filter():
    """No path may bypass the safety filter: the one caller of send_positions outside the
    backends is the controller's command tick, which filters the same value first."""
    callers = []
    for p in list((ROOT / "eva_ros").rglob("*.py")) + list((ROOT / "eva_core").rglob("*.py")):
        if "backends" in p.parts:
            continue
        tree = ast.parse(p.read_text(), filename=str(p))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and _calls(fn, "send_positions"):
                callers.append((p.relative_to(ROOT).as_posix(), fn))
    assert [(path, fn.name) for path, fn in callers] == [("eva_ros/nodes/controller_node.py", "_command")]
    fn = callers[0][1]
    (send,) = _calls(fn, "send_positions")
    sent = send.args[0].id  # the variable that is sent ...
    filtered = [a for a in ast.walk(fn) if isinstance(a, ast.Assign) and _calls(a.value, "step")
                and isinstance(a.value.func.value, ast.Attribute) and a.value.func.value.attr == "final"]
    assert filtered, "the controller must run its final SafetyFilter (self.final.step) before sending"
    targets = {e.id for a in filtered for t in a.targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])
               if isinstance(e, ast.Name)}
    assert sent in targets  # ... is the output of the final safety filter
    assert all(a.lineno < send.lineno for a in filtered)
