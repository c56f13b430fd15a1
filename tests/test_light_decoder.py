"""The light decoder (eva_core/world_model/light_decoder.py) and its trainer (training/train_light_decoder.py)."""

import json
import time

import numpy as np

import pytest
import torch
import yaml

from eva_core.world_model import encoders, tiny
from eva_core.world_model.light_decoder import (LightDecoder, LightDecoderCheckpointError, LightDecoderConfig,
                                                load_light_decoder, save_light_decoder)
from training import train_light_decoder as tld

pytestmark = pytest.mark.unit

SMALL = LightDecoderConfig(channels=[16, 8, 8, 8])


def test_decode_matches_the_vae_decode_shape_and_range():
    vae = tiny.build_tiny_vae()
    lat = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    dec = LightDecoder(LightDecoderConfig()).eval()
    ref = encoders.vae_decode(vae, lat)
    out = dec.decode(lat * 50)  # large inputs: still clamped to the VAE's range
    assert out.shape == ref.shape == (1, 3, 9, 48, 64)
    assert out.dtype == ref.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    with torch.no_grad():  # speed is printed, never asserted
        t0 = time.perf_counter()
        encoders.vae_decode(vae, lat)
        t1 = time.perf_counter()
        dec.decode(lat)
        t2 = time.perf_counter()
    print(f"tiny VAE decode {t1 - t0:.4f} s, light decoder {t2 - t1:.4f} s: x{(t1 - t0) / max(t2 - t1, 1e-9):.1f}")


def test_decode_is_causal_in_time():
    dec = LightDecoder(SMALL).eval()
    lat = torch.randn(1, 16, 3, 4, 4)
    changed = lat.clone()
    changed[:, :, 2] += 1.0  # the last latent frame only touches the last 4 frames
    a, b = dec.decode(lat), dec.decode(changed)
    assert torch.equal(a[:, :, :5], b[:, :, :5])
    assert not torch.equal(a[:, :, 5:], b[:, :, 5:])


def test_wrong_latent_channels_fail():
    with pytest.raises(ValueError, match="expected latents"):
        LightDecoder(SMALL)(torch.randn(1, 8, 2, 4, 4))


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(1)
    dec = LightDecoder(SMALL).eval()
    save_light_decoder(dec, tmp_path / "ld")
    back = load_light_decoder(tmp_path / "ld")
    assert back.config == dec.config
    sd, sd2 = dec.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    lat = torch.randn(2, 16, 2, 4, 4)
    assert torch.equal(dec.decode(lat), back.decode(lat))
    assert json.loads((tmp_path / "ld" / "config.json").read_text())["format"] == "eva_ros.light_decoder"


def _saved(tmp_path):
    d = save_light_decoder(LightDecoder(SMALL), tmp_path / "ld")
    return d, d / "config.json", d / "model.safetensors"


def test_truncated_weights_fail_naming_the_file(tmp_path):
    d, _, weights = _saved(tmp_path)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(LightDecoderCheckpointError, match="model.safetensors: not a readable safetensors"):
        load_light_decoder(d)


def test_mismatched_config_fails_naming_keys(tmp_path):
    d, cfg_file, _ = _saved(tmp_path)
    meta = json.loads(cfg_file.read_text())
    meta["config"]["channels"] = [16, 8, 8, 4]
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(LightDecoderCheckpointError, match=r"model.safetensors: does not match.*shape mismatch"):
        load_light_decoder(d)
    meta["config"]["channels"] = [16, 8, 8]  # fewer stages: weights in excess
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(LightDecoderCheckpointError, match=r"unexpected ups\.2"):
        load_light_decoder(d)


def test_unknown_config_key_and_bad_json_fail(tmp_path):
    d, cfg_file, _ = _saved(tmp_path)
    meta = json.loads(cfg_file.read_text())
    meta["config"]["chanels"] = [1]
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(LightDecoderCheckpointError, match=r"config.json: config: chanels: unknown key; did you mean 'channels'"):
        load_light_decoder(d)
    cfg_file.write_text("{not json")
    with pytest.raises(LightDecoderCheckpointError, match="config.json: not valid JSON"):
        load_light_decoder(d)
    cfg_file.write_text(json.dumps({"format": "eva_ros.idm", "version": 1, "config": {}}))
    with pytest.raises(LightDecoderCheckpointError, match="format is 'eva_ros.idm'"):
        load_light_decoder(d)


