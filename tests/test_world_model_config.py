"""WorldModelConfig as a typed Section: kind presets, the nested tiny sizes, saved configs round-trip."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eva_core.config import ConfigError
from eva_core.world_model import TinyConfig, WorldModelConfig
from eva_core.world_model.config import KIND_PRESETS

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo"


def test_kind_tiny_starts_from_its_preset_and_given_keys_override_it():
    assert WorldModelConfig.from_dict({}) == WorldModelConfig.tiny_default()
    cfg = WorldModelConfig.from_dict({"num_frames": 17, "tiny": {"num_layers": 3}})
    assert (cfg.height, cfg.width, cfg.num_frames, cfg.scheduler, cfg.num_steps) == (64, 64, 17, "euler", 4)
    assert cfg.tiny == TinyConfig(num_layers=3)
    assert WorldModelConfig.tiny_default(height=32).height == 32
    for key, value in KIND_PRESETS["tiny"].items():
        assert getattr(WorldModelConfig.tiny_default(), key) == value
    # the other kinds keep EVA's defaults
    full = WorldModelConfig.from_dict({"kind": "diffusers", "model_dir": "/m"})
    assert (full.height, full.width, full.num_frames, full.scheduler, full.num_steps) == (480, 640, 49, "unipc", 40)


def test_an_instance_is_returned_as_is_and_to_dict_round_trips():
    cfg = WorldModelConfig.tiny_default(lora=["a", "b"], tiny={"seed": 5}, seed=None)
    assert WorldModelConfig.from_dict(cfg) is cfg
    assert WorldModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["tiny"]["seed"] == 5 and isinstance(cfg.to_dict()["tiny"], dict)


@pytest.mark.parametrize("data, section, key, problem", [
    ({"tiny": {"num_layer": 3}}, "planner.world_model.tiny", "num_layer", "did you mean 'num_layers'"),
    ({"num_frame": 17}, "planner.world_model", "num_frame", "did you mean 'num_frames'"),
    ({"num_frames": 10}, "planner.world_model", "num_frames", "4k+1"),
    ({"height": 50}, "planner.world_model", "height", "multiple of 16"),
    ({"kind": "nope"}, "planner.world_model", "kind", "must be one of"),
    ({"kind": "diffusers"}, "planner.world_model", "model_dir", "needs 'model_dir'"),
    ({"kind": "lightning", "model_dir": "/m"}, "planner.world_model", "ckpt", "needs 'ckpt'"),
    ({"best_of": 2}, "planner.world_model", "best_of", "reward_idm"),
    ({"best_of": 0}, "planner.world_model", "best_of", ">= 1"),
    ({"scheduler": "ddim"}, "planner.world_model", "scheduler", "must be one of"),
    ({"max_history_latents": 3}, "planner.world_model", "max_history_latents", "must be one of"),
    ({"text_len": 256}, "planner.world_model", "text_len", "must be one of"),
    ({"dtype": "float8"}, "planner.world_model", "dtype", "must be one of"),
    ({"fps": float("nan")}, "planner.world_model", "fps", "finite"),
    ({"tiny": {"ffn_dim": 0}}, "planner.world_model.tiny", "ffn_dim", ">= 1"),
    ({"tiny": 3}, "planner.world_model", "tiny", "expected a mapping"),
])
def test_bad_values_are_one_line_config_errors(data, section, key, problem):
    with pytest.raises(ConfigError) as err:
        WorldModelConfig.from_dict(data, source="p.yaml", section="planner.world_model")
    assert (err.value.source, err.value.section, err.value.key) == ("p.yaml", section, key)
    assert problem in err.value.problem and "\n" not in str(err.value)


def test_tiny_sizes_are_checked_where_they_are_read():
    from eva_core.world_model import tiny

    assert tiny.TINY_DEFAULTS == TinyConfig().to_dict()
    assert tiny.tiny_sizes({"num_layers": 4})["num_layers"] == 4
    assert tiny.tiny_sizes(TinyConfig(ffn_dim=8))["ffn_dim"] == 8
    with pytest.raises(ConfigError, match="world_model.tiny: num_layer: unknown key; did you mean 'num_layers'"):
        tiny.tiny_sizes({"num_layer": 4})


@pytest.mark.parametrize("name", ["world_model_sft.yaml", "world_model_grpo.yaml"])
def test_the_committed_demo_configs_load_and_round_trip(name):
    saved = yaml.safe_load((DEMO / name).read_text())["world_model"]
    cfg = WorldModelConfig.from_dict(saved, source=str(DEMO / name), section="world_model")
    for key, value in saved.items():
        got = getattr(cfg, key)
        assert (got.to_dict() if key == "tiny" else got) == (
            {**TinyConfig().to_dict(), **value} if key == "tiny" else value)
    assert WorldModelConfig.from_dict(cfg.to_dict()) == cfg
    # as training and the planner read them before: tiny_default + the saved keys
    assert cfg == WorldModelConfig.tiny_default(**{k: v for k, v in saved.items() if k != "kind"})


def test_the_committed_demo_world_model_builds_and_generates():
    import numpy as np

    from eva_core.world_model import build_world_model

    saved = yaml.safe_load((DEMO / "world_model_grpo.yaml").read_text())["world_model"]
    saved.update({k: str(DEMO / saved[k]) for k in ("transformer_dir", "vae_dir", "lora")})
    wm = build_world_model(saved)
    frames = wm.generate(np.zeros((wm.height, wm.width, 3), np.uint8), "pick up the block", seed=0)
    assert frames.shape == (wm.num_frames, wm.height, wm.width, 3) == (9, 48, 64, 3)
    assert frames.dtype == np.uint8


def test_the_config_imports_without_torch():
    code = ("import sys; from eva_core.world_model import WorldModelConfig, build_world_model; "
            "WorldModelConfig.tiny_default(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
