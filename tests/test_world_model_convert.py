"""LVP/EVA Lightning checkpoint -> diffusers transformer: eva-convert-ckpt and the loading paths."""

import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from eva_core.config import ConfigError
from eva_core.world_model import WorldModel, WorldModelConfig
from eva_core.world_model import checkpoint as ck
from eva_core.world_model import convert, tiny

pytestmark = pytest.mark.ros

torch.set_num_threads(1)

# Test-data generation only: diffusers names -> original Wan names (the inverse of diffusers' Wan converter).
_INVERSE = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
]


def to_original_key(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    key = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", key)
    key = re.sub(r"^(blocks\.\d+)\.norm2\.", r"\1.norm3.", key)  # diffusers norm2 == original norm3
    for new, old in _INVERSE:
        key = key.replace(new, old)
    return key


@pytest.fixture(scope="module")
def source():
    model = tiny.build_tiny_transformer({"seed": 7})
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    orig = {to_original_key(k): v for k, v in sd.items()}
    assert len(orig) == len(sd)
    assert "blocks.0.cross_attn.k_img.weight" in orig and "head.modulation" in orig
    return model, sd, orig


def write_lightning(path, orig, extra=None):
    ckpt = {"state_dict": {"model." + k: v for k, v in orig.items()}, "epoch": 3, "global_step": 1200}
    ckpt["state_dict"]["vae.encoder.conv1.weight"] = torch.zeros(2, 2)  # other Lightning submodules are ignored
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return path


def test_convert_cli_round_trip_bit_identical(tmp_path, source):
    from diffusers import WanTransformer3DModel

    model, sd, orig = source
    cfg_dir = tmp_path / "cfg"
    model.save_config(cfg_dir)
    ckpt = write_lightning(tmp_path / "eva.ckpt", orig)
    out = tmp_path / "converted"
    assert convert.main(["--ckpt", str(ckpt), "--config", str(cfg_dir), "--out", str(out)]) == 0
    reloaded = WanTransformer3DModel.from_pretrained(out).state_dict()
    assert set(reloaded) == set(sd)
    for k, v in sd.items():
        assert reloaded[k].dtype == v.dtype, k
        assert torch.equal(reloaded[k], v), k
    assert not list(tmp_path.glob(".converted.*")), "atomic temp dir left behind"


def test_console_script_help():
    res = subprocess.run([sys.executable, "-m", "eva_core.world_model.convert", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--trust-pickle" in res.stdout and "--ckpt" in res.stdout


@pytest.mark.parametrize("damage", ["missing", "renamed"])
def test_bad_key_fails_naming_it(tmp_path, source, damage, capsys):
    model, _, orig = source
    model.save_config(tmp_path / "cfg")
    bad = dict(orig)
    if damage == "missing":
        del bad["blocks.1.cross_attn.k_img.weight"]
        expect = ["blocks.1.attn2.add_k_proj.weight"]
    else:
        bad["blocks.0.ffn.00.weight"] = bad.pop("blocks.0.ffn.0.weight")
        expect = ["blocks.0.ffn.net.0.proj.weight", "blocks.0.ffn.00.weight"]
    ckpt = write_lightning(tmp_path / "bad.ckpt", bad)
    with pytest.raises(ck.CheckpointKeyError) as err:
        convert.convert(str(ckpt), str(tmp_path / "cfg"), str(tmp_path / "out"))
    for key in expect:
        assert key in str(err.value)
    # the CLI reports the same, exits non-zero and writes nothing
    assert convert.main(["--ckpt", str(ckpt), "--config", str(tmp_path / "cfg"), "--out", str(tmp_path / "out")]) == 2
    assert expect[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_named(tmp_path, source):
    model, _, orig = source
    bad = dict(orig)
    bad["blocks.0.self_attn.q.weight"] = torch.zeros(3, 3)
    with pytest.raises(ck.CheckpointKeyError, match=r"blocks\.0\.attn1\.to_q\.weight"):
        ck.load_lightning_transformer(write_lightning(tmp_path / "s.ckpt", bad), dict(model.config))


def test_pickled_objects_need_trust_pickle(tmp_path, source):
    from diffusers import WanTransformer3DModel

    model, sd, orig = source
    model.save_config(tmp_path / "cfg")
    ckpt = write_lightning(tmp_path / "h.ckpt", orig, {"hyper_parameters": argparse.Namespace(lr=1e-5)})
    args = ["--ckpt", str(ckpt), "--config", str(tmp_path / "cfg"), "--out", str(tmp_path / "out")]
    with pytest.raises(ck.CheckpointReadError, match="--trust-pickle"):
        convert.convert(*args[1::2])
    assert convert.main(args) == 2
    assert convert.main(args + ["--trust-pickle", "--overwrite"]) == 0
    reloaded = WanTransformer3DModel.from_pretrained(tmp_path / "out").state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in sd.items())


def test_lightning_load_is_memory_mapped(tmp_path, source):
    model, sd, orig = source
    ckpt = write_lightning(tmp_path / "m.ckpt", orig)
    loaded = ck.load_lightning_transformer(ckpt, dict(model.config))
    w = loaded.blocks[0].attn2.add_k_proj.weight
    assert torch.equal(w, sd["blocks.0.attn2.add_k_proj.weight"])
    assert _is_mapped_from(w.data_ptr(), ckpt)  # a view of the mapped file, not a RAM copy
    assert not _is_mapped_from(sd["blocks.0.attn2.add_k_proj.weight"].data_ptr(), ckpt)


def _is_mapped_from(addr: int, path) -> bool:
    """Does address `addr` lie in a memory mapping of file `path`? (Linux /proc/self/maps)"""
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith(str(path)):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, source):
    """A diffusers-layout directory holding the tiny components (path (a))."""
    from eva_core.world_model.loading import build_tiny_components

    root = tmp_path_factory.mktemp("wan_tiny_diffusers")
    c = build_tiny_components(WorldModelConfig.tiny_default())
    c.transformer.save_pretrained(root / "transformer")
    c.vae.save_pretrained(root / "vae")
    c.text_encoder.save_pretrained(root / "text_encoder")
    c.tokenizer.save_pretrained(root / "tokenizer")
    c.image_encoder.save_pretrained(root / "image_encoder")
    c.scheduler.save_pretrained(root / "scheduler")
    return root, c


def _gen(cfg):
    wm = WorldModel.from_config(cfg)
    img = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    return wm, wm.generate(img, "stack the blocks", seed=3)


def test_three_loading_paths_agree(tmp_path, tiny_dir):
    root, comps = tiny_dir
    base = WorldModelConfig.tiny_default().to_dict()
    _, ref = _gen(base)
    _, via_dir = _gen({**base, "kind": "diffusers", "model_dir": str(root)})
    np.testing.assert_array_equal(via_dir, ref)

    # (b): the same transformer as an original-layout Lightning checkpoint, and converted once
    orig = {to_original_key(k): v for k, v in comps.transformer.state_dict().items()}
    ckpt = write_lightning(tmp_path / "lvp.ckpt", orig)
    wm, via_ckpt = _gen({**base, "kind": "lightning", "model_dir": str(root), "ckpt": str(ckpt)})
    np.testing.assert_array_equal(via_ckpt, ref)
    assert convert.main(["--ckpt", str(ckpt), "--config", str(root / "transformer"), "--out", str(tmp_path / "t")]) == 0
    _, via_converted = _gen({**base, "kind": "lightning", "model_dir": str(root), "ckpt": str(tmp_path / "t")})
    np.testing.assert_array_equal(via_converted, ref)


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="heigth: unknown key; did you mean 'height'"):
        WorldModelConfig.from_dict({"kind": "tiny", "heigth": 64})
    with pytest.raises(ConfigError, match="ckpt"):
        WorldModelConfig.from_dict({"kind": "lightning", "model_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        WorldModel.from_config({"kind": "diffusers", "model_dir": str(tmp_path / "nowhere")})


def _cli(tmp_path, source, *extra):
    model, _, orig = source
    model.save_config(tmp_path / "cfg")
    ckpt = write_lightning(tmp_path / "good.ckpt", orig)
    return ["--ckpt", str(ckpt), "--config", str(tmp_path / "cfg"), *extra]


def test_an_existing_out_dir_is_refused_without_overwrite_and_swapped_whole_with_it(tmp_path, source, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    args = _cli(tmp_path, source, "--out", str(out))
    assert convert.main(args) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"\neva-convert-ckpt: {out}: already exists; pass --overwrite to replace it\n") or \
        err == f"eva-convert-ckpt: {out}: already exists; pass --overwrite to replace it\n"
    assert (out / "precious.txt").read_text() == "user data"
    assert convert.main([*args, "--overwrite"]) == 0
    assert not (out / "precious.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg", "good.ckpt", "out"]  # nothing left beside


def test_a_file_at_out_is_never_replaced(tmp_path, source, capsys):
    f = tmp_path / "out"
    f.write_text("a file")
    for extra in ([], ["--overwrite"]):
        assert convert.main(_cli(tmp_path, source, "--out", str(f), *extra)) == 2
        assert "exists and is not a directory" in capsys.readouterr().err
    assert f.read_text() == "a file"


def test_a_failed_overwrite_keeps_the_old_dir(tmp_path, source, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("user data")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert, "save_transformer_dir", boom)
    assert convert.main(_cli(tmp_path, source, "--out", str(out), "--overwrite")) == 2
    assert (out / "precious.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg", "good.ckpt", "out"]


@pytest.mark.parametrize("damage, needle", [
    ("empty", "empty file (0 bytes)"),
    ("truncated", "not a readable torch checkpoint"),
    ("text", "not a readable torch checkpoint"),
])
def test_truncated_or_empty_input_is_one_line(tmp_path, source, capsys, damage, needle):
    args = _cli(tmp_path, source, "--out", str(tmp_path / "out"))
    ckpt = tmp_path / "good.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "text": b"hello"}[damage])
    assert convert.main(args) == 2
    msgs = [ln for ln in capsys.readouterr().err.split("\n") if ln.startswith("eva-convert-ckpt")]  # not tqdm's
    assert len(msgs) == 1 and msgs[0].startswith(f"eva-convert-ckpt: {ckpt}: ") and needle in msgs[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ck.CheckpointReadError):
        convert.main([*args, "--debug"])


# ---- #23 item 6: weights and statistics are finite on load; a failure names the file and tensor ----
@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_a_lightning_checkpoint_holding_nan_or_inf_is_refused_naming_the_tensor(tmp_path, source, capsys, value):
    model, _, orig = source
    model.save_config(tmp_path / "cfg")
    bad = {k: v.clone() for k, v in orig.items()}
    bad["blocks.1.self_attn.q.weight"].view(-1)[3] = value
    ckpt = write_lightning(tmp_path / "nan.ckpt", bad)
    with pytest.raises(ck.CheckpointValueError) as err:
        ck.load_lightning_transformer(ckpt, tmp_path / "cfg")
    assert str(err.value) == (f"{ckpt}: tensor 'blocks.1.attn1.to_q.weight (from model.blocks.1.self_attn.q.weight)' "
                              "holds NaN/inf")
    # eva-convert-ckpt refuses it in one line and writes nothing
    assert convert.main(["--ckpt", str(ckpt), "--config", str(tmp_path / "cfg"), "--out", str(tmp_path / "out")]) == 2
    msgs = [ln for ln in capsys.readouterr().err.split("\n") if ln.startswith("eva-convert-ckpt")]
    assert len(msgs) == 1 and "blocks.1.attn1.to_q.weight" in msgs[0] and "NaN/inf" in msgs[0], msgs
    assert not (tmp_path / "out").exists()
    ck.load_lightning_transformer(write_lightning(tmp_path / "ok.ckpt", orig), tmp_path / "cfg")   # clean: loads


def _poisoned_dir(model, out, key, value=float("nan")):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    clean = sd[key].clone()
    sd[key].view(-1)[0] = value
    model.load_state_dict(sd)
    model.save_pretrained(out)
    model.load_state_dict({**sd, key: clean})
    return out / "diffusion_pytorch_model.safetensors"


def test_a_transformer_dir_holding_nan_is_refused_naming_the_file_and_tensor(tmp_path):
    """A converted (eva-convert-ckpt) or student transformer dir, and kind diffusers' transformer/."""
    from eva_core.world_model.loading import load_components, load_lightning_or_converted

    model = tiny.build_tiny_transformer({"seed": 7})
    key = "blocks.0.ffn.net.2.weight"
    weights = _poisoned_dir(model, tmp_path / "t", key)
    with pytest.raises(ck.CheckpointValueError) as err:
        load_lightning_or_converted(str(tmp_path / "t"), tmp_path / "t", torch.float32)
    assert str(err.value) == f"{weights}: tensor {key!r} holds NaN/inf"
    cfg = WorldModelConfig.from_dict({**WorldModelConfig.tiny_default().to_dict(),
                                      "transformer_dir": str(tmp_path / "t")})
    with pytest.raises(ck.CheckpointValueError, match=f"{weights}: tensor '{key}' holds NaN/inf"):
        load_components(cfg)
    model.save_pretrained(tmp_path / "clean")
    load_lightning_or_converted(str(tmp_path / "clean"), tmp_path / "clean", torch.float32)


def test_a_sharded_transformer_dir_names_the_shard(tmp_path):
    model = tiny.build_tiny_transformer({"seed": 7})
    key = "blocks.1.attn2.to_k.weight"
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd[key].view(-1)[0] = float("inf")
    model.load_state_dict(sd)
    model.save_pretrained(tmp_path / "t", max_shard_size="20KB")
    index = json.loads((tmp_path / "t" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    with pytest.raises(ck.CheckpointValueError) as err:
        ck.require_finite_model(model, tmp_path / "t")
    assert str(err.value) == f"{tmp_path / 't' / index['weight_map'][key]}: tensor {key!r} holds NaN/inf"


def test_a_vae_with_nan_weights_or_statistics_is_refused_naming_the_file(tmp_path):
    from eva_core.world_model.loading import load_vae

    vae = tiny.build_tiny_vae(tiny.tiny_sizes({}))
    key = sorted(vae.state_dict())[0]
    weights = _poisoned_dir(vae, tmp_path / "vae", key)
    cfg = WorldModelConfig.from_dict({**WorldModelConfig.tiny_default().to_dict(), "vae_dir": str(tmp_path / "vae")})
    with pytest.raises(ck.CheckpointValueError) as err:
        load_vae(cfg)
    assert str(err.value) == f"{weights}: tensor {key!r} holds NaN/inf"
    vae.save_pretrained(tmp_path / "vae")   # clean weights, then a NaN statistic in its config
    load_vae(cfg)
    conf = json.loads((tmp_path / "vae" / "config.json").read_text())
    conf["latents_std"][2] = float("nan")
    (tmp_path / "vae" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ck.CheckpointValueError) as err:
        load_vae(cfg)
    assert str(err.value) == f"{tmp_path / 'vae' / 'config.json'}: latents_std[2] is nan, not a finite number"