def test_demo_world_model_config_resolves_its_vae_dir():
    cfg, path = tld.world_model_config("checkpoints/demo")
    assert path.name == "world_model_grpo.yaml"
    assert cfg.vae_dir and cfg.vae_dir.endswith("checkpoints/demo/vae")


def _tiny_wm_yaml(tmp_path):
    p = tmp_path / "wm.yaml"
    p.write_text(yaml.safe_dump({"world_model": {"kind": "tiny", "height": 32, "width": 32, "num_frames": 5,
                                                 "scheduler": "euler", "num_steps": 2}}))
    return p


def test_training_lowers_the_loss_and_writes_outputs(tmp_path):
    out = tmp_path / "run"
    args = ["--set", f"world_model={_tiny_wm_yaml(tmp_path)}", "--set", "data.random=6", "--set", "train.steps=60",
            "--set", "train.batch_size=4", "--set", "train.channels=[16,8,8,8]", "--set", "train.lr=3e-3",
            "--set", "train.eval_every=30", "--set", "train.device=cpu", "--out", str(out), "--no-progress"]
    assert tld.main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["latent_shape"] == [16, 2, 4, 4] and s["frames_shape"] == [3, 5, 32, 32]
    assert s["train_mse_last10"] < 0.7 * s["train_mse_first10"]
    assert s["val_mse"] is not None and s["clips_val"] == 1
    assert (out / "loss.png").stat().st_size > 0
    assert any((out / "tb").iterdir())
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["steps"] == 60
    dec = load_light_decoder(out / "light_decoder")
    assert dec.config.channels == [16, 8, 8, 8]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no temp dir left behind
    # an existing non-empty output is refused (one line, exit 2) unless --overwrite
    assert tld.main(args) == 2
    assert tld.main([*args, "--set", "train.steps=2", "--overwrite"]) == 0  # the last --set wins


