"""Node parameters through the typed config (eva_core.config, eva_ros/node_config.py).

`load_node_config(node, Cls)` reads every parameter override the node was given (params files,
`/**` wildcards, `-p name:=value`, `parameter_overrides=`), unflattens the dotted names into nested
maps and validates them with `Cls.from_dict`: an unknown key, a wrong type or an out-of-range
value is a one-line `ConfigError` naming the params file, the section (the node name) and the key.
Then it declares each field of `Cls` as a ROS parameter, as ros2_controllers does
(`declare_config`): nested sections dotted (`safety.max_velocity`), a `ParameterDescriptor` with
the type, the field's doc and unit, its bounds as a `FloatingPointRange` / `IntegerRange`, and
`read_only` unless the field is `param(..., dynamic=True)` (every node reads its config once, at
start-up, so `ros2 param set` is refused with a reason). A dict field holding a backend's options
(`source_options`, `arm`) declares the keys it was given. Nodes pass `NODE_KWARGS` to `Node`.

Params files are layered, as ROS does with several `--params-file`: a later file overrides an
earlier one key by key (config/base.yaml, then an overlay such as config/sim.yaml).
`load_params_files` / `check_params_files` do the same without ROS (eva-bringup checks its
files before rclpy starts; tests use them directly).
"""

from __future__ import annotations

import array
import dataclasses
import difflib
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from eva_core import yaml_io

from eva_core.config import ConfigError, Section, constraint_text

# load_node_config declares the parameters, typed; nothing is declared from the overrides by itself
NODE_KWARGS = dict(automatically_declare_parameters_from_overrides=False)
WILDCARD = "/**"
# parameters rclpy declares on every node: not part of any eva section
ROS_RESERVED = ("use_sim_time", "start_type_description_service", "qos_overrides")
_FILES_BY_CONTEXT: dict[int, list[str]] = {}


