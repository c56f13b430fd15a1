"""Flow-GRPO SDE step with log-probability (FACTS §5), for GRPO rollouts and training.

Flow convention: x_t = (1-σ)·x0 + σ·ε and the model predicts v = ε - x0. With dt = σ_next - σ < 0:

    mean = x·(1 + std²·dt/(2σ)) + v·(1 + std²·(1-σ)/(2σ))·dt
    x'   = mean + std·sqrt(-dt)·ε'
    log p(x') = Normal(mean, std·sqrt(-dt)), averaged over the non-batch dimensions

std schedules: upstream Flow-GRPO `sqrt(σ/(1-σ))·η` (η=0.7), EVA `sigmas[1]·σ`.
With std = 0 the mean is the Euler (ODE) step x + v·dt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("flow_grpo", "eva")


@dataclass
class SDEStepOutput:
    prev_sample: torch.Tensor
    log_prob: torch.Tensor | None  # (B,), None when std == 0 (deterministic step)
    mean: torch.Tensor
    std: torch.Tensor  # std of x' = std_dev_t * sqrt(-dt), broadcastable to the sample


def _bcast(x: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))  # per-sample (B,) values


def std_dev_t(sigma: torch.Tensor | float, schedule: str = "flow_grpo", eta: float = 0.7,
              sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """The SDE's std (before the sqrt(-dt) factor).

    flow_grpo: sqrt(σ/(1-σ))·η; at σ = 1 it uses sigmas[1] in place of σ, as upstream does.
    eva:       sigmas[1]·σ (sigmas = the sampler's sigma schedule, sigmas[0] = max).
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    if schedule == "flow_grpo":
        if sigmas is not None:
            sigma = torch.where(sigma >= 1.0, torch.as_tensor(float(sigmas[1])), sigma)
        return torch.sqrt(sigma / (1.0 - sigma).clamp_min(1e-6)) * eta
    if schedule == "eva":
        if sigmas is None:
            raise ValueError("the 'eva' std schedule needs the sampler's `sigmas` (it uses sigmas[1])")
        return float(sigmas[1]) * sigma
    raise ValueError(f"unknown SDE std schedule {schedule!r}; choose from {SCHEDULES}")


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std²), averaged over all but the batch dimension -> (B,)."""
    std = std.to(torch.float32)
    lp = -((x.float() - mean.float()) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.mean(dim=tuple(range(1, x.ndim)))


def sde_step_with_logprob(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    std: torch.Tensor | float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> SDEStepOutput:
    """One Flow-GRPO SDE step. `std` is `std_dev_t(...)` (scalar or per-sample (B,)).

    Give `prev_sample` to score an existing transition (training); otherwise a new x' is drawn
    from `noise` or `generator`.
    """
    x = sample.float()
    v = velocity.float()
    sig = _bcast(sigma, x)
    dt = _bcast(sigma_next, x) - sig
    sd = _bcast(std, x)
    mean = x * (1 + sd**2 * dt / (2 * sig)) + v * (1 + sd**2 * (1 - sig) / (2 * sig)) * dt
    step_std = sd * torch.sqrt(-dt)
    if prev_sample is None:
        if noise is None:
            dev = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32).to(x.device)
        prev_sample = mean + step_std * noise.float()
    log_prob = None
    if bool((step_std > 0).all()):
        log_prob = gaussian_log_prob(prev_sample, mean, step_std)
    return SDEStepOutput(prev_sample=prev_sample.to(sample.dtype), log_prob=log_prob, mean=mean, std=step_std)


def kl_to_reference(mean: torch.Tensor, mean_ref: torch.Tensor, step_std: torch.Tensor) -> torch.Tensor:
    """Flow-GRPO's KL between the policy and reference Gaussians with equal std -> (B,).

    mean((μ - μ_ref)²) / (2·(std·sqrt|dt|)²), with `step_std` = SDEStepOutput.std.
    """
    d = ((mean.float() - mean_ref.float()) ** 2).mean(dim=tuple(range(1, mean.ndim)))
    s = step_std.float().reshape(step_std.shape[0], -1)[:, 0] if step_std.ndim else step_std.float()
    return d / (2 * s**2)