def test_training_needs_frames(tmp_path, capsys):
    assert tld.main(["--set", "world_model=x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--set: data: give training frames: sources, synthetic N and/or random N" in err
    assert "\n" not in err and not (tmp_path / "o").exists()


def test_a_yaml_typo_is_refused_by_name_before_the_output_is_touched(tmp_path, capsys):
    cfg = tmp_path / "ld.yaml"
    cfg.write_text(yaml.safe_dump({"world_model": "checkpoints/demo", "data": {"random": 2},
                                   "train": {"stpes": 10}}))
    out = tmp_path / "o"
    assert tld.main(["--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{cfg}: train: stpes: unknown key" in err and "did you mean 'steps'" in err and "\n" not in err
    assert not out.exists()
    cfg.write_text(yaml.safe_dump({"world_model": "checkpoints/demo", "data": {"random": 2}}))
    assert tld.main(["--config", str(cfg), "--set", "train.steps=-1", "--out", str(out)]) == 2
    assert f"{cfg}: train: steps:" in capsys.readouterr().err and not out.exists()
    assert tld.main(["--set", "world_model=nowhere", "--set", "data.random=2", "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err and not out.exists()
    assert tld.main(["--set", "world_model=checkpoints/demo", "--set", "data.sources=[nodata]", "--out", str(out)]) == 2
    assert "data.sources: nodata: no such file or directory" in capsys.readouterr().err and not out.exists()


def test_the_committed_demo_config_parses():
    c = tld.load_config(tld.LightDecoderTrainConfig, "config/training/light_decoder_demo.yaml")
    assert c.world_model == "checkpoints/demo" and c.train.channels == [96, 48, 24, 16]
    assert c.train.idm_weight > 0 and c.train.idm == "checkpoints/demo/idm"    # task-aware by default
    assert "checkpoints/demo/world_model_student.yaml" in c.data.twin.generate and c.data.twin.demos


# ---- the IDM-consistency loss --------------------------------------------------------------------------
DEMO_IDM = "checkpoints/demo/idm"


def test_idm_loss_is_zero_on_the_target_and_its_gradient_reaches_the_frames():
    idm, active = tld.load_frozen_idm(DEMO_IDM, "cpu")
    assert active.any() and not active.all()          # the dims the IDM's data never moved are left out
    assert all(not q.requires_grad for q in idm.parameters())
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 9, 48, 64, generator=g) * 2 - 1
    out = (target + 0.3 * torch.randn(target.shape, generator=g)).requires_grad_(True)
    assert tld.idm_loss(idm, active, target, target).item() == 0.0
    loss = tld.idm_loss(idm, active, out, target)
    loss.backward()
    assert loss.item() > 0 and out.grad is not None and out.grad.abs().sum() > 0


def test_idm_outputs_are_the_idm_predict_actions():
    """The differentiable path sees what IDM.predict (the reward) sees: same windows, same preprocessing."""
    idm, _ = tld.load_frozen_idm(DEMO_IDM, "cpu")
    video = torch.rand(2, 3, 9, 48, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        mine = idm.denormalize(tld.idm_outputs(idm, video))
    ref = idm.predict(((video + 1) / 2).permute(0, 2, 1, 3, 4))
    assert torch.allclose(mine, ref, atol=1e-4)


def test_training_with_the_idm_loss_lowers_it_and_reports_the_action_error(tmp_path):
    out = tmp_path / "run"
    args = ["--set", f"world_model={_tiny_wm_yaml(tmp_path)}", "--set", "data.random=6", "--set", "train.steps=60",
            "--set", "train.batch_size=4", "--set", "train.channels=[16,8,8,8]", "--set", "train.lr=3e-3",
            "--set", f"train.idm={DEMO_IDM}", "--set", "train.idm_weight=1.0", "--set", "train.eval_every=30",
            "--set", "train.device=cpu", "--out", str(out), "--no-progress"]
    assert tld.main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["idm_loss_last10"] < s["idm_loss_first10"]
    assert [st for st, _ in s["val_idm_action_error_history"]] == [30, 60] and s["val_idm_action_error"] >= 0
    assert s["train_mse_last10"] < s["train_mse_first10"]


def test_an_idm_weight_without_an_idm_is_refused_by_name(tmp_path, capsys):
    out = tmp_path / "o"
    assert tld.main(["--set", "world_model=checkpoints/demo", "--set", "data.random=2",
                     "--set", "train.idm_weight=0.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "train: idm: idm_weight > 0 needs an IDM checkpoint directory" in err and "\n" not in err
    assert not out.exists()
    assert tld.main(["--set", "world_model=checkpoints/demo", "--set", "data.twin.generate=[x.yaml]",
                     "--out", str(out)]) == 2
    assert "data.twin: tasks: demos / generate need twin tasks and reset_seeds" in capsys.readouterr().err


def test_generated_latents_are_the_models_chunks_before_decoding(tmp_path):
    wm_yaml = _tiny_wm_yaml(tmp_path)
    cfg, _ = tld.world_model_config(wm_yaml)
    twin = tld.TwinSection(tasks=["pick_block_narrow"], reset_seeds=[0], generate=[str(wm_yaml)], gen_seeds=2)
    lat = tld.generated_latents(twin, cfg, progress=False)
    assert lat.shape == (2, 16, 2, 4, 4) and not torch.equal(lat[0], lat[1])   # two seeds, two chunks


def test_clips_use_the_shared_crop_and_resize():
    """The trainer's clips are eva_core.data.video_clips.fit_frames, the world model's to_tensor per frame."""
    from eva_core.world_model import WorldModel

    cfg = tld.WorldModelConfig.tiny_default(height=32, width=48, num_frames=5)
    frames = np.random.default_rng(0).integers(0, 256, (7, 40, 90, 3), dtype=np.uint8)
    clips = tld.clips_of([frames], cfg, stride=2)
    assert len(clips) == 2 and clips[0].shape == (3, 5, 32, 48)
    wm = WorldModel.__new__(WorldModel)
    wm.cfg = cfg
    assert torch.allclose(clips[1][:, 0], wm.to_tensor(frames[2]), atol=1e-6)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_weights_fail_naming_the_file_and_tensor(tmp_path, value):
    """#23 item 6: a checkpoint that trained into NaN, or a tampered one, is refused on load."""
    from safetensors.torch import load_file, save_file

    d, _, weights = _saved(tmp_path)
    sd = load_file(str(weights))
    key = sorted(sd)[1]
    sd[key].view(-1)[0] = value
    save_file(sd, str(weights))
    with pytest.raises(LightDecoderCheckpointError) as e:
        load_light_decoder(d)
    assert str(e.value) == f"{weights}: tensor {key!r} holds NaN/inf" and "\n" not in str(e.value)
    sd[key].view(-1)[0] = 0.0   # the same file, clean, loads
    save_file(sd, str(weights))
    load_light_decoder(d)
