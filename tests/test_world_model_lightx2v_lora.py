"""A distilled Wan LoRA in lightx2v's key layout (original Wan names under "diffusion_model.",
lora_down/lora_up + alpha, diff_b biases, norm diffs), stacked on the world model's transformer
through diffusers' converter and sampled in the distilled mode. The file is SYNTHETIC, written
here for the tiny architecture; the real one is the rank-64 Wan2.1-I2V-14B-480P
StepDistill-CfgDistill LoRA."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from eva_core.world_model import WorldModel, WorldModelConfig, lora

pytestmark = pytest.mark.unit

torch.set_num_threads(1)
RANK, ALPHA = 4, 2.0
# original Wan name -> diffusers module, as diffusers' _convert_non_diffusers_wan_lora_to_diffusers maps them
LAYERS = {**{f"self_attn.{o}": f"attn1.{d}" for o, d in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"))},
          **{f"cross_attn.{o}": f"attn2.{d}" for o, d in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"))},
          "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
          "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
DISTILLED = dict(scheduler="step_distill", num_steps=4, shift=5.0, hist_guidance=0.0, lang_guidance=0.0)
IMG = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def module(tr, name):
    return tr.get_submodule(name)


def write_lightx2v_lora(path, tr, num_blocks=None, rank=RANK, seed=0, in_scale=1.0):
    """lightx2v layout for `tr`'s shapes: every block's attention, image-attention and FFN layers."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(num_blocks if num_blocks is not None else len(tr.blocks)):
        for orig, diff in LAYERS.items():
            lin = module(tr, f"blocks.{min(i, len(tr.blocks) - 1)}.{diff}")
            key = f"diffusion_model.blocks.{i}.{orig}"
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, int(lin.in_features * in_scale), generator=g) * 0.2
            sd[f"{key}.lora_up.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.2
            sd[f"{key}.alpha"] = torch.tensor(ALPHA)
            sd[f"{key}.diff_b"] = torch.randn(lin.out_features, generator=g) * 0.1
        sd[f"diffusion_model.blocks.{i}.norm3.diff"] = torch.zeros(4)   # dropped by the converter
    save_file(sd, str(path))
    return sd


def test_the_lightx2v_layout_is_converted_and_merged_as_computed_by_hand(tmp_path):
    base = WorldModel.from_config(WorldModelConfig.tiny_default(**DISTILLED))
    f = tmp_path / "lightx2v_i2v_distill_lora.safetensors"
    sd = write_lightx2v_lora(f, base.transformer)
    wm = WorldModel.from_config(WorldModelConfig.tiny_default(**DISTILLED, lora=str(f)))   # merged
    for orig, diff in (("self_attn.q", "attn1.to_q"), ("cross_attn.v_img", "attn2.add_v_proj"), ("ffn.2", "ffn.net.2")):
        key = f"diffusion_model.blocks.1.{orig}"
        before, after = module(base.transformer, f"blocks.1.{diff}"), module(wm.transformer, f"blocks.1.{diff}")
        delta = (ALPHA / RANK) * sd[f"{key}.lora_up.weight"] @ sd[f"{key}.lora_down.weight"]
        torch.testing.assert_close(after.weight, before.weight + delta, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(after.bias, before.bias + sd[f"{key}.diff_b"], rtol=1e-5, atol=1e-6)
    # untouched layers stay the base ones; the output changes
    torch.testing.assert_close(wm.transformer.proj_out.weight, base.transformer.proj_out.weight)
    out, ref = wm.generate(IMG, "pick", seed=0), base.generate(IMG, "pick", seed=0)
    assert wm.last_timing["transformer_calls"] == 4 and not np.array_equal(out, ref)


def test_unmerged_lora_stacks_on_an_adapter(tmp_path):
    """A LoRA file kept as an adapter gives the same outputs as the merged one."""
    base = WorldModel.from_config(WorldModelConfig.tiny_default(**DISTILLED))
    f = tmp_path / "l.safetensors"
    write_lightx2v_lora(f, base.transformer)
    merged = WorldModel.from_config(WorldModelConfig.tiny_default(**DISTILLED, lora=str(f)))
    kept = WorldModel.from_config(WorldModelConfig.tiny_default(**DISTILLED, lora=str(f), merge_lora=False))
    assert "default" in kept.transformer.peft_config
    a, b = merged.generate(IMG, "pick", seed=0), kept.generate(IMG, "pick", seed=0)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("make, match", [
    (lambda p, tr: write_lightx2v_lora(p, tr, num_blocks=len(tr.blocks) + 2), "layers the transformer lacks"),
    (lambda p, tr: write_lightx2v_lora(p, tr, in_scale=2.0), "does not fit the transformer"),
    (lambda p, tr: save_file({"model.blocks.0.weight": torch.zeros(2)}, str(p)), "not a Wan transformer LoRA"),
    (lambda p, tr: p.write_bytes(b"not a safetensors file"), "cannot read or convert"),
])
def test_a_malformed_or_mismatched_lora_fails_naming_the_file(tmp_path, make, match):
    wm = WorldModel.from_config(WorldModelConfig.tiny_default(**DISTILLED))
    f = tmp_path / "bad_lora.safetensors"
    make(f, wm.transformer)
    with pytest.raises((ValueError, KeyError)) as e:
        lora.load_lora(wm.transformer, f)
    assert str(f) in str(e.value) and match in str(e.value)
    assert "default" not in getattr(wm.transformer, "peft_config", {})   # nothing half-loaded
    with pytest.raises((ValueError, KeyError), match="bad_lora.safetensors"):
        WorldModel.from_config(WorldModelConfig.tiny_default(lora=str(f)))
