"""Load the Wan2.1 I2V components (all diffusers/transformers classes) in three ways.

(a) `kind="diffusers"`: a diffusers directory (Wan2.1-I2V-14B-480P-Diffusers layout).
(b) `kind="lightning"`: the same directory for VAE/encoders/tokenizer, plus an LVP/EVA transformer:
    a Lightning `.ckpt` (converted on load with diffusers' converter, mmapped, strict keys) or a
    directory made by `eva-convert-ckpt`.
(c) `kind="tiny"`: random tiny components built from configs (see tiny.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eva_core.world_model import checkpoint as ck
from eva_core.world_model import tiny as tiny_mod
from eva_core.world_model.config import WorldModelConfig


@dataclass
class WanComponents:
    transformer: Any  # diffusers.WanTransformer3DModel
    vae: Any  # diffusers.AutoencoderKLWan
    text_encoder: Any  # transformers.UMT5EncoderModel
    tokenizer: Any
    image_encoder: Any  # transformers.CLIPVisionModel
    scheduler: Any  # UniPCMultistepScheduler or FlowMatchEulerDiscreteScheduler


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
              "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"world-model 'dtype' must be one of {sorted(dtypes)} or 'auto', got {name!r}")
    return dtypes[name]


def build_scheduler(cfg: WorldModelConfig, model_dir: str | None = None):
    """UniPC (flow sigmas, shift) for the real model, flow-matching Euler, or lightx2v's step-distill."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if cfg.scheduler == "step_distill":
        return step_distill_scheduler(cfg.shift)
    if cfg.scheduler == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.shift)
    sched_dir = Path(model_dir, "scheduler") if model_dir else None
    if sched_dir is not None and (sched_dir / "scheduler_config.json").is_file():
        base = UniPCMultistepScheduler.load_config(sched_dir)
        return UniPCMultistepScheduler.from_config(base, flow_shift=cfg.shift, prediction_type="flow_prediction",
                                                   use_flow_sigmas=True)
    return UniPCMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction",
                                   use_flow_sigmas=True, flow_shift=cfg.shift, solver_order=2)


def step_distill_scheduler(shift: float = 5.0):
    """lightx2v's WanStepDistillScheduler (Wan2.1 StepDistill-CfgDistill, 4 steps, shift 5) in diffusers
    terms: sigmas (N-i)/N (lightx2v's denoising_step_list [1000, 750, 500, 250] / 1000 for N = 4),
    shifted by `shift`; each step predicts x0 = x - sigma*v and re-noises it to the next sigma with
    fresh noise (FlowMatchEulerDiscreteScheduler's stochastic_sampling), the last step returns x0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    class StepDistillScheduler(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, **kw):
            if sigmas is None and num_inference_steps is not None:
                n = int(num_inference_steps)
                sigmas = [(n - i) / n for i in range(n)]
                num_inference_steps = None
            return super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, **kw)

    return StepDistillScheduler(num_train_timesteps=1000, shift=shift, stochastic_sampling=True)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def load_components(cfg: WorldModelConfig) -> WanComponents:
    comps = _load_base_components(cfg)
    if cfg.transformer_dir:
        from diffusers import WanTransformer3DModel

        path = _require_dir(Path(cfg.transformer_dir), "world-model 'transformer_dir'")
        dtype = comps.transformer.dtype
        comps.transformer = ck.require_finite_model(WanTransformer3DModel.from_pretrained(
            path, torch_dtype=dtype, local_files_only=True).eval(), path)
    if cfg.vae_dir:
        comps.vae = load_vae(cfg)
    return comps


def _vae_from(path: Path, **kw):
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(path, torch_dtype=torch.float32, local_files_only=True, **kw).eval()
    where = Path(path) / kw.get("subfolder", "")
    ck.require_finite_stats(vae.config, ("latents_mean", "latents_std"), str(where / "config.json"))
    return ck.require_finite_model(vae, where)


def load_vae(cfg: WorldModelConfig):
    """Only the VAE the config's world model uses (float32, eval): `vae_dir`, else kind tiny's
    random one, else `model_dir`/vae (the light-decoder trainer needs nothing else)."""
    if cfg.vae_dir:
        return _vae_from(_require_dir(Path(cfg.vae_dir), "world-model 'vae_dir'"))
    if cfg.kind == "tiny":
        return tiny_mod.build_tiny_vae(tiny_mod.tiny_sizes(cfg.tiny))
    return _vae_from(_require_dir(Path(cfg.model_dir), "world-model 'model_dir'"), subfolder="vae")


def _load_base_components(cfg: WorldModelConfig) -> WanComponents:
    if cfg.kind == "tiny":
        return build_tiny_components(cfg)
    root = _require_dir(Path(cfg.model_dir), "world-model 'model_dir'")
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    from diffusers import WanTransformer3DModel
    from transformers import AutoTokenizer, CLIPVisionModel, UMT5EncoderModel

    common = dict(local_files_only=True)
    if cfg.kind == "diffusers":
        transformer = ck.require_finite_model(WanTransformer3DModel.from_pretrained(
            root, subfolder="transformer", torch_dtype=dtype, **common), root / "transformer")
    else:
        transformer = load_lightning_or_converted(cfg.ckpt, root / "transformer", dtype, cfg.trust_pickle)
    return WanComponents(
        transformer=transformer.eval(),
        vae=_vae_from(root, subfolder="vae"),
        text_encoder=UMT5EncoderModel.from_pretrained(root, subfolder="text_encoder", dtype=dtype, **common).eval(),
        tokenizer=AutoTokenizer.from_pretrained(root, subfolder="tokenizer", **common),
        image_encoder=CLIPVisionModel.from_pretrained(root, subfolder="image_encoder", dtype=dtype, **common).eval(),
        scheduler=build_scheduler(cfg, str(root)),
    )


def load_lightning_or_converted(ckpt: str, config_dir: Path, dtype: torch.dtype, trust_pickle: bool = False):
    """A `.ckpt` is converted in memory; a directory is one written by `eva-convert-ckpt`."""
    from diffusers import WanTransformer3DModel

    path = Path(ckpt)
    if path.is_dir():
        return ck.require_finite_model(WanTransformer3DModel.from_pretrained(path, torch_dtype=dtype,
                                                                             local_files_only=True), path)
    model = ck.load_lightning_transformer(path, config_dir, trust_pickle=trust_pickle)
    return ck.cast_like_diffusers(model, dtype)


def build_tiny_components(cfg: WorldModelConfig) -> WanComponents:
    sizes = tiny_mod.tiny_sizes(cfg.tiny)
    tokenizer = tiny_mod.build_byte_tokenizer()
    return WanComponents(
        transformer=tiny_mod.build_tiny_transformer(sizes),
        vae=tiny_mod.build_tiny_vae(sizes),
        text_encoder=tiny_mod.build_tiny_text_encoder(sizes, vocab_size=len(tokenizer)),
        tokenizer=tokenizer,
        image_encoder=tiny_mod.build_tiny_image_encoder(sizes),
        scheduler=build_scheduler(cfg),
    )
