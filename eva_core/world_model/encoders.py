"""Text, image and VAE encoding for the Wan2.1 I2V world model.

Text: UMT5, 512 tokens, the embedding zeroed after the prompt's length (as Wan and diffusers do).
Image: CLIP vision penultimate hidden states (Wan's `use_31_block`), OpenAI CLIP normalisation.
VAE: latents normalised with the VAE config's `latents_mean`/`latents_std`.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clean_prompt(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class PromptEncoder:
    """UMT5 prompt embeddings with a per-process cache: each distinct prompt is encoded once."""

    def __init__(self, tokenizer, text_encoder, text_len: int = 512, max_cache: int = 1024):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.text_len = text_len
        self.max_cache = max_cache
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encode_calls = 0  # text-encoder forwards run (cache misses)

    @torch.no_grad()
    def __call__(self, prompt: str) -> torch.Tensor:
        """(1, text_len, D) float tensor on the encoder's device (zeros after the prompt)."""
        key = clean_prompt(prompt)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        tok = self.tokenizer([key], padding="max_length", max_length=self.text_len, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        hidden = self.text_encoder(ids, mask).last_hidden_state
        n = int(mask.sum())
        emb = torch.zeros_like(hidden)
        emb[:, :n] = hidden[:, :n]
        self.encode_calls += 1
        self._cache[key] = emb
        if len(self._cache) > self.max_cache:
            self._cache.popitem(last=False)
        return emb


@torch.no_grad()
def clip_image_features(image_encoder, frames: torch.Tensor) -> torch.Tensor:
    """frames (B, 3, H, W) in [-1, 1] -> (B, tokens, hidden) penultimate CLIP hidden states."""
    size = image_encoder.config.image_size
    p = next(image_encoder.parameters())
    x = F.interpolate(frames.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    x = (x * 0.5 + 0.5).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    x = ((x - mean) / std).to(device=p.device, dtype=p.dtype)
    return image_encoder(pixel_values=x, output_hidden_states=True).hidden_states[-2]


def _latent_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=torch.float32).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=torch.float32).view(1, z, 1, 1, 1)
    return mean, std


@torch.no_grad()
def vae_encode(vae, video: torch.Tensor) -> torch.Tensor:
    """video (B, 3, T, H, W) in [-1, 1] -> normalised latents (B, 16, 1+(T-1)/4, H/8, W/8), float32.

    The posterior mode is used (deterministic), as Wan's I2V conditioning does.
    """
    p = next(vae.parameters())
    dist = vae.encode(video.to(device=p.device, dtype=p.dtype)).latent_dist
    lat = dist.mode().float()
    mean, std = _latent_stats(vae, lat)
    return (lat - mean) / std


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> video (B, 3, T, H, W) in [-1, 1], float32."""
    p = next(vae.parameters())
    mean, std = _latent_stats(vae, latents)
    lat = latents.float() * std + mean
    return vae.decode(lat.to(device=p.device, dtype=p.dtype)).sample.float().clamp(-1, 1)


def video_to_frames(video: torch.Tensor):
    """A decoded video (3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8 frames (rounded, clipped), on the CPU."""
    return ((video.permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
