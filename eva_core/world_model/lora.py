"""LoRA on the Wan transformer through peft (diffusers' PeftAdapterMixin).

EVA targets q, k, v, o, k_img, v_img with rank 32 and alpha 32; in diffusers names these are
to_q, to_k, to_v, to_out.0, add_k_proj, add_v_proj (self- and cross-attention).

Files: `save_lora` writes diffusers' `pytorch_lora_weights.safetensors` (peft key names, the
LoraConfig in the safetensors metadata). `load_lora` reads that, or a peft `save_pretrained`
directory (`adapter_model.safetensors` + `adapter_config.json`), and checks every key loaded.
A single `.safetensors` file is a Wan LoRA in the original layout (`diffusion_model.blocks.N.
self_attn.q.lora_down.weight`, ...: lightx2v's StepDistill-CfgDistill LoRA, ComfyUI/Kijai files),
converted by diffusers (`load_wan_lora_file`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from eva_core.atomic_io import atomic_dir
from eva_core.world_model.checkpoint import require_finite

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj")
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
PEFT_LORA_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"


def lora_config(rank: int = 32, alpha: float = 32.0, targets=LORA_TARGETS, dropout: float = 0.0,
                init_lora_weights: bool | str = True):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout,
                      init_lora_weights=init_lora_weights)


def add_lora(transformer, adapter_name: str = "default", rank: int = 32, alpha: float = 32.0,
             targets=LORA_TARGETS, dropout: float = 0.0, init_lora_weights: bool | str = True) -> None:
    """Add a trainable adapter (B = 0 at init, so the output is unchanged until trained)."""
    transformer.add_adapter(lora_config(rank, alpha, targets, dropout, init_lora_weights), adapter_name=adapter_name)
    transformer.set_adapter(adapter_name)


def enable_lora(transformer) -> None:
    transformer.enable_adapters()


def disable_lora(transformer) -> None:
    """Base-model outputs (the Flow-GRPO reference policy) without removing the adapter."""
    transformer.disable_adapters()


def lora_state_dict(transformer, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=adapter_name)


def save_lora(transformer, out_dir: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write the adapter atomically in diffusers format (+ adapter_config.json for reading)."""
    if adapter_name not in getattr(transformer, "peft_config", {}):
        raise KeyError(f"no LoRA adapter named {adapter_name!r} on the transformer")
    with atomic_dir(out_dir) as tmp:
        transformer.save_lora_adapter(tmp, adapter_name=adapter_name, weight_name=DIFFUSERS_LORA_FILE)
        cfg = transformer.peft_config[adapter_name].to_dict()
        cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
        (tmp / PEFT_CONFIG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n")
    return Path(out_dir)


def _read_peft_dir(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    sd = load_file(str(path / PEFT_LORA_FILE))
    sd = {k.removeprefix("base_model.model."): v for k, v in sd.items()}
    # peft drops the adapter name from saved keys ("...lora_A.weight"), which is what diffusers expects
    meta = json.loads((path / PEFT_CONFIG_FILE).read_text())
    return sd, meta


def load_lora(transformer, path: str | os.PathLike, adapter_name: str = "default") -> None:
    """Load an adapter saved by `save_lora` (diffusers) or peft `save_pretrained`; strict keys."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix == ".safetensors" and not path.is_dir():
        return load_wan_lora_file(transformer, path, adapter_name)
    if (path / DIFFUSERS_LORA_FILE).is_file():
        with safe_open(str(path / DIFFUSERS_LORA_FILE), framework="pt") as f:  # the header only
            file_keys = set(f.keys())
        transformer.load_lora_adapter(str(path), prefix=None, adapter_name=adapter_name,
                                      weight_name=DIFFUSERS_LORA_FILE)
    elif (path / PEFT_LORA_FILE).is_file() and (path / PEFT_CONFIG_FILE).is_file():
        sd, meta = _read_peft_dir(path)
        file_keys = set(sd)
        meta = {k: v for k, v in meta.items() if k in _LORA_CONFIG_FIELDS}
        transformer.load_lora_adapter(sd, prefix=None, adapter_name=adapter_name, metadata=meta)
    else:
        raise FileNotFoundError(
            f"no LoRA adapter in {path}: expected {DIFFUSERS_LORA_FILE} or {PEFT_LORA_FILE} + {PEFT_CONFIG_FILE}")
    loaded = set(lora_state_dict(transformer, adapter_name))
    missing, unexpected = loaded - file_keys, file_keys - loaded
    # peft injects only where the file has weights: a target layer left without LoRA is a mismatch too
    uncovered = _uncovered_targets(transformer, adapter_name)
    if missing or unexpected or uncovered:
        transformer.delete_adapters(adapter_name)
        raise KeyError(f"LoRA adapter {path} does not match the transformer: target layers without weights in "
                       f"the file: {sorted(uncovered)[:8]}; missing keys: {sorted(missing)[:8]}; "
                       f"unexpected keys: {sorted(unexpected)[:8]}")
    weights = path / (DIFFUSERS_LORA_FILE if (path / DIFFUSERS_LORA_FILE).is_file() else PEFT_LORA_FILE)
    _require_finite_adapter(transformer, adapter_name, weights)
    transformer.set_adapter(adapter_name)


def _require_finite_adapter(transformer, adapter_name: str, source) -> None:
    """An adapter holding NaN/inf is deleted again and refused, naming `source` and the tensor."""
    try:
        require_finite(lora_state_dict(transformer, adapter_name), str(source))
    except ValueError:
        transformer.delete_adapters(adapter_name)
        raise


def load_wan_lora_file(transformer, path: str | os.PathLike, adapter_name: str = "default") -> None:
    """A Wan LoRA file in the original or diffusers key layout, through diffusers'
    `WanLoraLoaderMixin.lora_state_dict` (which converts "diffusion_model." keys: lora_down/up or
    lora_A/B, `.alpha` folded into the weights, `.diff_b` as the LoRA bias, norm `.diff` dropped).
    Every converted key must land on the transformer; anything else raises naming the file."""
    from diffusers.loaders import WanLoraLoaderMixin

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    try:
        sd = WanLoraLoaderMixin.lora_state_dict(str(path))
    except Exception as exc:  # noqa: BLE001 - diffusers raises bare ValueError/KeyError on odd layouts
        raise ValueError(f"LoRA file {path}: diffusers cannot read or convert it: {exc!r}") from exc
    odd = sorted(k for k in sd if not k.startswith("transformer.") or "lora" not in k)
    if not sd or odd:
        raise ValueError(f"LoRA file {path}: not a Wan transformer LoRA (original 'diffusion_model.' or diffusers "
                         f"'transformer.' layout); keys: {odd[:4] or 'none'}")
    file_keys = {k.removeprefix("transformer.") for k in sd}
    require_finite(sd, str(path))   # keys as diffusers converted them ("transformer.blocks.0...")
    try:
        transformer.load_lora_adapter(sd, prefix="transformer", adapter_name=adapter_name)
    except Exception as exc:  # noqa: BLE001 - shape mismatches surface as RuntimeError inside peft
        if adapter_name in getattr(transformer, "peft_config", {}):
            transformer.delete_adapters(adapter_name)
        raise ValueError(f"LoRA file {path} does not fit the transformer: {exc}") from exc
    with warnings.catch_warnings():   # peft mistakes 1-D lora_B biases (diff_b) for unsaved FSDP shards
        warnings.filterwarnings("ignore", message=".*invalid shape.*")
        loaded = set(lora_state_dict(transformer, adapter_name)) if adapter_name in getattr(
            transformer, "peft_config", {}) else set()
    missing, unexpected = loaded - file_keys, file_keys - loaded
    if missing or unexpected:
        if adapter_name in getattr(transformer, "peft_config", {}):
            transformer.delete_adapters(adapter_name)
        raise KeyError(f"LoRA file {path} does not match the transformer: missing keys: {sorted(missing)[:8]}; "
                       f"keys for layers the transformer lacks: {sorted(unexpected)[:8]}")
    transformer.set_adapter(adapter_name)


def _uncovered_targets(transformer, adapter_name: str) -> list[str]:
    """Target-named linear layers of the transformer that received no LoRA weights."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = transformer.peft_config[adapter_name].target_modules
    if isinstance(targets, str):  # a regex: peft matched it itself
        return []
    out = []
    for name, module in transformer.named_modules():
        if any(name == t or name.endswith("." + t) for t in targets) and isinstance(module, torch.nn.Linear):
            out.append(name)  # a plain Linear (not a LoRA layer) under a target name
        elif isinstance(module, BaseTunerLayer) and adapter_name not in module.lora_A:
            out.append(name)
    return out


def merge_lora(transformer, lora_scale: float = 1.0) -> None:
    """Fold the active adapter(s) into the base weights and remove the LoRA layers (deployment)."""
    transformer.fuse_lora(lora_scale=lora_scale)
    transformer.unload_lora()


# LoraConfig fields accepted as diffusers `metadata` (the rest of a peft adapter_config is bookkeeping)
_LORA_CONFIG_FIELDS = {
    "r", "lora_alpha", "target_modules", "lora_dropout", "bias", "use_rslora", "use_dora",
    "rank_pattern", "alpha_pattern", "init_lora_weights", "lora_bias",
}
