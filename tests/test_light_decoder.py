"""The light decoder (eva_core/world_model/light_decoder.py) and its trainer (training/train_light_decoder.py)."""

import json
import time

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
    args = ["--world-model", str(_tiny_wm_yaml(tmp_path)), "--random", "6", "--steps", "60", "--batch-size", "4",
            "--channels", "16,8,8,8", "--lr", "3e-3", "--eval-every", "30", "--out", str(out), "--no-progress",
            "--device", "cpu"]
    assert tld.main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["latent_shape"] == [16, 2, 4, 4] and s["frames_shape"] == [3, 5, 32, 32]
    assert s["train_mse_last10"] < 0.7 * s["train_mse_first10"]
    assert s["val_mse"] is not None and s["clips_val"] == 1
    assert (out / "loss.png").stat().st_size > 0
    assert any((out / "tb").iterdir())
    dec = load_light_decoder(out / "light_decoder")
    assert dec.config.channels == [16, 8, 8, 8]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no temp dir left behind
    # an existing non-empty output is refused (one line, exit 2) unless --overwrite
    assert tld.main(args) == 2
    assert tld.main([*args, "--steps", "2", "--overwrite"]) == 0  # the last --steps wins


def test_training_needs_frames(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tld.parse_args(["--world-model", "x", "--out", str(tmp_path / "o")])
    assert "--data, --synthetic N and/or --random N" in capsys.readouterr().err