# -- params files, without ROS ---------------------------------------------------------------
def load_params_yaml(path: str | Path) -> dict:
    """One ROS params file as {section: {params}}; a malformed file is a one-line ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), "", "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml_io.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(str(path), "", "", f"invalid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        raise ConfigError(str(path), "", "", "empty params file; expected sections like 'controller: {ros__parameters: {...}}'")
    if not isinstance(data, Mapping):
        raise ConfigError(str(path), "", "", f"expected a mapping of node sections, got a {type(data).__name__}")
    out = {}
    for section, body in data.items():
        if not isinstance(body, Mapping) or set(body) != {"ros__parameters"}:
            raise ConfigError(str(path), str(section), "", "expected exactly one key 'ros__parameters'")
        params = body["ros__parameters"]
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ConfigError(str(path), str(section), "ros__parameters",
                              f"expected a mapping, got a {type(params).__name__}")
        out[str(section)] = dict(params)
    return out


def merge(dst: dict, src: Mapping) -> dict:
    """Deep-merge `src` into `dst` (nested maps merge key by key; anything else replaces)."""
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = unflatten(dict(v)) if isinstance(v, Mapping) else v
    return dst


def _section_names(node_name: str, namespace: str = "/") -> list[str]:
    """The params-file section names that address node `node_name` (wildcard first)."""
    fq = namespace.rstrip("/") + "/" + node_name
    return [WILDCARD, f"{WILDCARD}/{node_name}", node_name, fq, fq.lstrip("/")]


def node_params(layers: list[tuple[str, dict]], node_name: str, namespace: str = "/") -> dict:
    """The merged parameters of one node from (path, sections) layers, in order."""
    out: dict = {}
    for _path, sections in layers:
        for name in dict.fromkeys(_section_names(node_name, namespace)):
            if name in sections:
                merge(out, unflatten(sections[name]))
    return out


def load_params_files(paths) -> list[tuple[str, dict]]:
    """[(path, sections)] of the given params files, each checked by `load_params_yaml`."""
    return [(str(p), load_params_yaml(p)) for p in paths]


def source_of(paths) -> str:
    return " + ".join(str(p) for p in paths) or "parameters"


_MISSING = object()


def _lookup(tree, dotted_key: str):
    for part in dotted_key.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def locate(layers: list[tuple[str, dict]], node_name: str, dotted_key: str, value=_MISSING) -> str | None:
    """The last params file that sets `dotted_key` for `node_name` (to `value`, if given), for
    error messages."""
    for path, sections in reversed(layers):
        for name in _section_names(node_name):
            found = _lookup(unflatten(sections.get(name, {})), dotted_key)
            if found is not _MISSING:
                return path if value is _MISSING or found == value else None
    return None


def _attribute(exc: ConfigError, layers, node_name: str, params: Mapping) -> ConfigError:
    """Name the file that set the offending key (section "controller.safety" + key -> "safety.x");
    a value no file holds came from elsewhere (`-p name:=value`)."""
    inner = exc.section.split(".", 1)[1] if "." in exc.section else ""
    dotted = ".".join(p for p in (inner, exc.key) if p)
    if not dotted or not layers:
        return exc
    value = _lookup(params, dotted)
    where = locate(layers, node_name, dotted, value)
    if where:
        return exc.with_source(where)
    return exc.with_source("parameters (-p)") if value is not _MISSING else exc


def validate_section(cls: type[Section], params: Mapping, *, layers=(), node_name: str, source: str | None = None):
    """`cls.from_dict(params)` with the error attributed to the file that set the bad key."""
    src = source if source is not None else source_of([p for p, _ in layers])
    try:
        return cls.from_dict(params, source=src, section=node_name)
    except ConfigError as exc:
        raise _attribute(exc, list(layers), node_name, params) from None


def check_params_files(paths, nodes: Mapping[str, type[Section]] | None = None) -> dict[str, Section]:
    """Validate params files without ROS: each node's merged section with its class.

    `nodes` maps node name -> config class (default: every known section present in the
    files). A section that names no node and is close to a known name is reported as a typo.
    Returns node name -> validated config.
    """
    from eva_ros.node_config import SECTIONS, BringupConfig

    layers = load_params_files(paths)
    present = {bare_name(s) for _, sections in layers for s in sections}
    if nodes is None:
        nodes = {name: cls for name, cls in SECTIONS.items() if name in present}
    known = set(nodes) | set(SECTIONS) | {WILDCARD}
    for path, sections in layers:
        for s in sections:
            bare = bare_name(s)
            if s not in known and bare not in known:
                near = difflib.get_close_matches(bare, sorted(set(nodes) | set(SECTIONS)), n=1, cutoff=0.75)
                if near:
                    raise ConfigError(path, s, "", f"no node has this name; did you mean {near[0]!r}?")
    out = {}
    for name, cls in nodes.items():
        params = node_params(layers, name)
        if issubclass(cls, BringupConfig):  # not a node: wildcards do not apply
            params = {}
            for _, sections in layers:
                merge(params, unflatten(sections.get(name, {})))
        out[name] = validate_section(cls, params, layers=layers, node_name=name)
    return out


BASE = "base.yaml"


def params_layers(configs, base: bool = True) -> list[Path]:
    """The params files to load, in order: config/base.yaml (unless `base` is False or it is
    given), then each of `configs` (a path, or a name under config/). The one layering rule of
    eva-bringup, the launch files (parameters=[base, config]) and eva_ros/testing."""
    from eva_core.paths import config_path

    files = [config_path(str(c)) for c in ([configs] if isinstance(configs, (str, Path)) else configs)]
    if base and not any(f.name == BASE for f in files):
        files.insert(0, config_path(BASE))
    return files


def bare_name(section: str) -> str:
    """"/**/camera", "/robot_a/camera", "camera" -> "camera"; "/**" stays."""
    return section if section == WILDCARD else section.rsplit("/", 1)[-1]


def merged_sections(paths, wildcard: bool = False) -> dict:
    """The sections of several params files merged into one params-file mapping (later files
    win key by key): {section: {"ros__parameters": {...}}}, node sections by their bare name
    ("camera": root namespace only), or as "/**/camera" (any namespace) with `wildcard`."""
    out: dict = {}
    for _path, sections in load_params_files(paths):
        for name, params in sections.items():
            merge(out.setdefault(bare_name(name), {}), unflatten(params))
    def key(name):
        return f"{WILDCARD}/{name}" if wildcard and name not in (WILDCARD, "eva_bringup") else name
    return {key(name): {"ros__parameters": params} for name, params in out.items()}


def ros_params_args(paths) -> list[str]:
    """`--ros-args --params-file A --params-file B ...` for rclpy.init."""
    out = ["--ros-args"]
    for p in paths:
        out += ["--params-file", str(p)]
    return out


def check_bringup(paths, specs=None):
    """eva-bringup's check before rclpy starts: the `eva_bringup` section, then every composed
    node's section (`specs`: [(kind, node_name)], default: from the section's `nodes`).
    Returns (BringupConfig, {node_name: config})."""
    from eva_ros.node_config import SECTIONS, BringupConfig
    from eva_ros.registry import bringup_kinds

    bringup = check_params_files(paths, {"eva_bringup": BringupConfig})["eva_bringup"]
    if specs is None:
        specs = [(s.partition(":")[0], s.partition(":")[2] or s.partition(":")[0]) for s in bringup.nodes]
    for kind, _name in specs:
        if kind not in bringup_kinds():
            raise ConfigError(source_of(paths), "eva_bringup", "nodes",
                              f"unknown node kind {kind!r}; known: {', '.join(bringup_kinds())}")
    nodes = check_params_files(paths, {name: SECTIONS[kind] for kind, name in specs})
    return bringup, nodes


# -- ROS side ---------------------------------------------------------------------------------
def params_files_from_args(args) -> list[str]:
    """The `--params-file` paths in a ROS argument list (after `--ros-args`)."""
    args = list(args or [])
    files, in_ros = [], False
    for i, a in enumerate(args):
        if a == "--ros-args":
            in_ros = True
        elif a == "--":
            in_ros = False
        elif in_ros and a == "--params-file" and i + 1 < len(args):
            files.append(args[i + 1])
    return files


def remember_params_files(args, context=None) -> list[str]:
    """Record the params files in `args` for the error messages of nodes in `context` (None: the
    default context); returns `args`, so it wraps the list handed to rclpy.init."""
    _FILES_BY_CONTEXT[id(context)] = params_files_from_args(args)
    return list(args)


def check_params_args(args, context=None) -> list[str]:
    """Before rclpy.init: every `--params-file` in `args` is a readable mapping of node sections
    (else a one-line ConfigError naming the file, where rcl would raise a multi-line RCLError);
    recorded for the nodes' error messages. Returns `args`."""
    for f in params_files_from_args(args):
        load_params_yaml(f)
    return remember_params_files(args, context)


