"""IDM checkpoints: EVA .pt layout (prefix, stats, strictness, weights_only) and our safetensors dir."""

import collections
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from eva_core.idm import IDMCheckpointError, IDMConfig, build_idm, export_eva_pt, load_idm, save_idm

pytestmark = pytest.mark.unit

torch.set_num_threads(1)
MEAN = torch.linspace(-0.5, 0.5, 14)
STD = torch.linspace(0.1, 1.5, 14)


@pytest.fixture(scope="module")
def eva_model():
    """A resnet_plus with random weights, as if trained by EVA (built by our code)."""
    torch.manual_seed(0)
    m = build_idm(IDMConfig(action_dim=14, variant="resnet_plus")).eval()
    with torch.no_grad():
        m.spatial_softmax.temperature.fill_(0.7)
    return m


def _eva_file(path, model, prefix="", stats="top"):
    """EVA's layout: {model_state_dict, optimizer_state_dict, step} (+ optional train_mean/std)."""
    sd = collections.OrderedDict((prefix + k, v.clone()) for k, v in model.state_dict().items())
    ckpt = {"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []}, "step": 1234}
    if stats == "top":
        ckpt["train_mean"], ckpt["train_std"] = MEAN.clone(), STD.clone()
    elif stats == "buffers":
        sd[prefix + "train_mean"], sd[prefix + "train_std"] = MEAN.clone(), STD.clone()
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("prefix,stats", [("", "top"), ("module.", "top"), ("model.", "buffers"), ("module.", None)])
def test_load_eva_layout_with_and_without_prefix_and_stats(tmp_path, eva_model, prefix, stats):
    path = _eva_file(tmp_path / "IDM_singleview.pt", eva_model, prefix, stats)
    m = load_idm(path)
    assert m.config.variant == "resnet_plus" and m.config.image_size == 512
    ref = eva_model.state_dict()
    got = m.state_dict()
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    if stats:
        assert torch.allclose(m.action_mean, MEAN) and torch.allclose(m.action_std, STD)
    else:
        assert torch.equal(m.action_mean, torch.zeros(14)) and torch.equal(m.action_std, torch.ones(14))
        with pytest.raises(IDMCheckpointError, match="train_mean"):
            load_idm(path, require_norm=True)


def test_eva_layout_predictions_match_the_source_model(tmp_path, eva_model):
    path = _eva_file(tmp_path / "idm.pt", eva_model, "module.", "top")
    m = load_idm(path)
    video = torch.rand(2, 3, 48, 64)
    with torch.inference_mode():
        x = eva_model.preprocess(video)[m.window_indices(2).reshape(-1)].reshape(2, 9, 512, 512)
        expected = eva_model(x) * STD + MEAN  # out * train_std + train_mean
    assert torch.allclose(m.predict(video), expected, atol=1e-4)


def test_strict_loading_rejects_a_missing_key_and_names_it(tmp_path, eva_model):
    path = tmp_path / "missing.pt"
    _eva_file(path, eva_model, "module.")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model_state_dict"]["module.mlp_head.4.weight"]
    torch.save(ckpt, path)
    with pytest.raises(IDMCheckpointError, match=r"missing keys \[mlp_head\.4\.weight\]") as e:
        load_idm(path)
    assert "missing.pt" in str(e.value)


def test_strict_loading_rejects_unexpected_and_misshaped_keys(tmp_path):
    m = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    sd = dict(m.state_dict())
    sd["extra_head.weight"] = torch.zeros(3)
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {}, "step": 0}, tmp_path / "u.pt")
    with pytest.raises(IDMCheckpointError, match=r"unexpected keys \[extra_head\.weight\]"):
        load_idm(tmp_path / "u.pt", config=m.config)
    sd = dict(m.state_dict())
    sd["mlp_head.6.bias"] = torch.zeros(7)
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {}, "step": 0}, tmp_path / "s.pt")
    with pytest.raises(IDMCheckpointError, match=r"mlp_head\.6\.bias"):
        load_idm(tmp_path / "s.pt", config=m.config)


def test_a_key_outside_the_wrapper_prefix_is_an_error(tmp_path):
    m = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    sd = {"module." + k: v for k, v in m.state_dict().items()}
    sd["stray.weight"] = torch.zeros(1)
    torch.save({"model_state_dict": sd}, tmp_path / "p.pt")
    with pytest.raises(IDMCheckpointError, match="stray.weight"):
        load_idm(tmp_path / "p.pt")


