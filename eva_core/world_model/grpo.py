"""Flow-GRPO for the world model, as EVA runs it (RobbinW/large-video-planner
`experiments/exp_flow_grpo.py`; Flow-GRPO, Liu et al. 2025), with the history frames masked.

Rollout: per prompt, a group of G trajectories with the SDE step of sde.py on the sampler's sigma
grid, no CFG. Before every step the history latents are overwritten with the clean ones and get
the smallest timestep; they are EXCLUDED from the log-prob (EVA's mean includes them). States,
log-probs and timesteps are stored on the CPU between rollout and update.

SDE window (Flow-GRPO-Fast): the SDE runs on `window` consecutive steps (a random start, never
the last step, where σ→0 makes the log-prob blow up), the ODE (std = 0) elsewhere; only the
window's steps are trained.

Update, for each trained step k:  ratio = exp(log p_θ(x_{k+1}|x_k) - log p_old)
    L = mean(max(-A·ratio, -A·clip(ratio, 1-ε, 1+ε))) + β·KL(p_θ || p_ref)
with A the per-group normalised, clipped advantage and KL = mean((μ_θ - μ_ref)²) / (2·std_k²)
against the same model with its LoRA adapter disabled. Log-probs are float32.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from eva_core.world_model import lora, sde
from eva_core.world_model.training import predict_flow


@dataclass
class Conditioning:
    """One prompt's conditioning, batch 1 (CPU): text (1, L, D), image (1, N, Dimg),
    history latents (1, 16, hist_len, h, w)."""

    text: torch.Tensor
    image: torch.Tensor
    hist_latents: torch.Tensor

    @property
    def hist_len(self) -> int:
        return int(self.hist_latents.shape[2])


@dataclass
class Trajectories:
    """B stochastic trajectories, all tensors on the CPU."""

    states: torch.Tensor  # (B, K+1, 16, F, h, w): x_0 (noise, history clean) .. x_K
    log_probs: torch.Tensor  # (B, K) float32; 0 on ODE steps
    timesteps: torch.Tensor  # (K,)
    sigmas: torch.Tensor  # (K+1,)
    step_std: torch.Tensor  # (K,) SDE std_dev_t per step (0 on ODE steps)
    sde_steps: torch.Tensor  # (K,) bool: steps sampled with the SDE (trainable)
    text: torch.Tensor  # (B, L, D)
    image: torch.Tensor  # (B, N, Dimg)
    hist_len: int

    @property
    def final(self) -> torch.Tensor:
        return self.states[:, -1]

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @staticmethod
    def cat(items: list["Trajectories"]) -> "Trajectories":
        a = items[0]
        return Trajectories(torch.cat([t.states for t in items]), torch.cat([t.log_probs for t in items]),
                            a.timesteps, a.sigmas, a.step_std, a.sde_steps,
                            torch.cat([t.text for t in items]), torch.cat([t.image for t in items]), a.hist_len)


def sde_window(num_steps: int, window: int | None, rng: random.Random) -> torch.Tensor:
    """(K,) bool: all steps (window None/0), or `window` consecutive steps starting at random,
    never including the last step."""
    mask = torch.zeros(num_steps, dtype=torch.bool)
    if not window:
        mask[:] = True
        return mask
    w = min(int(window), max(1, num_steps - 1))
    start = rng.randrange(0, max(1, num_steps - w))
    mask[start:start + w] = True
    return mask


def frame_timesteps(t: torch.Tensor | float, t_min: torch.Tensor | float, batch: int, frames: int,
                    hist_len: int) -> torch.Tensor:
    """(B, F): `t` on the future frames, `t_min` (the smallest timestep) on the history frames."""
    ts = torch.full((batch, frames), float(t), dtype=torch.float32)
    ts[:, :hist_len] = float(t_min)
    return ts


@torch.no_grad()
def rollout(model, cond: Conditioning, noise: torch.Tensor, timesteps: torch.Tensor, sigmas: torch.Tensor,
            sde_steps: torch.Tensor, patch_size, dtype: torch.dtype, std_schedule: str = "eva", eta: float = 0.7,
            generator: torch.Generator | None = None) -> Trajectories:
    """G = noise.shape[0] trajectories of one prompt (no guidance). `model` may be wrapped."""
    dev = noise.device
    g, _, f = noise.shape[:3]
    hl = cond.hist_len
    text, image = cond.text.expand(g, -1, -1).to(dev), cond.image.expand(g, -1, -1).to(dev)
    hist = cond.hist_latents.to(dev).float()
    sigmas = sigmas.float().cpu()
    t_min = timesteps[-1]
    x = noise.float().clone()
    states, lps, stds = [], [], []
    for i, t in enumerate(timesteps):
        x[:, :, :hl] = hist
        states.append(x.cpu())
        v = predict_flow(model, x, frame_timesteps(t, t_min, g, f, hl), text, image, patch_size, dtype)
        std = sde.std_dev_t(sigmas[i], std_schedule, eta, sigmas) if bool(sde_steps[i]) else torch.tensor(0.0)
        out = sde.sde_step_with_logprob(v[:, :, hl:], x[:, :, hl:], sigmas[i], sigmas[i + 1], std, generator=generator)
        x = x.clone()
        x[:, :, hl:] = out.prev_sample
        lps.append(out.log_prob.cpu() if out.log_prob is not None else torch.zeros(g))
        stds.append(torch.as_tensor(std, dtype=torch.float32))
    x[:, :, :hl] = hist
    states.append(x.cpu())
    return Trajectories(torch.stack(states, 1), torch.stack(lps, 1).float(), timesteps.detach().cpu(), sigmas,
                        torch.stack(stds), sde_steps.clone(), text.cpu(), image.cpu(), hl)


def step_log_prob(model, traj: Trajectories, idx: torch.Tensor, k: int, patch_size, dtype: torch.dtype,
                  device) -> sde.SDEStepOutput:
    """Recompute log p(x_{k+1} | x_k) for samples `idx` under `model` (float32, future frames only)."""
    hl = traj.hist_len
    x = traj.states[idx, k].to(device)
    x_next = traj.states[idx, k + 1].to(device)
    b, _, f = x.shape[:3]
    ts = frame_timesteps(traj.timesteps[k], traj.timesteps[-1], b, f, hl)
    v = predict_flow(model, x, ts, traj.text[idx].to(device), traj.image[idx].to(device), patch_size, dtype)
    return sde.sde_step_with_logprob(v[:, :, hl:], x[:, :, hl:], traj.sigmas[k], traj.sigmas[k + 1],
                                     traj.step_std[k], prev_sample=x_next[:, :, hl:])


def group_advantages(rewards: torch.Tensor, group_size: int, clip: float = 5.0, eps: float = 1e-4):
    """Per-group (per-prompt) normalisation: (r - mean_g) / (std_g + eps), clipped at ±clip.

    rewards (P·G,) ordered group by group. Returns (advantages (P·G,), fraction of groups whose
    rewards are all equal: they carry no signal)."""
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.numel() % group_size:
        raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size}")
    r = r.view(-1, group_size)
    mean, std = r.mean(1, keepdim=True), r.std(1, unbiased=False, keepdim=True)
    adv = ((r - mean) / (std + eps)).clamp(-clip, clip)
    zero = (std.squeeze(1) <= 1e-8).float().mean()
    return adv.reshape(-1), float(zero)


@dataclass
class LossOut:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor  # mean KL to the reference of the batch (measured also when beta == 0)
    ratio: torch.Tensor  # (B,)
    clip_frac: torch.Tensor
    approx_kl: torch.Tensor


def clipped_objective(log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor, clip_range: float,
                      kl: torch.Tensor | None = None, beta: float = 0.0) -> LossOut:
    """Flow-GRPO's clipped surrogate + β·KL (see the module docstring)."""
    ratio = torch.exp(log_prob.float() - old_log_prob.float())
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy = torch.maximum(unclipped, clipped).mean()
    kl_mean = kl.mean() if kl is not None else torch.zeros((), device=policy.device)
    loss = policy + beta * kl_mean
    with torch.no_grad():
        clip_frac = ((ratio - 1.0).abs() > clip_range).float().mean()
        approx_kl = 0.5 * ((log_prob.float() - old_log_prob.float()) ** 2).mean()
    return LossOut(loss, policy.detach(), kl_mean.detach(), ratio.detach(), clip_frac, approx_kl)


