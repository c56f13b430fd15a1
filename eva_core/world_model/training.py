"""Pieces the SFT and GRPO scripts share: the training forward, trainable-parameter setup, and
cached per-clip features (VAE latents, CLIP image features, UMT5 prompt embeddings).

The forward takes per-frame timesteps (B, F) and zero I2V mask/condition channels (diffusion
forcing: the first frame conditions through its clean latent and the CLIP features).
"""

from __future__ import annotations

import torch

from eva_core.data.video_clips import FeatureCache, VideoClipDataset, module_fingerprint
from eva_core.world_model import encoders, lora
from eva_core.world_model.diffusion_forcing import frame_to_token_timesteps

Y_CHANNELS = 20  # 4 mask + 16 condition channels of Wan I2V, zeros under diffusion forcing


def predict_flow(model, noisy: torch.Tensor, frame_timesteps: torch.Tensor, text: torch.Tensor,
                 image: torch.Tensor, patch_size, dtype: torch.dtype) -> torch.Tensor:
    """Flow prediction (float32) for noisy latents (B, 16, F, h, w) at per-frame timesteps (B, F).

    `model` may be wrapped (DDP/FSDP); `patch_size`/`dtype` come from the unwrapped transformer."""
    b, _, f, h, w = noisy.shape
    y = torch.zeros(b, Y_CHANNELS, f, h, w, device=noisy.device, dtype=dtype)
    x = torch.cat([noisy.to(dtype), y], dim=1)
    ts = frame_to_token_timesteps(frame_timesteps, noisy.shape, patch_size).to(noisy.device)
    out = model(hidden_states=x, timestep=ts, encoder_hidden_states=text.to(noisy.device, dtype),
                encoder_hidden_states_image=image.to(noisy.device, dtype), return_dict=False)[0]
    return out.float()


def setup_trainable(transformer, mode: str = "lora", rank: int = 32, alpha: float = 32.0,
                    gradient_checkpointing: bool = True) -> list[torch.nn.Parameter]:
    """LoRA (EVA's targets, B = 0 at init) or full fine-tuning; returns the trainable parameters."""
    if mode not in ("lora", "full"):
        raise ValueError(f"train mode must be 'lora' or 'full', got {mode!r}")
    transformer.requires_grad_(mode == "full")
    if mode == "lora":
        if "default" not in getattr(transformer, "peft_config", {}):
            lora.add_lora(transformer, rank=rank, alpha=alpha)
        for n, p in transformer.named_parameters():
            p.requires_grad_("lora_" in n)
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    return [p for p in transformer.parameters() if p.requires_grad]


def encoder_key(wm) -> str:
    """Fingerprint of everything that turns pixels/text into features (cache invalidation)."""
    c = wm.c
    return "|".join([module_fingerprint(c.vae), module_fingerprint(c.image_encoder),
                     module_fingerprint(c.text_encoder), f"text_len={wm.cfg.text_len}"])


class CachedFeatures(torch.utils.data.Dataset):
    """Per-clip latents + CLIP features and per-caption prompt embeddings, computed once through
    `FeatureCache` (then read from disk), held as CPU tensors."""

    def __init__(self, wm, clips: VideoClipDataset, cache: FeatureCache, progress: bool = False):
        from tqdm import tqdm

        self.items = []
        prompts: dict[str, torch.Tensor] = {}
        for i in tqdm(range(len(clips)), desc="clip features", disable=not progress):
            ref = clips.refs[i]
            key = _clip_key(clips, i)

            def compute(i=i):
                item = clips[i]
                video = item["video"][None]
                return {"latents": encoders.vae_encode(wm.c.vae, video)[0],
                        "image": encoders.clip_image_features(wm.c.image_encoder, video[:, :, 0])[0],
                        "first_frame": torch.from_numpy(item["first_frame"].copy())}

            feats = cache.get_or_compute("clips", key, compute)
            if ref.caption not in prompts:
                prompts[ref.caption] = cache.get_or_compute(
                    "prompts", "prompt:" + encoders.clean_prompt(ref.caption),
                    lambda cap=ref.caption: {"text": wm.prompts(cap)[0]})["text"]
            self.items.append({**feats, "text": prompts[ref.caption], "caption": ref.caption})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _clip_key(clips: VideoClipDataset, i: int) -> str:
    from eva_core.data.video_clips import clip_key

    return clip_key(clips.refs[i], clips.spec)


def collate(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in ("latents", "image", "text")}
    out["caption"] = [it["caption"] for it in items]
    return out