def test_numpy_stats_load_as_data(tmp_path):
    import numpy as np

    m = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    ckpt = {"model_state_dict": m.state_dict(), "optimizer_state_dict": {}, "step": np.int64(3),
            "train_mean": MEAN.numpy().astype(np.float64), "train_std": STD.numpy()}
    torch.save(ckpt, tmp_path / "np.pt")
    back = load_idm(tmp_path / "np.pt")
    assert torch.allclose(back.action_mean, MEAN) and torch.allclose(back.action_std, STD)


class _Arbitrary:
    """Any non-tensor class: a weights_only load must refuse to unpickle it."""


def test_bad_files_give_clear_errors(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "nokey.pt")
    with pytest.raises(IDMCheckpointError, match="model_state_dict"):
        load_idm(tmp_path / "nokey.pt")
    torch.save({"model_state_dict": {}, "x": _Arbitrary()}, tmp_path / "pickle.pt")
    with pytest.raises(IDMCheckpointError, match="weights_only"):  # arbitrary objects are refused
        load_idm(tmp_path / "pickle.pt")
    with pytest.raises(FileNotFoundError):
        load_idm(tmp_path / "nope.pt")
    good = torch.load(export_eva_pt(build_idm(IDMConfig(action_dim=14, variant="tiny")), tmp_path / "good.pt"), weights_only=True)
    torch.save({**good, "idm_config": {"variant": "resnet9000"}}, tmp_path / "badcfg.pt")
    with pytest.raises(IDMCheckpointError, match=r"badcfg\.pt: key 'idm_config'"):  # as config.json errors
        load_idm(tmp_path / "badcfg.pt")


@pytest.mark.parametrize("variant,fusion", [("tiny", "early"), ("tiny", "late"), ("resnet18", "late"), ("resnet18", "early")])
def test_export_eva_round_trip(tmp_path, variant, fusion):
    torch.manual_seed(1)
    m = build_idm(IDMConfig(action_dim=14, variant=variant, fusion=fusion, image_size=64 if variant == "resnet18" else None))
    m.set_normalization(MEAN, STD)
    path = export_eva_pt(m, tmp_path / "exported.pt", step=77)
    raw = torch.load(path, weights_only=True)  # plain EVA layout, loadable without our code
    assert {"model_state_dict", "optimizer_state_dict", "step", "train_mean", "train_std"} <= set(raw)
    assert raw["step"] == 77 and set(raw["model_state_dict"]) == set(m.state_dict())
    back = load_idm(path)
    assert back.config == m.config
    video = torch.rand(5, 3, 50, 70)
    assert torch.allclose(back.predict(video), m.predict(video), atol=1e-5)
    # Without the idm_config hint the variant is inferred from the weights.
    del raw["idm_config"]
    torch.save(raw, tmp_path / "bare.pt")
    inferred = load_idm(tmp_path / "bare.pt", config=None).config
    assert (inferred.variant, inferred.fusion, inferred.frame_offsets) == (variant, fusion, (-1, 0, 1))


def test_safetensors_dir_round_trip_and_strictness(tmp_path):
    torch.manual_seed(2)
    m = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    m.set_normalization(MEAN, STD)
    out = save_idm(m, tmp_path / "idm")
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["variant"] == "tiny" and len(meta["normalization"]["action_std"]) == 14
    back = load_idm(out)
    video = torch.rand(3, 3, 64, 64)
    assert torch.allclose(back.predict(video), m.predict(video), atol=1e-6)
    assert not list(tmp_path.glob(".idm*"))  # atomic: no temp dirs left
    w = load_file(str(out / "model.safetensors"))
    del w["spatial_softmax.temperature"]
    save_file(w, str(out / "model.safetensors"))
    with pytest.raises(IDMCheckpointError, match="spatial_softmax.temperature"):
        load_idm(out)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_a_broken_safetensors_file_names_the_file(tmp_path, damage):
    out = save_idm(build_idm(IDMConfig(action_dim=14, variant="tiny")), tmp_path / "idm")
    w = out / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"\x00" * 64}[damage])
    with pytest.raises(IDMCheckpointError, match="not a readable safetensors file") as e:
        load_idm(out)
    assert str(w) in str(e.value) and "\n" not in str(e.value)


