"""Distribution matching distillation (DMD2, Yin et al. 2024) of a guided flow-matching world model
into a K-step student (student.py). The losses only; the loop is training/distill.py.

  real score : the frozen teacher with EVA's guidance, (1 + lg + hg)·cond − lg·noLang − hg·noHist
               (sampler.guided_velocity)
  fake score : a trainable copy fitted to the student's samples with the flow-matching loss
  generator  : ∇ = (x0_fake − x0_real) / mean|x0_student − x0_real| on the student's sample
               re-noised at a random σ (DMD's normalisation), loss = ½‖x0 − sg(x0 − ∇)‖²
  inputs     : for K > 1 the student's input at step j is simulated by running its own first j
               steps without gradient (DMD2 §4.5 backward simulation), so training sees what
               inference sees.
Every loss covers the future latent frames only; the history frames are held clean and see the
teacher's smallest timestep, as in sampling.
"""

from __future__ import annotations

import torch

from eva_core.world_model import sampler, student
from eva_core.world_model.diffusion_forcing import NUM_TRAIN_TIMESTEPS


def stack_inputs(items: list[sampler.GuidanceInputs]) -> sampler.GuidanceInputs:
    """A batch of per-prompt conditionings (each batch 1) as one GuidanceInputs."""
    def cat(name):
        vals = [getattr(i, name) for i in items]
        return None if vals[0] is None else torch.cat(vals)

    return sampler.GuidanceInputs(text=cat("text"), text_neg=cat("text_neg"), image=cat("image"), y=cat("y"),
                                  hist_latents=cat("hist_latents"), y_no_hist=cat("y_no_hist"))


def inputs_to(inp: sampler.GuidanceInputs, device) -> sampler.GuidanceInputs:
    return sampler.GuidanceInputs(**{k: None if v is None else v.to(device) for k, v in vars(inp).items()})


def future_mse(a: torch.Tensor, b: torch.Tensor, hist_len: int) -> torch.Tensor:
    return ((a[:, :, hist_len:].float() - b[:, :, hist_len:].float()) ** 2).mean()


def generator_sample(model, noise, inp, sigmas, t_hist, gen, j: int) -> torch.Tensor:
    """The student's clean prediction at step j (gradient through that step only)."""
    with torch.no_grad():
        x_j = student.sample(model, noise, inp, sigmas, t_hist, generator=gen, stop_at=j)
    return student.step(model, x_j, sigmas[j], inp, t_hist)


def random_sigma(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen))


def renoise_at(x0: torch.Tensor, sigma: float, gen: torch.Generator, inp) -> torch.Tensor:
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(x0.device)
    return student.hold_history(student.renoise(x0, sigma, eps), inp), eps


def teacher_x0(teacher, x_t, sigma: float, inp, t_min: float, t_max: float, hist_guidance: float,
               lang_guidance: float, gen: torch.Generator) -> torch.Tensor:
    """The real score as a clean prediction: the guided teacher velocity at σ."""
    hist_noise = None
    if inp.hist_len and hist_guidance:
        hist_noise = torch.randn(inp.hist_latents.shape, generator=gen, dtype=torch.float32).to(x_t.device)
    t = torch.tensor(sigma * NUM_TRAIN_TIMESTEPS)
    v = sampler.guided_velocity(teacher, x_t, t, torch.tensor(t_min), torch.tensor(t_max), inp, hist_noise,
                                hist_guidance, lang_guidance)
    return x_t - sigma * v


def dmd_generator_loss(x0_student, teacher, fake, inp, t_min, t_max, hist_guidance, lang_guidance, gen,
                       sigma_range=(0.02, 0.98)) -> tuple[torch.Tensor, dict]:
    """DMD loss of the student's clean sample (gradient flows into x0_student only)."""
    h = inp.hist_len
    sigma = random_sigma(gen, *sigma_range)
    with torch.no_grad():
        x_t, _ = renoise_at(x0_student.detach(), sigma, gen, inp)
        x0_real = teacher_x0(teacher, x_t, sigma, inp, t_min, t_max, hist_guidance, lang_guidance, gen)
        x0_fake = x_t - sigma * student.velocity(fake, x_t, sigma, inp, t_min)
        diff = (x0_student.detach() - x0_real)[:, :, h:]
        norm = diff.abs().mean(dim=tuple(range(1, diff.ndim)), keepdim=True).clamp_min(1e-6)
        grad = (x0_fake - x0_real)[:, :, h:] / norm
        grad = torch.nan_to_num(grad)
    target = (x0_student[:, :, h:] - grad).detach()
    loss = 0.5 * ((x0_student[:, :, h:].float() - target) ** 2).mean()
    return loss, {"sigma": sigma, "dmd_grad_abs": float(grad.abs().mean()),
                  "fake_minus_real": float((x0_fake - x0_real)[:, :, h:].abs().mean())}


def fake_score_loss(fake, x0_student, inp, t_min, gen, sigma_range=(0.02, 0.98)) -> torch.Tensor:
    """Flow-matching loss of the fake score on the student's (detached) samples, future frames."""
    sigma = random_sigma(gen, *sigma_range)
    x0 = x0_student.detach()
    x_t, eps = renoise_at(x0, sigma, gen, inp)
    v = student.velocity(fake, x_t, sigma, inp, t_min)
    return future_mse(v, eps - x0, inp.hist_len)


def regression_loss(model, noise, inp, sigmas, t_hist, target) -> torch.Tensor:
    """Warm-up: the student's first-step prediction from noise regressed onto the teacher's ODE
    sample of the same noise (MSE; DMD uses LPIPS on pixels)."""
    x0 = student.step(model, noise.float(), sigmas[0], inp, t_hist)
    return future_mse(x0, target, inp.hist_len)


@torch.no_grad()
def teacher_sample(teacher, scheduler, noise, inp, num_steps, hist_guidance, lang_guidance, gen) -> torch.Tensor:
    """The teacher's ODE sample of `noise` with its own sampler and guidance."""
    return sampler.sample(teacher, scheduler, noise, inp, num_steps, hist_guidance, lang_guidance, generator=gen)
