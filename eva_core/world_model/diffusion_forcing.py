"""Diffusion-forcing training noise and loss, as EVA's public SFT code (`add_training_noise`,
mode `rand_history`, in RobbinW/large-video-planner `algorithms/wan/wan_t2v.py`).

Per sample:
  - the history is the first n latent frames, n in 1..6 drawn with p = [0.5, 0.1 x 5]
    (capped so at least one future frame remains);
  - history and future each get one noise level u ~ U(0, 1); with probability
    `clean_hist_prob` the history is clean (u = 0);
  - the levels are warped by the flow shift: σ = s·u / (1 + (s - 1)·u), s = 3;
  - x_t = (1 - σ)·x0 + σ·ε per frame, timestep = 1000·σ per frame, shape (B, F);
  - the loss is the MSE between the prediction and the flow target ε - x0 on FUTURE frames only.
With diffusion forcing the 20 I2V mask/condition channels are zeros: the first frame conditions
through its clean latent (history) and the CLIP image features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HISTORY_PROBS = (0.5, 0.1, 0.1, 0.1, 0.1, 0.1)  # P(history = 1..6 latent frames)
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching timestep shift (Wan, SD3): s·u / (1 + (s - 1)·u)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


@dataclass
class DFBatch:
    noisy: torch.Tensor  # (B, C, F, h, w) x_t
    target: torch.Tensor  # (B, C, F, h, w) ε - x0
    sigmas: torch.Tensor  # (B, F)
    timesteps: torch.Tensor  # (B, F) = 1000·σ
    hist_len: torch.Tensor  # (B,) long
    future_mask: torch.Tensor  # (B, F) bool: frames that enter the loss


def sample_history_lengths(batch: int, num_frames: int, probs=HISTORY_PROBS,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) history lengths in 1..len(probs), capped at num_frames - 1."""
    if num_frames < 2:
        raise ValueError(f"diffusion forcing needs >= 2 latent frames (history + future), got {num_frames}")
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.ndim != 1 or len(p) < 1 or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ValueError(f"history probabilities must be non-negative with a positive sum, got {list(probs)}")
    n = torch.multinomial(p / p.sum(), batch, replacement=True, generator=generator) + 1
    return n.clamp(max=num_frames - 1)


def add_training_noise(x0: torch.Tensor, generator: torch.Generator | None = None, probs=HISTORY_PROBS,
                       clean_hist_prob: float = 0.7, shift: float = 3.0,
                       noise: torch.Tensor | None = None) -> DFBatch:
    """Noise a batch of clean latents (B, C, F, h, w) the diffusion-forcing way (module docstring)."""
    if x0.ndim != 5:
        raise ValueError(f"latents must be (B, C, F, h, w), got {tuple(x0.shape)}")
    b, _, f = x0.shape[:3]
    x0 = x0.float()
    dev = x0.device
    cpu = dict(generator=generator, dtype=torch.float32)
    hist_len = sample_history_lengths(b, f, probs, generator)
    u_hist, u_fut = torch.rand(b, **cpu), torch.rand(b, **cpu)
    clean = torch.rand(b, **cpu) < clean_hist_prob
    u_hist = torch.where(clean, torch.zeros_like(u_hist), u_hist)
    frame = torch.arange(f).unsqueeze(0)
    is_hist = frame < hist_len.unsqueeze(1)  # (B, F)
    u = torch.where(is_hist, u_hist.unsqueeze(1), u_fut.unsqueeze(1))
    sigmas = shift_sigma(u, shift)
    if noise is None:
        noise = torch.randn(x0.shape, **cpu)
    noise = noise.to(dev, torch.float32)
    s = sigmas.to(dev).view(b, 1, f, 1, 1)
    noisy = (1.0 - s) * x0 + s * noise
    return DFBatch(noisy=noisy, target=noise - x0, sigmas=sigmas.to(dev),
                   timesteps=(sigmas * NUM_TRAIN_TIMESTEPS).to(dev), hist_len=hist_len.to(dev),
                   future_mask=(~is_hist).to(dev))


def frame_to_token_timesteps(timesteps: torch.Tensor, latent_shape, patch_size) -> torch.Tensor:
    """(B, F) per-frame timesteps -> (B, F'·h'·w') per-token timesteps for WanTransformer3DModel."""
    _, _, f, h, w = latent_shape
    pt, ph, pw = patch_size
    per_frame = timesteps[:, ::pt] if pt > 1 else timesteps
    return per_frame.repeat_interleave((h // ph) * (w // pw), dim=1)


def masked_flow_loss(pred: torch.Tensor, batch: DFBatch) -> torch.Tensor:
    """MSE to the flow target over the future frames only (history frames have zero weight)."""
    err = (pred.float() - batch.target) ** 2  # (B, C, F, h, w)
    per_frame = err.mean(dim=(1, 3, 4))  # (B, F)
    m = batch.future_mask.float()
    return (per_frame * m).sum() / m.sum().clamp_min(1.0)
