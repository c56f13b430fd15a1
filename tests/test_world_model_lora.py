"""LoRA on the tiny Wan transformer: add / disable / save / load (diffusers and peft files) / merge."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from eva_core.world_model import WorldModel, WorldModelConfig, lora, tiny

pytestmark = pytest.mark.unit

torch.set_num_threads(1)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    s = tiny.TINY_DEFAULTS
    return dict(
        hidden_states=torch.randn(1, 36, 2, 8, 8, generator=g),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 512, s["text_dim"], generator=g),
        encoder_hidden_states_image=torch.randn(1, 5, s["image_dim"], generator=g),
        return_dict=False,
    )


@torch.no_grad()
def out(model, x):
    return model(**x)[0]


def adapted(seed=3):
    """A tiny transformer with a random (non-zero) adapter, so the adapter visibly changes outputs."""
    model = tiny.build_tiny_transformer({"seed": 5})
    torch.manual_seed(seed)
    lora.add_lora(model, rank=4, alpha=8, init_lora_weights=False)
    return model


def test_targets_are_evas():
    model = adapted()
    wrapped = {n.rsplit(".", 1)[0] for n in lora.lora_state_dict(model)}
    names = {n.split(".", 2)[2].rsplit(".lora", 1)[0] for n in wrapped}
    assert names == {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                     "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
                     "attn2.add_k_proj", "attn2.add_v_proj"}
    cfg = lora.lora_config()
    assert (cfg.r, cfg.lora_alpha) == (32, 32)  # EVA's defaults


def test_default_init_is_identity_and_disable_restores_base():
    x = inputs()
    base = tiny.build_tiny_transformer({"seed": 5})
    ref = out(base, x)
    lora.add_lora(base)  # r=32, alpha=32, B=0
    torch.testing.assert_close(out(base, x), ref, rtol=0, atol=0)

    model = adapted()
    with_adapter = out(model, x)
    assert not torch.allclose(with_adapter, ref, atol=1e-4)
    lora.disable_lora(model)
    torch.testing.assert_close(out(model, x), ref, rtol=0, atol=0)
    lora.enable_lora(model)
    torch.testing.assert_close(out(model, x), with_adapter, rtol=0, atol=0)


def test_save_load_round_trip_identical(tmp_path):
    x = inputs(1)
    model = adapted()
    expected = out(model, x)
    lora.save_lora(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / lora.DIFFUSERS_LORA_FILE).is_file()

    fresh = tiny.build_tiny_transformer({"seed": 5})
    lora.load_lora(fresh, tmp_path / "adapter")
    torch.testing.assert_close(out(fresh, x), expected, rtol=0, atol=0)
    lora.disable_lora(fresh)
    torch.testing.assert_close(out(fresh, x), out(tiny.build_tiny_transformer({"seed": 5}), x), rtol=0, atol=0)


def test_load_peft_save_pretrained_layout(tmp_path):
    """peft's save_pretrained layout: base_model.model.-prefixed keys + adapter_config.json."""
    x = inputs(2)
    model = adapted()
    expected = out(model, x)
    d = tmp_path / "peft"
    d.mkdir()
    save_file({"base_model.model." + k: v.contiguous() for k, v in lora.lora_state_dict(model).items()},
              str(d / lora.PEFT_LORA_FILE))
    cfg = model.peft_config["default"].to_dict()
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
    (d / lora.PEFT_CONFIG_FILE).write_text(json.dumps(cfg, default=str))
    fresh = tiny.build_tiny_transformer({"seed": 5})
    lora.load_lora(fresh, d)
    torch.testing.assert_close(out(fresh, x), expected, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:While injecting the PEFT adapters")
def test_mismatched_adapter_fails_naming_keys(tmp_path):
    lora.save_lora(adapted(), tmp_path / "a")
    deeper = tiny.build_tiny_transformer({"seed": 5, "num_layers": 3})
    with pytest.raises(KeyError, match=r"blocks\.2\.attn1\.to_k"):
        lora.load_lora(deeper, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        lora.load_lora(deeper, tmp_path)


def test_merge_for_deployment():
    x = inputs(3)
    model = adapted()
    expected = out(model, x)
    lora.merge_lora(model)
    assert not any("lora" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(out(model, x), expected, rtol=1e-4, atol=1e-5)


def test_world_model_loads_lora_from_config(tmp_path):
    model = adapted()
    lora.save_lora(model, tmp_path / "ad")
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    base_cfg = WorldModelConfig.tiny_default(tiny={"seed": 5})
    plain = WorldModel.from_config(base_cfg).generate(img, "lift", seed=0)
    merged = WorldModel.from_config({**base_cfg.to_dict(), "lora": str(tmp_path / "ad")})
    assert not any("lora" in n for n, _ in merged.transformer.named_parameters())
    unmerged = WorldModel.from_config({**base_cfg.to_dict(), "lora": str(tmp_path / "ad"), "merge_lora": False})
    a, b = merged.generate(img, "lift", seed=0), unmerged.generate(img, "lift", seed=0)
    assert not np.array_equal(a, plain)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # merged == adapter up to float rounding


def _poison(file, value=float("nan")):
    """Put `value` into one tensor of a safetensors file; its key."""
    from safetensors.torch import load_file

    sd = load_file(str(file))
    key = sorted(sd)[2]
    sd[key].view(-1)[0] = value
    save_file(sd, str(file))
    return key


@pytest.mark.parametrize("layout", ["diffusers", "peft", "file"])
def test_a_lora_holding_nan_or_inf_is_refused_naming_the_file_and_tensor(tmp_path, layout):
    """#23 item 6: every LoRA layout is checked for finite weights on load; a clean copy loads."""
    model = adapted()
    d = lora.save_lora(model, tmp_path / "adapter")
    if layout == "peft":   # peft's save_pretrained layout, as in test_load_peft_save_pretrained_layout
        (d / lora.DIFFUSERS_LORA_FILE).unlink()
        save_file({"base_model.model." + k: v.contiguous() for k, v in lora.lora_state_dict(model).items()},
                  str(d / lora.PEFT_LORA_FILE))
    if layout == "file":   # one Wan LoRA file in the diffusers key layout (load_wan_lora_file)
        save_file({"transformer." + k: v.contiguous() for k, v in lora.lora_state_dict(model).items()},
                  str(tmp_path / "wan_lora.safetensors"))
    src = d if layout != "file" else tmp_path / "wan_lora.safetensors"
    weights = src if layout == "file" else d / (lora.PEFT_LORA_FILE if layout == "peft" else lora.DIFFUSERS_LORA_FILE)
    clean = weights.read_bytes()
    key = _poison(weights, float("inf") if layout == "file" else float("nan"))
    fresh = tiny.build_tiny_transformer({"seed": 5})
    with pytest.raises(ValueError) as e:
        lora.load_lora(fresh, src)
    msg = str(e.value)
    assert msg.startswith(f"{weights}: tensor ") and "holds NaN/inf" in msg and "\n" not in msg, msg
    name = key.removeprefix("transformer.").removeprefix("base_model.model.").replace(".default", "")
    assert name in msg, (name, msg)
    assert "default" not in getattr(fresh, "peft_config", {})   # nothing half-loaded stays behind
    weights.write_bytes(clean)
    lora.load_lora(fresh, src)
