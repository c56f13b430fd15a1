"""IDM checkpoint I/O.

Our format (default): a directory with
    model.safetensors    the module state dict
    config.json          {"format": "eva_ros.idm", "version": 1, "config": IDMConfig, "normalization": {...}}
EVA format: a torch pickle dict {model_state_dict, optimizer_state_dict, step[, train_mean, train_std]}
as EVA's released `IDM_singleview.pt`; keys may carry a wrapper prefix ("module.", "model.", ...).

Loading is strict in both formats: missing, unexpected or mis-shaped weights raise
IDMCheckpointError naming the file and the keys. Pickles are opened with weights_only=True.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eva_core.atomic_io import atomic_dir, atomic_path
from eva_core.config import ConfigError
from eva_core.idm.config import IDMConfig
from eva_core.idm.model import IDM
from eva_core.state_dict import compare_state_dicts, describe_keys, nonfinite_tensors

log = logging.getLogger(__name__)

FORMAT = "eva_ros.idm"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# Where the stats may live in an EVA-style file (top level or inside the state dict).
NORM_KEYS = ("train_mean", "train_std")


class IDMCheckpointError(ValueError):
    """A checkpoint that does not match the model: names the file and the keys."""


def _fmt_keys(keys, limit: int = 20) -> str:
    return "[" + describe_keys(keys, limit) + "]"


def load_state_dict_strict(model: IDM, state: dict, source: str) -> None:
    """Load `state` into `model`; any missing/unexpected/mis-shaped key is an error that lists them."""
    missing, unexpected, shapes = compare_state_dicts(model.state_dict(), state)
    shape = [f"{k}: file {got} vs model {want}" for k, got, want in shapes]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing keys {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_fmt_keys(unexpected)}")
        if shape:
            parts.append("shape mismatch " + "; ".join(shape[:10]))
        raise IDMCheckpointError(f"{source}: checkpoint does not match IDM variant "
                                 f"{model.config.variant!r}: " + "; ".join(parts))
    bad = nonfinite_tensors(state)
    if bad:
        raise IDMCheckpointError(f"{source}: tensor {bad[0]!r} holds NaN/inf" +
                                 (f" (and {len(bad) - 1} more: {_fmt_keys(bad[1:], 5)})" if len(bad) > 1 else ""))
    model.load_state_dict(state, strict=True)


# ---- our safetensors directory ---------------------------------------------------------------
def read_safetensors(path) -> dict[str, torch.Tensor]:
    """safetensors.load_file whose errors (truncated, empty, not safetensors) name the file."""
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises SafetensorError, OSError, ...
        raise IDMCheckpointError(f"{path}: not a readable safetensors file: {' '.join(str(e).split())}") from e


def save_idm(idm: IDM, out_dir, extra: dict | None = None) -> Path:
    """Write model.safetensors + config.json (config + normalisation stats) atomically."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in idm.state_dict().items()}
    meta = {
        "format": FORMAT, "version": VERSION, "config": idm.config.to_dict(),
        "normalization": {"action_mean": idm.action_mean.cpu().tolist(), "action_std": idm.action_std.cpu().tolist()},
        "extra": extra or {},
    }
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def _config_from(data, where: str) -> IDMConfig:
    """IDMConfig.from_dict (strict: unknown keys fail) as one IDMCheckpointError line `<where>: <key>: <problem>`."""
    try:
        return IDMConfig.from_dict(data)
    except ConfigError as e:
        raise IDMCheckpointError(": ".join(p for p in (where, e.key, e.problem) if p)) from e


