"""Node parameters: defaults in code, values from the YAML (ROS params-file format).

Nodes are created with `automatically_declare_parameters_from_overrides=True`, so every key of
the node's YAML section is declared (backend options included); `declare_defaults` then fills
in the rest and coerces ints given for float defaults.
"""

from __future__ import annotations

from rclpy.parameter import Parameter

NODE_KWARGS = dict(allow_undeclared_parameters=True, automatically_declare_parameters_from_overrides=True)


def declare_defaults(node, defaults: dict) -> dict:
    """Declare missing parameters with their defaults; return name -> value (typed like the default)."""
    out = {}
    for name, default in defaults.items():
        if node.has_parameter(name):
            value = node.get_parameter(name).value
        else:
            value = node.declare_parameter(name, default).value
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value is not None and default is not None and type(value) is not type(default) \
                and not (isinstance(default, list)):
            raise ValueError(f"node {node.get_name()!r}: parameter {name!r} should be "
                             f"{type(default).__name__}, got {value!r}")
        out[name] = value
    return out


def options_with_prefix(node, prefix: str) -> dict:
    """All parameters `prefix.xxx` as {xxx: value} (backend options)."""
    params = node.get_parameters_by_prefix(prefix)
    return {k: p.value for k, p in params.items() if p.type_ != Parameter.Type.NOT_SET}


def unflatten(flat: dict) -> dict:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2} (nested YAML maps come in dotted)."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
