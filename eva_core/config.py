"""Typed configuration: one `@dataclass` per config section, checked where the values enter.

    @dataclass
    class ControllerConfig(Section):
        control_rate_hz: float = param(200.0, "control loop rate", unit="Hz", gt=0)

    cfg = ControllerConfig.from_dict(yaml_section, source="config/sim.yaml", section="controller")

`from_dict` rejects unknown keys (with the nearest valid key as a hint), wrong types (an int is
accepted for a float; a bool is never a number; a str never a number), non-finite floats and
out-of-range values. A `Section`-typed field parses a nested mapping ("parent.child" in errors);
`X | None` allows None. Every error is a `ConfigError` whose text is one line:
`<source>: <section>: <key>: <problem>`. Direct construction (`Cls(a=1)`) runs the same checks.
No ROS here: the ROS adapter is eva_ros/params.py.
"""

from __future__ import annotations

import array
import contextvars
import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

# (source, section) of the from_dict call that is constructing an instance right now
_CONTEXT: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("eva_config_context", default=("", ""))


class ConfigError(ValueError):
    """A bad configuration value; `str(exc)` is one line `<source>: <section>: <key>: <problem>`."""

    def __init__(self, source: str, section: str, key: str, problem: str):
        self.source, self.section, self.key = str(source or ""), str(section or ""), str(key or "")
        self.problem = " ".join(str(problem).split())  # one line
        super().__init__(": ".join([p for p in (self.source, self.section, self.key) if p] + [self.problem]))

    def with_source(self, source: str) -> "ConfigError":
        """The same error attributed to another source (e.g. the params file that set the key)."""
        return ConfigError(source, self.section, self.key, self.problem)


def param(default, doc: str, *, unit: str = "", gt=None, ge=None, lt=None, le=None, choices=None,
          dynamic: bool = False):
    """A dataclass field with a one-line `doc`, a `unit` and constraints (checked on construction).

    A mutable default (list, dict, a Section instance or a Section class) becomes a default_factory.
    `dataclasses.MISSING` as default makes the key required. `dynamic`: its node applies a new
    value while running, so its ROS parameter may be set (eva_ros.params.declare_config); by
    default a value is read once, at start-up, and its ROS parameter is read-only.
    """
    meta = {"doc": doc, "unit": unit, "gt": gt, "ge": ge, "lt": lt, "le": le,
            "choices": None if choices is None else tuple(choices), "dynamic": bool(dynamic)}
    if isinstance(default, type) and issubclass(default, Section):
        return dataclasses.field(default_factory=default, metadata=meta)
    if isinstance(default, (list, dict, set, Section)):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and issubclass(tp, Section):
        return "section"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = typing.get_args(tp)
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]" if args else origin.__name__
    return getattr(tp, "__name__", str(tp))


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


class _Bad(Exception):
    """A value problem inside a field (turned into a ConfigError naming the key)."""


def _coerce(tp, value, source: str, section: str, key: str):
    """`value` as type `tp` (raises _Bad with the problem, or ConfigError from a nested Section)."""
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Section):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Bad(f"expected a mapping (section), got {_describe(value)}")
        return tp.from_dict(value, source=source, section=f"{section}.{key}" if section else key)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Bad(f"expected {_type_name(tp)}, got None")
        problems = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, source, section, key)
            except _Bad as exc:
                problems.append(str(exc))
        raise _Bad(problems[0] if len(problems) == 1 else f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, array.array):
            value = value.tolist()
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise _Bad(f"expected a list, got {_describe(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_coerce(item, v, source, section, key))
            except _Bad as exc:
                raise _Bad(f"item {i}: {exc}") from None
        return out if origin is not tuple else tuple(out)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Bad(f"expected a mapping, got {_describe(value)}")
        return dict(value)
    if value is None:
        raise _Bad(f"expected {_type_name(tp)}, got None")
    if tp is bool:
        if not isinstance(value, bool):
            raise _Bad(f"expected bool (true/false), got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected float, got {_describe(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise _Bad(f"must be finite, got {value}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected int, got {_describe(value)}")
        return int(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Bad(f"expected str, got {_describe(value)}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _Bad(f"expected {_type_name(tp)}, got {_describe(value)}")
    return value


def _check_range(meta: Mapping, value) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise _Bad(f"must be one of {list(choices)}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for name, op, ok in (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
                         ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b)):
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise _Bad(f"must be {op} {bound}, got {value}")


def constraint_text(meta: Mapping) -> str:
    """A field's constraints for docs, e.g. "> 0, <= 1" or "one of: lead, continuous"."""
    parts = [f"{op} {meta[k]}" for k, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if meta.get(k) is not None]
    if meta.get("choices"):
        parts.append("one of: " + ", ".join(str(c) for c in meta["choices"]))
    return ", ".join(parts)


class Section:
    """Base of the `@dataclass` config classes (see the module docstring)."""

    @classmethod
    def _hints(cls) -> dict:
        return typing.get_type_hints(cls)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, mapping: Mapping | None = None, *, source: str = "<dict>", section: str = ""):
        """Validated instance from a mapping (None = all defaults); raises ConfigError."""
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, Mapping):
            raise ConfigError(source, section, "", f"expected a mapping of keys, got {_describe(mapping)}")
        valid = cls.keys()
        for key in mapping:
            if key not in valid:
                near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(valid)}"
                raise ConfigError(source, section, str(key), f"unknown key; {hint}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING and f.name not in mapping]
        if required:
            raise ConfigError(source, section, required[0], "missing required key")
        token = _CONTEXT.set((source, section))
        try:
            return cls(**dict(mapping))
        finally:
            _CONTEXT.reset(token)

    def __post_init__(self):
        source, section = _CONTEXT.get()
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_section", section)
        hints = self._hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                value = _coerce(hints[f.name], value, source, section, f.name)
                _check_range(f.metadata, value)
            except _Bad as exc:
                raise ConfigError(source, section, f.name, str(exc)) from None
            if isinstance(value, Section) and not value._section:
                object.__setattr__(value, "_source", source)
                object.__setattr__(value, "_section", f"{section}.{f.name}" if section else f.name)
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks of a subclass; raise with `self.error(key, problem)`."""

    def error(self, key: str, problem: str) -> ConfigError:
        """Raise a ConfigError naming this section's source and section."""
        raise ConfigError(getattr(self, "_source", ""), getattr(self, "_section", ""), key, problem)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Section) else copy.deepcopy(v)
        return out

    @classmethod
    def doc_rows(cls, prefix: str = "") -> list[dict]:
        """One row per key (nested sections expanded as "parent.child"): key, type, default,
        unit, constraints, doc."""
        rows = []
        hints = cls._hints()
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if isinstance(tp, type) and issubclass(tp, Section):
                rows.extend(tp.doc_rows(prefix=f"{prefix}{f.name}."))
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            rows.append({"key": prefix + f.name, "type": _type_name(tp), "default": default,
                         "unit": f.metadata.get("unit", ""), "constraints": constraint_text(f.metadata),
                         "doc": f.metadata.get("doc", "")})
        return rows
