"""LVP/EVA Lightning checkpoints -> diffusers `WanTransformer3DModel` weights.

The `.ckpt` holds `state_dict` with `model.`-prefixed keys in the original Wan layout (Wan2.1's own key names).
We strip the prefix, then rename with diffusers' own converter
(`convert_wan_transformer_to_diffusers`) and check the result strictly against the model.
Tensors are memory-mapped (`torch.load(mmap=True)`), so a 33 GB file is never copied into RAM;
`load_state_dict(assign=True)` keeps that single mapping.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import torch

from eva_core.state_dict import compare_state_dicts, describe_keys, nonfinite_tensors

log = logging.getLogger(__name__)

LIGHTNING_PREFIX = "model."
# Modules diffusers keeps in float32 when loading in half precision (WanTransformer3DModel)
_FP32_MODULES = ("rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read (empty, truncated, not a torch file); names the file."""


class CheckpointKeyError(KeyError):
    """The converted checkpoint does not match the model; the message names the keys."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class CheckpointValueError(ValueError):
    """Weights or statistics holding NaN/inf; the one-line message names the file and the tensor."""


def require_finite(state: dict, source: str, origin: dict[str, str] | None = None) -> None:
    """Refuse a state dict holding NaN/inf (a run that trained into NaN, a tampered file): it
    would load and generate NaN or garbage at run time. `origin`: key -> its name in the file."""
    def name(k: str) -> str:
        return f"{k} (from {LIGHTNING_PREFIX}{origin[k]})" if origin and k in origin else k

    bad = nonfinite_tensors(state)
    if bad:
        more = f" (and {len(bad) - 1} more: {describe_keys([name(k) for k in bad[1:]], 5)})" if len(bad) > 1 else ""
        raise CheckpointValueError(f"{source}: tensor {name(bad[0])!r} holds NaN/inf{more}")


def weights_file(model_dir: str | os.PathLike, key: str, weights_name: str = "diffusion_pytorch_model") -> Path:
    """The safetensors file of a `save_pretrained` directory that holds `key`: its shard (from the
    index) or the single weights file; the directory itself when neither says."""
    d = Path(model_dir)
    index = d / f"{weights_name}.safetensors.index.json"
    try:
        return d / json.loads(index.read_text())["weight_map"][key]
    except (OSError, ValueError, KeyError, TypeError):
        single = d / f"{weights_name}.safetensors"
        return single if single.is_file() else d


def require_finite_model(model: torch.nn.Module, model_dir: str | os.PathLike,
                         weights_name: str = "diffusion_pytorch_model") -> torch.nn.Module:
    """`require_finite` for a model `from_pretrained` loaded from `model_dir`, naming the file
    that holds the first bad tensor."""
    state = model.state_dict()
    bad = nonfinite_tensors(state)
    if bad:
        require_finite({k: state[k] for k in bad}, str(weights_file(model_dir, bad[0], weights_name)))
    return model


def require_finite_stats(config, keys, source: str) -> None:
    """Statistics a model config carries (e.g. the Wan VAE's latents_mean/latents_std) must be finite."""
    import math

    for key in keys:
        values = getattr(config, key, None) if not isinstance(config, dict) else config.get(key)
        flat = values if isinstance(values, (list, tuple)) else [] if values is None else [values]
        bad = [i for i, v in enumerate(flat) if not (isinstance(v, (int, float)) and math.isfinite(v))]
        if bad:
            raise CheckpointValueError(f"{source}: {key}[{bad[0]}] is {flat[bad[0]]!r}, not a finite number")


def load_torch_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> dict:
    """`torch.load` a pickle memory-mapped and with `weights_only=True`.

    A file holding other objects (optimizer classes, configs...) is refused with a clear message
    unless `trust_pickle=True`, which runs full unpickling: only for files you trust. An empty,
    truncated or foreign file is a `CheckpointReadError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointReadError(f"{path}: empty file (0 bytes)")
    kwargs = dict(map_location="cpu", weights_only=True)
    try:
        try:
            return torch.load(path, mmap=True, **kwargs)
        except RuntimeError as err:  # old (non-zip) serialization cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            log.warning("%s: legacy format, cannot mmap; loading into RAM", path)
            return torch.load(path, **kwargs)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise CheckpointReadError(
                f"{path}: holds Python objects that the safe loader (weights_only=True) refuses "
                f"({str(err).splitlines()[0] if str(err) else type(err).__name__}). Unpickling can run "
                "arbitrary code: if you trust where this file comes from, rerun with --trust-pickle "
                "(config: trust_pickle: true)."
            ) from None
        log.warning("%s: full unpickling (trust_pickle=True)", path)
        try:
            return torch.load(path, mmap=True, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - unpickling fails in many ways
            raise CheckpointReadError(f"{path}: cannot be unpickled: {_first_line(e)}") from e
    except CheckpointReadError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged pickle fails with any exception type
        raise CheckpointReadError(f"{path}: not a readable torch checkpoint (truncated or not written by "
                                  f"torch.save?): {_first_line(err)}") from err


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def lightning_transformer_state_dict(ckpt: dict, source: str = "checkpoint",
                                     prefix: str = LIGHTNING_PREFIX) -> dict[str, torch.Tensor]:
    """The `model.`-prefixed tensors of a Lightning checkpoint, prefix stripped (original Wan names).

    Other entries (`vae.*`, `clip.*`, `text_encoder.*` of the Lightning module) are ignored.
    """
    if not isinstance(ckpt, dict):
        raise TypeError(f"{source}: expected a dict, got {type(ckpt).__name__}")
    sd = ckpt.get("state_dict", ckpt)
    if not isinstance(sd, dict):
        raise TypeError(f"{source}: 'state_dict' is a {type(sd).__name__}, not a dict")
    out = {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}
    if not out:
        sample = sorted(map(str, sd))[:5]
        raise CheckpointKeyError(f"{source}: no '{prefix}'-prefixed keys in its state_dict (first keys: {sample})")
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"{source}: non-tensor value(s) under {bad[:5]}")
    skipped = len(sd) - len(out)
    if skipped:
        log.info("%s: ignoring %d non-'%s' entries", source, skipped, prefix)
    return out


def convert_original_to_diffusers(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename original-Wan keys to diffusers keys with diffusers' own converter.

    Returns the converted dict and `origin`: diffusers key -> original key (for error messages).
    """
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    converted = convert_wan_transformer_to_diffusers(dict(sd))  # it pops from its input: give it a copy
    # run the same renaming on index tags to learn where each converted key came from
    keys = list(sd)
    tags = convert_wan_transformer_to_diffusers({k: torch.tensor([i]) for i, k in enumerate(keys)})
    origin = {new: keys[int(t[0])] for new, t in tags.items() if t.numel() == 1}
    return converted, origin


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint",
                     origin: dict[str, str] | None = None) -> None:
    """Strict key and shape check of `sd` against `model` (which may live on the meta device).

    `origin` maps a converted key to its name in the checkpoint, quoted for unexpected keys.
    """
    origin = origin or {}
    missing, unexpected, shapes = compare_state_dicts(model.state_dict(), sd)
    msgs = []
    if missing:
        msgs.append(f"missing {len(missing)} key(s) (diffusers names): {describe_keys(missing, 8)}")
    if unexpected:
        named = [f"{k} (from {LIGHTNING_PREFIX}{origin[k]})" if k in origin else k for k in unexpected]
        msgs.append(f"unexpected {len(unexpected)} key(s) (diffusers names): {describe_keys(named, 8)}")
    shape_bad = [f"{k}: checkpoint {got} vs model {want}" for k, got, want in shapes]
    if shape_bad:
        msgs.append(f"{len(shape_bad)} shape mismatch(es): " + "; ".join(shape_bad[:5]))
    if msgs:
        raise CheckpointKeyError(f"{source} does not match the Wan transformer config: " + "; ".join(msgs))


