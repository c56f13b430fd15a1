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


def test_node_config_and_the_idm_package_import_without_torch():
    """The choice constants have one torch-free home (eva_core.idm.config); eva_core.idm loads
    its torch modules only when one of their names is used."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import eva_ros.node_config as nc, eva_core.idm as idm\n"
            "from eva_core.idm import VARIANTS, FUSIONS, PRECISIONS, IDMConfig\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert nc.IDMOptions.__dataclass_fields__['variant'].metadata['choices'] == VARIANTS\n"
            "assert idm.build_idm and 'torch' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _planner_params(tmp_path, body: str) -> Path:
    path = tmp_path / "planner.yaml"
    path.write_text("planner:\n  ros__parameters:\n" + "".join(f"    {line}\n" for line in body.splitlines()))
    return path


def test_the_planner_section_is_the_core_planner_config_plus_the_node_keys(tmp_path):
    from eva_core import planner
    from eva_core.world_model import WorldModelConfig
    from eva_ros.node_config import SECTIONS, PlannerNodeConfig
    from eva_ros.params import check_params_files

    assert SECTIONS["planner"] is PlannerNodeConfig and issubclass(PlannerNodeConfig, planner.PlannerConfig)
    assert set(planner.PlannerConfig.keys()) < set(PlannerNodeConfig.keys())
    path = _planner_params(tmp_path, "policy: sync\nn_exec: 4\nworld_model:\n  num_frames: 17\n  tiny: {num_layers: 3}")
    cfg = check_params_files([path])["planner"]
    assert (cfg.policy, cfg.n_exec) == ("sync", 4)
    # kind tiny (the default) starts from tiny_default; the given keys override it
    assert cfg.world_model == WorldModelConfig.tiny_default(num_frames=17, tiny={"num_layers": 3})
    assert PlannerNodeConfig().world_model == WorldModelConfig.tiny_default()
    # the node's config drives the core planner as is
    core = planner.RecedingHorizonPlanner(cfg, fps=16.0, num_frames=17)
    assert core.n_exec == 4 and core.config.policy == "sync"
    full = check_params_files([_planner_params(tmp_path, "world_model: {kind: diffusers, model_dir: /m}")])["planner"]
    assert (full.world_model.num_frames, full.world_model.height) == (49, 480)


@pytest.mark.parametrize("body, section, key, problem", [
    ("world_model:\n  num_frame: 17", "planner.world_model", "num_frame", "did you mean 'num_frames'?"),
    ("world_model:\n  tiny: {num_layer: 3}", "planner.world_model.tiny", "num_layer", "did you mean 'num_layers'?"),
    ("world_model:\n  num_frames: 10", "planner.world_model", "num_frames", "4k+1"),
    ("world_model:\n  kind: vqvae", "planner.world_model", "kind", "must be one of"),
    ("policy: sometimes", "planner", "policy", "must be one of"),
    ("n_exec: 0", "planner", "n_exec", "must be >= 1"),
    ("latency_smoothing: 1.5", "planner", "latency_smoothing", "must be <= 1"),
])
def test_a_bad_planner_key_names_the_params_file_section_and_key(tmp_path, body, section, key, problem):
    from eva_ros.params import check_params_files

    path = _planner_params(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        check_params_files([path])
    assert (info.value.source, info.value.section, info.value.key) == (str(path), section, key)
    assert problem in info.value.problem and "\n" not in str(info.value)


def test_bringup_section_checks_node_kinds():
    from eva_ros.node_config import BringupConfig

    assert BringupConfig.from_dict({"nodes": ["camera", "camera:wrist"]}).nodes == ["camera", "camera:wrist"]
    with pytest.raises(ConfigError, match="nodes: unknown node kind 'kamera'"):
        BringupConfig.from_dict({"nodes": ["kamera"]}, source="x.yaml", section="eva_bringup")
    with pytest.raises(ConfigError, match="unique"):
        BringupConfig.from_dict({"nodes": ["camera", "camera"]})
    # registered nodes that run as their own process (no eva-bringup report) are refused by name
    with pytest.raises(ConfigError, match="nodes: unknown node kind 'leader_arm'; known: camera, planner"):
        BringupConfig.from_dict({"nodes": ["leader_arm"]}, source="x.yaml", section="eva_bringup")


def test_bringup_check_refuses_a_node_it_does_not_compose():
    from eva_core.paths import config_path
    from eva_ros.bringup import node_specs
    from eva_ros.params import check_bringup

    with pytest.raises(ConfigError, match="eva_bringup: nodes: unknown node kind 'eva_record'"):
        check_bringup([config_path("base.yaml")], node_specs(["controller", "eva_record"]))


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
    from eva_core.events import EVENT_DOCS, Event

    assert set(EVENT_DOCS) == set(Event) and all(EVENT_DOCS.values())
    used = set()
    for path in [*(REPO / "eva_ros").rglob("*.py"), *(REPO / "eva_core").rglob("*.py")]:
        # node.event("kind", ...) and a source's queued self._event("kind", ...) (RealSense watchdog)
        used |= set(re.findall(r"[._]event\(\s*\"([a-z_]+)\"", path.read_text()))
    assert used, "the scan found no event kind passed as a string"
    assert used <= {e.value for e in Event}, used - {e.value for e in Event}


def test_every_kind_the_core_emits_is_one_known_documented_event():
    """The kinds live in eva_core.events only; chunk decoding, the control loop and the ROS
    diagnostics import them from there, and every kind the core emits is documented."""
    from eva_core import chunk_decoding, control, events
    from eva_core.events import EVENT_DOCS, GROUPS, Event

    assert chunk_decoding.Reject is events.Reject and control.EventKind is events.EventKind
    members = [m for group in GROUPS for m in group]
    assert len({m.value for m in members}) == len(members) == len(Event)   # no kind in two groups (an alias)
    doc = (REPO / "docs" / "ros_interface.md").read_text()
    for kind in [*events.Reject, *events.EventKind]:
        assert Event(kind.value).name == kind.name and EVENT_DOCS[Event(kind.value)], kind
        assert f"| `{kind.value}` | {EVENT_DOCS[Event(kind.value)]} |" in doc, kind


def test_the_diagnostics_use_the_core_event_kinds():
    pytest.importorskip("rclpy")
    from eva_core import events
    from eva_ros import diagnostics

    assert diagnostics.Event is events.Event and diagnostics.EVENT_DOCS is events.EVENT_DOCS


def test_the_node_registry_is_the_one_list_of_node_kinds():
    """eva_ros/registry.py feeds eva-bringup, the config check (SECTIONS), setup.py and the docs."""
    import importlib
    import subprocess
    import sys

    from eva_ros import node_config
    from eva_ros.registry import NODE_KINDS, bringup_kinds, console_scripts

    assert not hasattr(node_config, "NODE_KINDS") or node_config.NODE_KINDS is NODE_KINDS
    assert {k: c for k, c in node_config.SECTIONS.items() if k != "eva_bringup"} == \
        {kind: k.config_class() for kind, k in NODE_KINDS.items()}
    assert node_config.BringupConfig().nodes == bringup_kinds()
    for kind, k in NODE_KINDS.items():
        module = importlib.util.find_spec(k.target.partition(":")[0])
        assert module is not None and f"class {k.target.partition(':')[2]}(" in Path(module.origin).read_text(), kind
        assert console_scripts()[k.script] == k.main()
    # torch-free and rclpy-free: setup.py loads it by path; the config check runs before rclpy
    code = ("import sys; import eva_ros.node_config, eva_ros.params, eva_core.events; "
            "bad = {'rclpy', 'torch'} & set(sys.modules); assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr


def test_the_generated_docs_have_a_table_for_every_registered_node():
    import importlib.util

    from eva_ros.registry import NODE_KINDS

    spec = importlib.util.spec_from_file_location("gen_param_docs", REPO / "tools" / "gen_param_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    block = gen.parameters_block()
    for kind, k in NODE_KINDS.items():
        cls = k.config_class()
        assert f"**`{kind}` (node `{kind}`: `{k.target}`" in block and f"`{cls.__module__}.{cls.__name__}`" in block
        for row in cls.doc_rows():
            assert f"| `{row['key']}` |" in block, (kind, row["key"])
    assert "**`eva_bringup` (read by eva-bringup only" in block
    assert "LeaderArmConfig" in block and "RecordConfig" in block


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
    from training.common import load_config
    from training.grpo import GRPOConfig

    assert yaml_io.load("a: 1e-4\nb: -3E2\nc: '1e-3'\nd: 2\ne: x1e3") == {"a": 1e-4, "b": -300.0, "c": "1e-3", "d": 2, "e": "x1e3"}
    cfg = load_config(GRPOConfig, "config/training/grpo_tiny.yaml", ["train.lr=2e-3", "grpo.clip_range=1e-5"])
    assert cfg.train.lr == 2e-3 and cfg.grpo.clip_range == 1e-5
    f = tmp_path / "t.yaml"
    f.write_text("reward:\n  idm: random_tiny\ntrain:\n  lr: 5e-4\n")
    assert load_config(GRPOConfig, f).train.lr == 5e-4


# every timeout/age/offset key has an upper bound: a huge value (1e300, or a typo like 100) would
# switch a watchdog off without a word
@pytest.mark.parametrize("section, key, value", [
    ("controller", "feedback_timeout", 1e300), ("controller", "feedback_timeout", 100.0),
    ("controller", "trajectory_timeout", 100.0), ("controller", "max_stamp_offset", 1e300),
    ("controller", "max_stamp_offset", 100.0), ("controller", "heartbeat_timeout", 1e300),
    ("controller", "max_trajectory_duration", 1e300), ("controller", "limit_tolerance", 1.0),
    ("idm_action", "max_state_age", 100.0), ("idm_action", "state_history_s", 1e300),
    ("planner", "max_obs_age", 1e300), ("planner", "check_period", 100.0), ("camera", "connect_timeout", 1e300),
])
def test_timeouts_and_ages_have_upper_bounds(section, key, value):
    from eva_ros.node_config import SECTIONS

    with pytest.raises(ConfigError, match=rf"^p.yaml: {section}: {key}: must be <= "):
        SECTIONS[section].from_dict({key: value}, source="p.yaml", section=section)


@pytest.mark.parametrize("options, key", [("PiperArm", "feedback_timeout"), ("PiperArm", "enable_timeout"),
                                          ("RealSenseSource", "frame_timeout")])
def test_backend_timeouts_have_upper_bounds(options, key):
    import importlib

    module = {"PiperArm": "eva_ros.backends.piper", "RealSenseSource": "eva_ros.backends.realsense"}[options]
    cls = getattr(importlib.import_module(module), options)
    with pytest.raises(ConfigError, match=rf"{key}: must be <= "):
        cls.Options.from_dict({key: 1e300}, source="p.yaml", section="arm")