def test_an_eva_file_without_the_action_head_is_a_checkpoint_error(tmp_path):
    payload = torch.load(export_eva_pt(build_idm(IDMConfig(action_dim=14, variant="tiny")), tmp_path / "a.pt"),
                         weights_only=True)
    del payload["model_state_dict"]["mlp_head.6.weight"], payload["idm_config"]
    torch.save(payload, tmp_path / "b.pt")
    with pytest.raises(IDMCheckpointError, match="b.pt: missing key 'mlp_head.6.weight'"):
        load_idm(tmp_path / "b.pt")


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", ""])
def test_a_broken_config_json_names_the_file(tmp_path, text):
    out = save_idm(build_idm(IDMConfig(action_dim=14, variant="tiny")), tmp_path / "idm")
    (out / "config.json").write_text(text)
    with pytest.raises(IDMCheckpointError, match="config.json: (invalid JSON|expected a JSON object)"):
        load_idm(out)


@pytest.mark.parametrize("change, problem", [
    ({"varaint": "tiny"}, "varaint: unknown key; did you mean 'variant'?"),
    ({"variant": "resnet9000"}, "variant: must be one of"),
    ({"image_size": 16}, "image_size: must be >= 32"),
])
def test_a_bad_config_in_config_json_fails_loudly_in_one_line_naming_the_file(tmp_path, change, problem):
    import json

    out = save_idm(build_idm(IDMConfig(action_dim=14, variant="tiny")), tmp_path / "idm")
    meta = json.loads((out / "config.json").read_text())
    meta["config"].update(change)
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(IDMCheckpointError) as e:
        load_idm(out)
    assert str(e.value).startswith(f"{out / 'config.json'}: key 'config': {problem}") and "\n" not in str(e.value)


# ---- NaN weights or statistics are refused on load, naming the file and the tensor ------------
def _tiny(tmp_path):
    model = build_idm(IDMConfig(variant="tiny", action_dim=14))
    model.set_normalization(torch.zeros(14), torch.ones(14))
    return save_idm(model, tmp_path / "idm"), model


def test_nan_weights_in_our_checkpoint_are_refused_naming_the_tensor(tmp_path):
    out, _ = _tiny(tmp_path)
    w = out / "model.safetensors"
    state = load_file(w)
    key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, w)
    with pytest.raises(IDMCheckpointError, match=rf"model.safetensors: tensor '{key}' holds NaN/inf"):
        load_idm(out)


@pytest.mark.parametrize("key", ["action_mean", "action_std"])
def test_nan_statistics_in_our_checkpoint_are_refused(tmp_path, key):
    out, _ = _tiny(tmp_path)
    meta = json.loads((out / "config.json").read_text())
    meta["normalization"][key][3] = float("nan")
    (out / "config.json").write_text(json.dumps(meta))   # json writes NaN, and reads it back
    with pytest.raises(IDMCheckpointError, match=rf"config.json: key 'normalization': {key} holds NaN/inf \(dims \[3\]\)"):
        load_idm(out)


def test_nan_weights_or_stats_in_an_eva_pt_are_refused(tmp_path):
    _, model = _tiny(tmp_path)
    pt = export_eva_pt(model, tmp_path / "idm.pt")
    ckpt = torch.load(pt, weights_only=True)
    ckpt["train_mean"] = torch.full((14,), float("inf"))
    torch.save(ckpt, pt)
    with pytest.raises(IDMCheckpointError, match=r"idm.pt: keys 'train_mean'/'train_std': action_mean holds NaN/inf"):
        load_idm(pt)
    ckpt = torch.load(pt, weights_only=True)
    ckpt["train_mean"] = torch.zeros(14)
    key = next(k for k, v in ckpt["model_state_dict"].items() if v.is_floating_point())
    ckpt["model_state_dict"][key] = torch.full_like(ckpt["model_state_dict"][key], float("nan"))
    torch.save(ckpt, pt)
    with pytest.raises(IDMCheckpointError, match=r"idm.pt: tensor '.*' holds NaN/inf"):
        load_idm(pt)