def _context_files(node) -> list[str]:
    ctx = getattr(node, "context", None)
    for key in (id(ctx), id(None)):
        if key in _FILES_BY_CONTEXT:
            return _FILES_BY_CONTEXT[key]
    return params_files_from_args(sys.argv)


def unflatten(flat: Mapping) -> dict:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2} (nested YAML maps come in dotted)."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = str(key).split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError("", "", key, f"{part!r} is both a value and a section")
            node = child
        if isinstance(value, Mapping):
            value = unflatten(value)
            if isinstance(node.get(leaf), dict):
                merge(node[leaf], value)
                continue
        elif isinstance(node.get(leaf), dict):
            raise ConfigError("", "", key, "is both a value and a section")
        node[leaf] = value
    return out


def node_overrides(node) -> dict:
    """Every parameter override the node was given (not rclpy's own), unflattened. rclpy keeps
    them in `Node._parameter_overrides` (no public accessor) until a parameter is declared."""
    flat = {}
    for name, p in node._parameter_overrides.items():
        if name.split(".")[0] in ROS_RESERVED:
            continue
        value = p.value
        flat[name] = value.tolist() if isinstance(value, array.array) else value
    return unflatten(flat)


def load_node_config(node, cls: type[Section]):
    """The node's typed config: every override it received, validated by `cls` (ConfigError), then
    declared as the node's parameters (`declare_config`)."""
    files = _context_files(node)
    layers = []
    for f in files:
        try:
            layers.append((f, load_params_yaml(f)))
        except ConfigError:
            pass  # rcl parsed it already; only used to name the file in errors
    cfg = validate_section(cls, node_overrides(node), layers=layers, node_name=node.get_name(),
                           source=source_of(files))
    declare_config(node, cfg)
    return cfg


