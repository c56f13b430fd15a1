"""The light decoder inside the world model: the `decoder: vae | light` switch, its checks at build,
generate and GRPO's reward decoding through it, and the planner's world_model: section."""

import numpy as np
import pytest
import torch
import yaml

from eva_core.config import ConfigError
from eva_core.world_model import WorldModel, WorldModelConfig, build_world_model
from eva_core.world_model.light_decoder import (LightDecoder, LightDecoderCheckpointError, LightDecoderConfig,
                                                save_light_decoder)
from eva_core.world_model.yaml_file import read_world_model_yaml

pytestmark = pytest.mark.unit

torch.set_num_threads(1)
IMG = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
SMALL = LightDecoderConfig(channels=[16, 8, 8, 8])   # x8 in space, x4 in time: the tiny VAE's


@pytest.fixture(scope="module")
def light_dir(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_light_decoder(LightDecoder(SMALL), tmp_path_factory.mktemp("ld") / "light_decoder"))


def light_model(light_dir, **kw) -> WorldModel:
    return WorldModel.from_config(WorldModelConfig.tiny_default(decoder="light", light_decoder=light_dir, **kw))


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# ---- the config switch -----------------------------------------------------------------------------
def test_a_typo_in_the_switch_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as e:
        WorldModelConfig.from_dict({"decodr": "light"}, source="wm.yaml", section="world_model")
    assert one_line(e).startswith("wm.yaml: world_model: decodr: unknown key") and "did you mean 'decoder'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        WorldModelConfig.from_dict({"decoder": "lite"}, source="wm.yaml", section="world_model")
    assert one_line(e).startswith("wm.yaml: world_model: decoder:")


def test_light_without_a_path_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as e:
        WorldModelConfig.from_dict({"decoder": "light"}, source="wm.yaml", section="world_model")
    assert one_line(e) == ("wm.yaml: world_model: light_decoder: decoder 'light' needs 'light_decoder' "
                           "(a light-decoder directory)")
    with pytest.raises(ConfigError, match="light_decoder: set, but decoder is 'vae'"):
        WorldModelConfig.from_dict({"light_decoder": "ld"})


def test_a_missing_light_decoder_directory_fails_at_build_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        light_model(str(tmp_path / "nowhere"))
    assert "nowhere" in one_line(e)


@pytest.mark.parametrize("cfg, what", [(LightDecoderConfig(latent_channels=8, channels=[16, 8, 8, 8]), "8-channel"),
                                       (LightDecoderConfig(channels=[16, 8, 8]), "x4 (space)"),
                                       (LightDecoderConfig(channels=[16, 8, 8, 8], temporal_stride=2), "x2 (time)")])
def test_a_mismatched_decoder_fails_at_build_naming_the_file(tmp_path, cfg, what):
    d = save_light_decoder(LightDecoder(cfg), tmp_path / "other")
    with pytest.raises(LightDecoderCheckpointError) as e:
        light_model(str(d))
    msg = one_line(e)
    assert msg.startswith(f"{d / 'config.json'}: this light decoder reads") and what in msg
    assert "the world model's VAE makes 16-channel latents at x8 x4" in msg


# ---- generate and GRPO decode through it --------------------------------------------------------------
def _count(module) -> list:
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_generate_decodes_through_the_light_decoder(light_dir):
    wm = light_model(light_dir, num_steps=2)
    light_calls = _count(wm.light_decoder)
    vae_calls = []
    vae_decode = wm.c.vae.decode
    wm.c.vae.decode = lambda *a, **k: (vae_calls.append(1), vae_decode(*a, **k))[1]
    frames = wm.generate(IMG, "pick", seed=0)
    assert frames.shape == (wm.num_frames, wm.height, wm.width, 3) and frames.dtype == np.uint8
    assert len(light_calls) == 1 and vae_calls == []   # the VAE still encodes, never decodes
    assert wm.last_timing["decode"] > 0
    # the same latents through the VAE model: other frames (the light decoder is random here)
    ref = WorldModel.from_config(WorldModelConfig.tiny_default(num_steps=2))
    assert ref.light_decoder is None and not np.array_equal(ref.generate(IMG, "pick", seed=0), frames)