def _load_dir(path: Path, map_location) -> IDM:
    cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    for f in (cfg_file, w_file):
        if not f.exists():
            raise IDMCheckpointError(f"{path}: not an IDM checkpoint directory (missing {f.name})")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IDMCheckpointError(f"{cfg_file}: invalid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise IDMCheckpointError(f"{cfg_file}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise IDMCheckpointError(f"{cfg_file}: key 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    for key in ("config", "normalization"):
        if key not in meta:
            raise IDMCheckpointError(f"{cfg_file}: missing key {key!r}")
    cfg = _config_from(meta["config"], f"{cfg_file}: key 'config'")
    model = IDM(cfg)
    load_state_dict_strict(model, read_safetensors(w_file), str(w_file))
    norm = meta["normalization"]
    try:
        model.set_normalization(norm["action_mean"], norm["action_std"])
    except (KeyError, ValueError) as e:
        raise IDMCheckpointError(f"{cfg_file}: key 'normalization': {e}") from e
    return model.to(map_location).eval()


# ---- EVA .pt layout -----------------------------------------------------------------------------
def export_eva_pt(idm: IDM, path, optimizer_state: dict | None = None, step: int = 0) -> Path:
    """Write EVA's layout: {model_state_dict, optimizer_state_dict, step, train_mean, train_std}.

    An extra `idm_config` dict records the variant so a non-default variant re-loads as itself;
    EVA's loader ignores it.
    """
    payload = {
        "model_state_dict": {k: v.detach().cpu() for k, v in idm.state_dict().items()},
        "optimizer_state_dict": optimizer_state or {},
        "step": int(step),
        "train_mean": idm.action_mean.detach().cpu().clone(),
        "train_std": idm.action_std.detach().cpu().clone(),
        "idm_config": idm.config.to_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _strip_prefix(state: dict, source: str) -> dict:
    """Remove a wrapper prefix (e.g. 'module.', 'model.idm.') found before 'backbone.'."""
    anchor = next((k for k in state if k.endswith("backbone.0.weight") or k.endswith("backbone.conv1.weight")), None)
    if anchor is None:
        raise IDMCheckpointError(f"{source}: model_state_dict has no backbone conv1 weight "
                                 f"(e.g. 'backbone.conv1.weight'); keys: {_fmt_keys(state)}")
    prefix = anchor[: anchor.index("backbone.")]
    if not prefix:
        return dict(state)
    outside = [k for k in state if not k.startswith(prefix)]
    if outside:
        raise IDMCheckpointError(f"{source}: keys without the wrapper prefix {prefix!r}: {_fmt_keys(outside)}")
    return {k[len(prefix):]: v for k, v in state.items()}


def _infer_config(state: dict, source: str) -> IDMConfig:
    """Config from the weights: a ResNet-50 bottleneck -> resnet_plus, ResNet-18 -> resnet18, else
    tiny; a 3-channel conv1 feeding a head k times wider than one frame's keypoints -> late fusion."""
    conv1 = state["backbone.conv1.weight"] if "backbone.conv1.weight" in state else state["backbone.0.weight"]
    if "backbone.layer1.0.conv3.weight" in state:
        variant, feat = "resnet_plus", 2048
    elif "backbone.layer1.0.conv1.weight" in state:
        variant, feat = "resnet18", 512
    else:
        variant = "tiny"
        convs = [key for key in state if key.startswith("backbone.") and key.endswith(".weight") and state[key].dim() == 4]
        channels = tuple(state[key].shape[0] for key in sorted(convs, key=lambda s: int(s.split(".")[1])))
        feat = channels[-1]
    kw = {"tiny_channels": channels} if variant == "tiny" else {}
    # widths read from the weights when present; a missing key is reported by the strict load
    head_in = state["mlp_head.0.weight"].shape[1] if "mlp_head.0.weight" in state else 2 * feat
    if "mlp_head.0.weight" in state and "mlp_head.4.weight" in state:
        kw["hidden"] = (state["mlp_head.0.weight"].shape[0], state["mlp_head.4.weight"].shape[0])
    if "mlp_head.6.weight" not in state:
        raise IDMCheckpointError(f"{source}: missing key 'mlp_head.6.weight' (the action head); "
                                 f"keys: {_fmt_keys(state)}")
    kw["action_dim"] = int(state["mlp_head.6.weight"].shape[0])
    late = conv1.shape[1] == 3 and head_in > 2 * feat and head_in % (2 * feat) == 0
    k = head_in // (2 * feat) if late else conv1.shape[1] // 3
    offsets = tuple(range(-(k // 2), k - k // 2))
    return IDMConfig(variant=variant, frame_offsets=offsets, fusion="late" if late else "early", **kw)


def _numpy_data_globals() -> list:
    """NumPy arrays/scalars as plain data for weights_only loading (train_mean/train_std are
    sometimes saved as ndarrays). Only array reconstruction and dtypes: no code runs."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def load_eva_pt(path, config: IDMConfig | None = None, map_location="cpu", require_norm: bool = False) -> IDM:
    """Load an EVA-layout .pt (weights_only=True), strictly. Without train_mean/train_std the
    outputs stay normalised (mean 0, std 1) and a warning is logged (an error if require_norm)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDM checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle errors come in many types
        raise IDMCheckpointError(f"{path}: cannot be read with torch.load(weights_only=True): {e}") from e
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        keys = list(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise IDMCheckpointError(f"{path}: missing key 'model_state_dict' (found {keys})")
    state = ckpt["model_state_dict"]
    if not isinstance(state, dict):
        raise IDMCheckpointError(f"{path}: 'model_state_dict' is a {type(state).__name__}, expected a dict")
    state = _strip_prefix(state, str(path))
    norm = {k: state.pop(k) for k in NORM_KEYS if k in state}  # stats stored as buffers
    norm.update({k: ckpt[k] for k in NORM_KEYS if k in ckpt})
    if config is None:
        cfg_dict = ckpt.get("idm_config")
        if not isinstance(cfg_dict, dict):
            config = _infer_config(state, str(path))
        else:
            config = _config_from(cfg_dict, f"{path}: key 'idm_config'")
    model = IDM(config)
    load_state_dict_strict(model, state, str(path))
    if len(norm) == 2:
        try:
            model.set_normalization(norm["train_mean"], norm["train_std"])
        except ValueError as e:
            raise IDMCheckpointError(f"{path}: keys 'train_mean'/'train_std': {e}") from e
    elif norm:
        raise IDMCheckpointError(f"{path}: has {sorted(norm)} but not both of {list(NORM_KEYS)}")
    elif require_norm:
        raise IDMCheckpointError(f"{path}: missing keys 'train_mean'/'train_std' (normalisation stats)")
    else:
        log.warning("%s: no train_mean/train_std; IDM outputs stay in normalised units", path)
    return model.to(map_location).eval()


def load_idm(path, config: IDMConfig | None = None, map_location="cpu", require_norm: bool = False) -> IDM:
    """Load our checkpoint directory (or its model.safetensors) or an EVA-layout .pt/.pth/.ckpt file."""
    path = Path(path)
    if path.is_dir():
        return _load_dir(path, map_location)
    if path.suffix == ".safetensors":
        return _load_dir(path.parent, map_location)
    if not path.exists():
        raise FileNotFoundError(f"IDM checkpoint not found: {path}")
    return load_eva_pt(path, config=config, map_location=map_location, require_norm=require_norm)