def transformer_config_path(path: str | os.PathLike) -> Path:
    """Accept a config.json, a transformer dir, or a diffusers root with transformer/config.json."""
    p = Path(path)
    for cand in (p, p / "config.json", p / "transformer" / "config.json"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no transformer config.json at {p} (tried {p}/config.json, {p}/transformer/config.json)")


def empty_transformer(config: str | os.PathLike | dict):
    """A WanTransformer3DModel whose parameters live on the meta device (no memory for weights).

    Buffers (the rope tables) stay real, as accelerate's `init_empty_weights` does by default.
    """
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    if not isinstance(config, dict):
        cfg_path = transformer_config_path(config)
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointReadError(f"{cfg_path}: invalid JSON: {e}") from e
        if not isinstance(config, dict):
            raise CheckpointReadError(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    with init_empty_weights():
        return WanTransformer3DModel.from_config(config)


def load_lightning_transformer(ckpt_path: str | os.PathLike, config: str | os.PathLike | dict,
                               trust_pickle: bool = False):
    """Build a WanTransformer3DModel from an LVP/EVA Lightning checkpoint (mmapped, strict)."""
    model = empty_transformer(config)
    sd, origin = convert_original_to_diffusers(
        lightning_transformer_state_dict(load_torch_checkpoint(ckpt_path, trust_pickle), str(ckpt_path)))
    check_state_dict(model, sd, str(ckpt_path), origin)
    require_finite(sd, str(ckpt_path), origin)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def cast_like_diffusers(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast to `dtype` but keep the modules diffusers keeps in float32 (as `from_pretrained` does)."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or _FP32_MODULES
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.dtype != dtype and not any(part in keep for part in name.split(".")):
            p.data = p.data.to(dtype)
    return model
