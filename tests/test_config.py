"""eva_core.config: typed sections, one-line errors naming source/section/key; the node sections,
backend Options, names and event kinds built on it (no ROS process needed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from eva_core.config import ConfigError, Section, param

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Inner(Section):
    gain: float = param(1.0, "a gain", gt=0, le=10)


@dataclass
class Outer(Section):
    rate: float = param(200.0, "a rate", unit="Hz", gt=0)
    count: int = param(3, "a count", ge=1)
    name: str = param("a", "a name", choices=("a", "b"))
    flag: bool = param(True, "a flag")
    limit: float | None = param(None, "optional", ge=0)
    values: list[float] = param([1.0, 2.0], "a list")
    options: dict = param({}, "free-form options")
    inner: Inner = param(Inner, "nested")

    def validate(self):
        if self.count > 100 and self.flag:
            self.error("count", "must be <= 100 while flag is set")


def err(mapping, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        Outer.from_dict(mapping, source="f.yaml", section="sec", **kw)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_defaults_roundtrip_and_mutable_defaults_are_fresh():
    a, b = Outer.from_dict({}), Outer()
    assert a == b and a.to_dict() == Outer.from_dict(a.to_dict()).to_dict()
    a.values.append(3.0)
    a.options["x"] = 1
    assert Outer().values == [1.0, 2.0] and Outer().options == {}
    assert a.inner is not Outer().inner


def test_int_for_float_and_nested_and_optional():
    cfg = Outer.from_dict({"rate": 100, "limit": 2, "values": [1, 2.5], "inner": {"gain": 2}})
    assert isinstance(cfg.rate, float) and cfg.rate == 100.0
    assert cfg.limit == 2.0 and cfg.values == [1.0, 2.5] and cfg.inner.gain == 2.0
    assert Outer.from_dict({"limit": None}).limit is None


def test_unknown_key_suggests_the_nearest():
    assert err({"rte": 1.0}) == "f.yaml: sec: rte: unknown key; did you mean 'rate'?"
    assert "valid keys: rate, count" in err({"zzzzz": 1})
    assert err({"inner": {"gian": 1.0}}) == "f.yaml: sec.inner: gian: unknown key; did you mean 'gain'?"


@pytest.mark.parametrize("mapping, key, problem", [
    ({"rate": "fast"}, "rate", "expected float, got str"),
    ({"rate": True}, "rate", "expected float, got bool"),
    ({"count": 2.0}, "count", "expected int, got float"),
    ({"count": False}, "count", "expected int, got bool"),
    ({"flag": 1}, "flag", "expected bool"),
    ({"name": 3}, "name", "expected str"),
    ({"rate": float("nan")}, "rate", "must be finite"),
    ({"rate": float("inf")}, "rate", "must be finite"),
    ({"rate": -1.0}, "rate", "must be > 0, got -1.0"),
    ({"rate": 0}, "rate", "must be > 0, got 0.0"),
    ({"count": 0}, "count", "must be >= 1"),
    ({"name": "c"}, "name", "must be one of ['a', 'b']"),
    ({"limit": -1}, "limit", "must be >= 0"),
    ({"limit": "x"}, "limit", "expected float"),
    ({"values": "1,2"}, "values", "expected a list"),
    ({"values": [1, "x"]}, "values", "item 1: expected float"),
    ({"options": [1]}, "options", "expected a mapping"),
    ({"count": 101}, "count", "must be <= 100 while flag is set"),
])
def test_bad_values_name_source_section_key(mapping, key, problem):
    text = err(mapping)
    assert text.startswith(f"f.yaml: sec: {key}: "), text
    assert problem in text


def test_nested_errors_and_non_mappings():
    assert err({"inner": {"gain": 11}}).startswith("f.yaml: sec.inner: gain: must be <= 10")
    assert "expected a mapping" in err({"inner": 3})
    with pytest.raises(ConfigError, match=r"^f.yaml: sec: expected a mapping of keys, got list"):
        Outer.from_dict([1], source="f.yaml", section="sec")
    with pytest.raises(ConfigError, match="gain: must be > 0"):   # direct construction is checked too
        Inner(gain=-1.0)


def test_doc_rows_expand_nested_sections():
    rows = {r["key"]: r for r in Outer.doc_rows()}
    assert rows["rate"] == {"key": "rate", "type": "float", "default": 200.0, "unit": "Hz",
                            "constraints": "> 0", "doc": "a rate"}
    assert rows["inner.gain"]["constraints"] == "> 0, <= 10"
    assert rows["limit"]["type"] == "float | None"
    assert rows["name"]["constraints"] == "one of: a, b"


def test_core_configs_are_sections():
    from eva_core.safety import SafetyConfig
    from eva_core.trajectory import FollowerConfig

    assert SafetyConfig.from_dict(None) == SafetyConfig()
    with pytest.raises(ConfigError, match="did you mean 'blend_time'"):
        FollowerConfig.from_dict({"blend_tim": 0.1})
    with pytest.raises(ConfigError, match="velocity_scale: must be <= 1"):
        SafetyConfig.from_dict({"velocity_scale": 2})


def test_node_sections_choices_match_the_core():
    from eva_core import idm, planner
    from eva_ros import node_config as nc

    assert set(nc.POLICIES) == set(planner.POLICIES)
    assert set(nc.IDM_VARIANTS) == set(idm.VARIANTS) and set(nc.IDM_FUSIONS) == set(idm.FUSIONS)
    assert set(nc.IDM_PRECISIONS) == set(idm.PRECISIONS)


def test_bringup_section_checks_node_kinds():
    from eva_ros.node_config import BringupConfig

    assert BringupConfig.from_dict({"nodes": ["camera", "camera:wrist"]}).nodes == ["camera", "camera:wrist"]
    with pytest.raises(ConfigError, match="nodes: unknown node kind 'kamera'"):
        BringupConfig.from_dict({"nodes": ["kamera"]}, source="x.yaml", section="eva_bringup")
    with pytest.raises(ConfigError, match="unique"):
        BringupConfig.from_dict({"nodes": ["camera", "camera"]})


def test_backend_options_are_validated_by_make():
    from eva_core.embodiment import load_embodiment
    from eva_ros.backends import LoopbackArm, make_arm, make_camera

    emb = load_embodiment()
    arm = make_arm("loopback", emb, {"initial_positions": list((emb.pos_lower + emb.pos_upper) / 2)})
    assert isinstance(arm, LoopbackArm)
    with pytest.raises(ConfigError, match=r"^c.yaml: controller.arm: initial_position: unknown key; did you mean"):
        make_arm("loopback", emb, {"initial_position": [0.0]}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"controller.arm: initial_positions: needs 14 values"):
        make_arm("loopback", emb, {"initial_positions": [0.0]}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml: controller: arm_backend: unknown arm backend 'teleporter'"):
        make_arm("teleporter", emb, {}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"camera.source_options: height: must be >= 1"):
        make_camera("synthetic", emb, {"height": 0}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"camera.source_options: path: missing required key"):
        make_camera("playback", emb, {}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"camera.source_options: fps: expected float, got str"):
        make_camera("synthetic", emb, {"fps": "30"}, source="c.yaml")


def test_every_backend_in_the_registries_has_options():
    import importlib

    from eva_ros.backends import ARM_BACKENDS, CAMERA_SOURCES

    for target in [*ARM_BACKENDS.values(), *CAMERA_SOURCES.values()]:
        module, _, name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError:   # an optional SDK (pyrealsense2) that is not installed here
            continue
        assert issubclass(cls.Options, Section), target
        assert cls.Options.doc_rows(), target


def test_names_are_relative_except_diagnostics():
    from eva_ros import names

    values = {k: v for k, v in vars(names).items() if k.isupper()}
    assert values["DIAGNOSTICS"] == "/diagnostics"
    assert all(not v.startswith("/") for k, v in values.items() if k != "DIAGNOSTICS")
    assert names.camera_topic("cam_high") == "cam_high/color/image_raw"


def test_every_event_kind_used_is_an_event_member():
    from eva_ros.diagnostics import EVENT_DOCS, Event

    assert set(EVENT_DOCS) == set(Event) and all(EVENT_DOCS.values())
    used = set()
    for path in [*(REPO / "eva_ros").rglob("*.py"), *(REPO / "eva_core").rglob("*.py")]:
        used |= set(re.findall(r"\.event\(\s*\"([a-z_]+)\"", path.read_text()))
    assert used <= {e.value for e in Event}, used - {e.value for e in Event}
    from eva_core.chunk_decoding import Reject
    from eva_core.control import EventKind

    assert {r.value for r in Reject} | {k.value for k in EventKind} <= {e.value for e in Event}


def test_ros_interface_parameter_tables_match_the_code():
    """docs/ros_interface.md's parameter, backend-option and event tables are what
    tools/gen_param_docs.py generates from the dataclasses (run it after changing a field)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_param_docs", REPO / "tools" / "gen_param_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.DOC.read_text()
    assert gen.render(text) == text, "docs/ros_interface.md is out of date: run python tools/gen_param_docs.py"
    for block in gen.BLOCKS:
        assert f"<!-- BEGIN GENERATED: {block} " in text


def test_exponent_floats_without_a_dot_are_numbers_in_every_config_entry(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-4` as a string; our configs and --set read it as a float."""
    from eva_core import yaml_io
    from training.common import load_sections
    from training.grpo import SCHEMA

    assert yaml_io.load("a: 1e-4\nb: -3E2\nc: '1e-3'\nd: 2\ne: x1e3") == {"a": 1e-4, "b": -300.0, "c": "1e-3", "d": 2, "e": "x1e3"}
    cfg = load_sections("config/training/grpo_tiny.yaml", SCHEMA, ["train.lr=2e-3", "grpo.clip_range=1e-5"])
    assert cfg["train"].lr == 2e-3 and cfg["grpo"].clip_range == 1e-5
    f = tmp_path / "t.yaml"
    f.write_text("reward:\n  idm: random_tiny\ntrain:\n  lr: 5e-4\n")
    assert load_sections(f, SCHEMA)["train"].lr == 5e-4
