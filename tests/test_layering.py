"""Layering rules from ARCHITECTURE.md, checked on the source."""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

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


def _calls(tree: ast.AST, attr: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and n.func.attr == attr]


def _self_attrs_built_by(tree: ast.AST, cls_name: str) -> set[str]:
    """Attributes assigned `self.<a> = cls_name(...)` anywhere in `tree`."""
    return {t.attr for a in ast.walk(tree) if isinstance(a, ast.Assign) and isinstance(a.value, ast.Call)
            and isinstance(a.value.func, ast.Name) and a.value.func.id == cls_name
            for t in a.targets if isinstance(t, ast.Attribute)}


def _bound_to(fn: ast.AST, name: str) -> list[ast.AST]:
    """The values assigned to local `name` in `fn` (plain or tuple-unpacking assignments)."""
    out = []
    for a in ast.walk(fn):
        if isinstance(a, ast.Assign):
            for t in a.targets:
                elts = t.elts if isinstance(t, ast.Tuple) else [t]
                if any(isinstance(e, ast.Name) and e.id == name for e in elts):
                    out.append(a.value)
    return out


def _is_call_on_self_attr(node: ast.AST, attrs: set[str], method: str) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method
            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr in attrs)


def _functions(tree):
    return [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _send_callers():
    out = []
    for p in (p for d in ("eva_ros", "eva_core", "training", "tools", "bench") for p in (ROOT / d).rglob("*.py")):
        if "backends" in p.parts:
            continue
        tree = ast.parse(p.read_text(), filename=str(p))
        out += [(p.relative_to(ROOT).as_posix(), tree, c) for c in _calls(tree, "send_positions")]
    return out


def _loops_in(tree, fn) -> set[str]:
    """Names a ControlLoop is bound to: `self.<a> = ControlLoop(...)` in the module, or a local
    `<a> = ControlLoop(...)` in `fn`."""
    local = {t.id for a in ast.walk(fn) if isinstance(a, ast.Assign) and isinstance(a.value, ast.Call)
             and isinstance(a.value.func, ast.Name) and a.value.func.id == "ControlLoop"
             for t in a.targets if isinstance(t, ast.Name)}
    return _self_attrs_built_by(tree, "ControlLoop") | local


def _is_tick_of(node, loops: set[str]) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "tick"):
        return False
    owner = node.func.value
    return (isinstance(owner, ast.Attribute) and owner.attr in loops) or (isinstance(owner, ast.Name) and owner.id in loops)


def test_arm_commands_are_only_the_control_loops_command_decisions():
    """No path may bypass the final safety filter. Outside the backends every send_positions
    call sends `.positions` of a decision that a ControlLoop's tick() returned, after checking
    that the decision is a COMMAND; the controller adapter is one such caller. Names are read
    from the code, not pinned."""
    callers = _send_callers()
    assert "eva_ros/nodes/controller_node.py" in [path for path, _, _ in callers]
    for path, tree, send in callers:
        (fn,) = [f for f in _functions(tree) if send in list(ast.walk(f))]
        loops = _loops_in(tree, fn)
        assert loops, f"{path}: send_positions without an eva_core.control.ControlLoop"
        (arg,) = send.args
        assert isinstance(arg, ast.Attribute) and arg.attr == "positions" and isinstance(arg.value, ast.Name), \
            f"{path}:{send.lineno}: send the positions of a ControlLoop decision"
        decision = arg.value.id
        sources = _bound_to(fn, decision)
        assert sources and all(_is_tick_of(v, loops) for v in sources), \
            f"{path}:{send.lineno}: {decision} must come from the control loop's tick()"
        checks = [c for c in ast.walk(fn) if isinstance(c, ast.Compare) and isinstance(c.left, ast.Attribute)
                  and c.left.attr == "kind" and isinstance(c.left.value, ast.Name) and c.left.value.id == decision
                  and any(isinstance(x, ast.Attribute) and x.attr == "COMMAND" for x in c.comparators)]
        assert checks and all(c.lineno <= send.lineno for c in checks), f"{path}: send only a COMMAND decision"


def test_the_control_loop_commands_only_the_final_filters_output():
    """In eva_core/control.py every COMMAND decision carries the output of the final
    SafetyFilter's step(), and a rejected report returns before it."""
    tree = ast.parse((ROOT / "eva_core" / "control.py").read_text())
    filters = _self_attrs_built_by(tree, "SafetyFilter")
    assert len(filters) == 1
    commands = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                and c.func.id == "Decision" and c.args and isinstance(c.args[0], ast.Attribute)
                and c.args[0].attr == "COMMAND"]
    assert commands
    for call in commands:
        (fn,) = [f for f in _functions(tree) if call in list(ast.walk(f))]
        positions = call.args[1]
        assert isinstance(positions, ast.Name)
        sources = _bound_to(fn, positions.id)
        assert sources and all(_is_call_on_self_attr(v, filters, "step") for v in sources)
        rejected = [n for n in ast.walk(fn) if isinstance(n, ast.Attribute) and n.attr == "rejected"]
        assert rejected and all(n.lineno < call.lineno for n in rejected)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_CLASS = re.compile(r"^eva_core(\.\w+)+:\w+$")


def _import_targets(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports, at module level or inside a function, or names
    as a registry's "module:Class" (`from pkg import name` counts as pkg.name when that is a
    module, else as pkg)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            bases, names = [a.name for a in node.names], [None]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_CLASS.match(node.value):
            bases, names = [node.value.partition(":")[0]], [None]   # a registry's lazy "module:Class"
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            bases, names = [base], [a.name for a in node.names]
        else:
            continue
        for base in bases:
            for n in names:
                target = f"{base}.{n}" if n and f"{base}.{n}" in modules else base
                while target and target not in modules:   # `import a.b.c` of a package: its nearest module
                    target = target.rpartition(".")[0]
                if target:
                    out.add(target)
    out.discard(name)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def _eva_core_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (ROOT / "eva_core").rglob("*.py")}
    return {m: _import_targets(p, set(files)) for m, p in files.items()}


def test_no_import_cycle_among_eva_core_modules():
    """Every import counts, lazy ones inside functions too: a lazy import hides a cycle from
    Python, not from the reader."""
    graph = _eva_core_graph()
    assert "eva_core.sim.tasks" in graph["eva_core.sim.registry"]   # a "module:Class" string counts
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_real_piper_backend_imports_nothing_from_the_sim():
    """The protocol and the arm layout live in eva_core.piper, shared with the emulator."""
    path = ROOT / "eva_ros" / "backends" / "piper.py"
    core = {_module_name(p) for p in (ROOT / "eva_core").rglob("*.py")}
    targets = _import_targets(path, core)
    assert "eva_core.piper.protocol" in targets and "eva_core.piper.layout" in targets
    assert not [t for t in targets if t == "eva_core.sim" or t.startswith("eva_core.sim.")], targets