def test_decode_latents_is_the_light_decoder_when_configured(light_dir):
    wm = light_model(light_dir)
    lat = torch.randn(2, *wm.latent_shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(wm.decode_latents(lat), wm.light_decoder.decode(lat))


def test_grpo_reward_decodes_through_the_light_decoder(light_dir):
    from eva_core.world_model.best_of import load_scorer
    from training.grpo import decode_and_score

    wm = light_model(light_dir)
    calls = _count(wm.light_decoder)
    scorer = load_scorer("random_tiny", fps=wm.fps)
    seen = []
    score = scorer.score_video
    scorer.score_video = lambda v: (seen.append(v.clone()), score(v))[1]
    lat = torch.randn(3, *wm.latent_shape, generator=torch.Generator().manual_seed(1))
    video, res, _, _ = decode_and_score(wm, scorer, lat)
    assert len(calls) == 1 and res.score.shape == (3,)
    expected = wm.light_decoder.decode(lat)
    assert torch.equal(video, expected) and torch.equal(seen[0], expected.permute(0, 2, 1, 3, 4))


# ---- the planner's section and world-model YAML files --------------------------------------------------
def test_the_planner_section_builds_a_light_decoding_model(light_dir):
    from eva_ros.node_config import PlannerNodeConfig

    p = PlannerNodeConfig.from_dict({"world_model": {"kind": "tiny", "decoder": "light", "light_decoder": light_dir}})
    wm = build_world_model(p.world_model)
    assert isinstance(wm.light_decoder, LightDecoder)


def test_a_relative_light_decoder_resolves_against_the_yaml(tmp_path, light_dir):
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(light_dir, ck / "light_decoder")
    (ck / "world_model.yaml").write_text(yaml.safe_dump(
        {"world_model": {"kind": "tiny", "decoder": "light", "light_decoder": "light_decoder"}}))
    cfg, path = read_world_model_yaml(ck)
    assert path == ck / "world_model.yaml" and cfg.light_decoder == str((ck / "light_decoder").resolve())
    assert WorldModel.from_config(cfg).light_decoder is not None
    (ck / "world_model.yaml").write_text(yaml.safe_dump({"world_model": {"kind": "tiny", "decoder": "light"}}))
    with pytest.raises(ConfigError) as e:
        read_world_model_yaml(ck)
    assert one_line(e).startswith(f"{ck / 'world_model.yaml'}: world_model: light_decoder:")


# ---- the committed demo export -----------------------------------------------------------------------
def test_the_deployed_student_decodes_through_the_committed_light_decoder():
    """checkpoints/demo/world_model_student.yaml (what make demo deploys) loads the light decoder and
    every chunk it generates is decoded by it, not by the VAE."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
    cfg, path = read_world_model_yaml(root / "world_model_student.yaml")
    assert cfg.sampler == "student" and cfg.decoder == "light"
    assert cfg.light_decoder == str((root / "light_decoder").resolve())
    wm = WorldModel.from_config(cfg)
    assert isinstance(wm.light_decoder, LightDecoder)
    light_calls = _count(wm.light_decoder)
    vae_calls = []
    vae_decode = wm.c.vae.decode
    wm.c.vae.decode = lambda *a, **k: (vae_calls.append(1), vae_decode(*a, **k))[1]
    img = np.random.default_rng(1).integers(0, 256, (wm.height, wm.width, 3), dtype=np.uint8)
    frames = wm.generate(img, "pick up the block", seed=0)
    assert frames.shape == (wm.num_frames, wm.height, wm.width, 3)
    assert len(light_calls) == 1 and vae_calls == [] and wm.last_timing["decode"] > 0


def test_eva_demo_deploys_the_student_with_the_light_decoder_of_the_export():
    """eva-demo's student variant (eva_ros.demo.evaluation.variants) resolves light_decoder against the
    export, as the planner gets it, and builds a light-decoding model."""
    import json
    from pathlib import Path

    from eva_ros.demo.evaluation import variants

    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
    m = json.loads((ckpt / "manifest.json").read_text())
    s = variants(ckpt, m["config"]["model"], False, 4)["student"]
    assert s["decoder"] == "light" and s["light_decoder"] == str(ckpt / "light_decoder")
    assert isinstance(build_world_model({**s, "device": "cpu"}).light_decoder, LightDecoder)
    ld = m["light_decoder"]
    assert ld["steps"] >= 500 and ld["val_idm_action_error"] is not None and "train_light_decoder" in ld["command"]