@torch.no_grad()
def reference_mean(model, unwrapped, traj: Trajectories, idx, k, patch_size, dtype, device) -> torch.Tensor:
    """The SDE mean under the reference policy: the same model with its LoRA adapter disabled."""
    lora.disable_lora(unwrapped)
    try:
        return step_log_prob(model, traj, idx, k, patch_size, dtype, device).mean
    finally:
        lora.enable_lora(unwrapped)


def grpo_step_loss(model, unwrapped, traj: Trajectories, idx, k, adv, clip_range, beta, patch_size, dtype,
                   device) -> LossOut:
    """The loss of trained step k for the samples `idx` (advantages `adv`, on `device`)."""
    out = step_log_prob(model, traj, idx, k, patch_size, dtype, device)
    # always measured (with beta = 0 only logged, without a gradient): how far the policy has moved
    mean_ref = reference_mean(model, unwrapped, traj, idx, k, patch_size, dtype, device)
    kl = sde.kl_to_reference(out.mean if beta > 0 else out.mean.detach(), mean_ref, out.std)
    old = traj.log_probs[idx, k].to(device)
    return clipped_objective(out.log_prob, old, adv.to(device), clip_range, kl, beta)


@torch.no_grad()
def trajectory_kl(model, traj: Trajectories, patch_size, dtype, device) -> torch.Tensor:
    """(B,) KL of the policy to its adapter-disabled reference, averaged over the SDE steps of
    `traj` (the evaluation's measure of how far GRPO moved the model)."""
    steps = [int(k) for k in torch.nonzero(traj.sde_steps).flatten()]
    idx = torch.arange(len(traj))
    total = torch.zeros(len(traj))
    for k in steps:
        out = step_log_prob(model, traj, idx, k, patch_size, dtype, device)
        ref = reference_mean(model, model, traj, idx, k, patch_size, dtype, device)
        total += sde.kl_to_reference(out.mean, ref, out.std).cpu()
    return total / max(1, len(steps))
