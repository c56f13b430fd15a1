"""The few-step student sampler: ONE place for its timestep schedule, used by inference
(`WorldModel.generate` with `sampler: student`) and by distillation (training/distill.py).

A student (distilled with DMD2, eva-train-distill) makes exactly one transformer call per step and
no guidance branch: both guidances are baked into its weights. Each step predicts the clean
latents x0 = x_t − σ·v (flow matching: x_t = (1 − σ)·x0 + σ·ε, v = ε − x0) and re-noises them to
the next step's σ with fresh noise (DMD2's multi-step generator, as CausVid and LightX2V sample).
Conditioning is the teacher's: history latents in the first `hist_len` latent frames held at the
teacher's smallest timestep (diffusion forcing), the instruction and the CLIP features.
"""

from __future__ import annotations

import torch

from eva_core.world_model import sampler
from eva_core.world_model.diffusion_forcing import NUM_TRAIN_TIMESTEPS, shift_sigma


def student_sigmas(steps: int, shift: float = 3.0, timesteps=None) -> list[float]:
    """σ of each student step (decreasing, first one 1.0 = pure noise by default).

    Default: a uniform grid u = 1, 1 − 1/K, ..., 1/K warped by the flow shift (Wan's sampling
    shift), e.g. K = 4, shift 3: σ = 1, 0.9, 0.75, 0.5. `timesteps` (in (0, 1000]) overrides it."""
    if timesteps is not None:
        return [float(t) / NUM_TRAIN_TIMESTEPS for t in timesteps]
    if not 1 <= int(steps) <= 4:
        raise ValueError(f"student steps must be 1..4, got {steps}")
    u = torch.tensor([1.0 - i / steps for i in range(steps)], dtype=torch.float64)
    return [float(s) for s in shift_sigma(u, shift)]


def schedule_of(cfg) -> list[float]:
    """The student σ schedule of a WorldModelConfig."""
    return student_sigmas(cfg.student_steps, cfg.shift, cfg.student_timesteps)


def history_timesteps(cfg) -> tuple[float, float]:
    """(t_min, t_max) the teacher's sampler gives the history tokens (its scheduler at its
    num_steps): the student sees the history exactly as its teacher did."""
    from eva_core.world_model.loading import build_scheduler

    sched = build_scheduler(cfg, cfg.model_dir)
    sched.set_timesteps(cfg.num_steps, device="cpu")
    return float(sched.timesteps[-1]), float(sched.timesteps[0])


def velocity(transformer, latents: torch.Tensor, sigma: float, inp: sampler.GuidanceInputs,
             t_hist: float) -> torch.Tensor:
    """The student's flow prediction: one transformer call, the cond branch only."""
    t = torch.tensor(sigma * NUM_TRAIN_TIMESTEPS)
    return sampler.guided_velocity(transformer, latents, t, torch.tensor(t_hist), t, inp, None,
                                   hist_guidance=0.0, lang_guidance=0.0)


def hold_history(latents: torch.Tensor, inp: sampler.GuidanceInputs) -> torch.Tensor:
    if inp.hist_len:
        latents = latents.clone()
        latents[:, :, :inp.hist_len] = inp.hist_latents.to(latents.dtype)
    return latents


def step(transformer, x_t: torch.Tensor, sigma: float, inp, t_hist: float) -> torch.Tensor:
    """One student step: noisy latents at σ -> predicted clean latents (history frames held)."""
    x_t = hold_history(x_t, inp)
    x0 = x_t - sigma * velocity(transformer, x_t, sigma, inp, t_hist)
    return hold_history(x0, inp)


def renoise(x0: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    return (1.0 - sigma) * x0 + sigma * noise


def sample(transformer, noise: torch.Tensor, inp: sampler.GuidanceInputs, sigmas: list[float], t_hist: float,
           generator: torch.Generator | None = None, stop_at: int | None = None,
           progress=None) -> torch.Tensor:
    """K-step student sampling from `noise` (the first σ's noisy latents). `stop_at=j` returns the
    noisy input of step j instead (DMD2's backward simulation of the student's own inputs)."""
    x = noise.float()
    for i, s in enumerate(sigmas):
        if stop_at is not None and i == stop_at:
            return hold_history(x, inp)
        x0 = step(transformer, x, s, inp, t_hist)
        if i + 1 < len(sigmas):
            fresh = torch.randn(x0.shape, generator=generator, dtype=torch.float32,
                                device=generator.device if generator is not None else "cpu").to(x0.device)
            x = renoise(x0, sigmas[i + 1], fresh)
        else:
            x = x0
        if progress is not None:
            progress.update(1)
    return x