# -- declared parameters ----------------------------------------------------------------------
_INT64 = (-2**63, 2**63 - 1)
_DOUBLE = (-sys.float_info.max, sys.float_info.max)


def _array_type(item):
    from rclpy.parameter import Parameter

    return {bool: Parameter.Type.BOOL_ARRAY, int: Parameter.Type.INTEGER_ARRAY, float: Parameter.Type.DOUBLE_ARRAY,
            str: Parameter.Type.STRING_ARRAY}.get(item)


def parameter_type(tp):
    """The rclpy Parameter.Type of a field type; None where ROS has no static type for it
    (`X | None`, dicts, Any): such a parameter is declared with dynamic typing."""
    from rclpy.parameter import Parameter

    scalar = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
              str: Parameter.Type.STRING}
    if tp in scalar:
        return scalar[tp]
    if typing.get_origin(tp) in (list, tuple, Sequence) or tp in (list, tuple):
        args = typing.get_args(tp)
        return _array_type(args[0]) if args else None
    return None


def _range(meta, ptype):
    """(FloatingPointRange | None, IntegerRange | None) from gt/ge/lt/le. ROS ranges are inclusive:
    a strict bound of a float is given as its closure (the typed config keeps it strict), of an
    int as the next integer; a missing side is the type's limit."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange
    from rclpy.parameter import Parameter

    lo = next((meta[k] for k in ("ge", "gt") if meta.get(k) is not None), None)
    hi = next((meta[k] for k in ("le", "lt") if meta.get(k) is not None), None)
    if lo is None and hi is None:
        return None, None
    if ptype == Parameter.Type.DOUBLE:
        return FloatingPointRange(from_value=float(_DOUBLE[0] if lo is None else lo),
                                  to_value=float(_DOUBLE[1] if hi is None else hi), step=0.0), None
    if ptype == Parameter.Type.INTEGER:
        if lo is not None and meta.get("ge") is None:
            lo = math.floor(lo) + 1
        if hi is not None and meta.get("le") is None:
            hi = math.ceil(hi) - 1
        return None, IntegerRange(from_value=int(_INT64[0] if lo is None else lo),
                                  to_value=int(_INT64[1] if hi is None else hi), step=0)
    return None, None


def describe_field(name: str, meta, ptype) -> "ParameterDescriptor":  # noqa: F821
    """The ParameterDescriptor of a field: type, doc + unit, constraints, range, read_only."""
    from rcl_interfaces.msg import ParameterDescriptor

    unit = meta.get("unit", "")
    d = ParameterDescriptor(name=name, description=meta.get("doc", "") + (f" [{unit}]" if unit else ""),
                            additional_constraints=constraint_text(meta),
                            read_only=not meta.get("dynamic", False), dynamic_typing=ptype is None)
    fp, ints = _range(meta, ptype)
    if fp is not None:
        d.floating_point_range = [fp]
    if ints is not None:
        d.integer_range = [ints]
    return d


def _flat_items(prefix: str, value):
    """(dotted name, leaf value) of a nested mapping (a backend's options)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flat_items(f"{prefix}.{k}", v)
    else:
        yield prefix, value


def declare_config(node, cfg: Section, prefix: str = "") -> None:
    """Declare every field of `cfg` (its validated value) as a parameter of `node`; nested
    sections recurse with dotted names, a dict field declares the keys it holds."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        name, value, tp = prefix + f.name, getattr(cfg, f.name), hints[f.name]
        if isinstance(value, Section):
            declare_config(node, value, prefix=name + ".")
            continue
        if isinstance(value, Mapping):   # a backend's options: validated by its Options class
            for key, leaf in _flat_items(name, value):
                _declare(node, key, leaf, describe_field(key, {**f.metadata, "gt": None, "ge": None, "lt": None,
                                                               "le": None, "choices": None}, None))
            continue
        ptype = parameter_type(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            ptype = None   # X | None: the value's own type
        _declare(node, name, value, describe_field(name, f.metadata, ptype), ptype)


def _declare(node, name: str, value, descriptor, ptype=None) -> None:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list) and not value and ptype is not None:
        node.declare_parameter(name, ptype, descriptor, ignore_override=True)   # [] has no type of its own
    else:
        node.declare_parameter(name, value, descriptor, ignore_override=True)
