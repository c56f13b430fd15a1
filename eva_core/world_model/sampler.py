"""EVA's history- and language-guided sampler on a diffusers WanTransformer3DModel.

Per step, three branches (FACTS §4), evaluated as ONE batched transformer forward:
  cond    : instruction prompt, history latents clean (held at the smallest timestep)
  noLang  : the empty (negative) prompt, history as in cond
  noHist  : instruction prompt, history latents replaced by fresh noise at the largest timestep
  v = (1 + lg + hg)·cond − lg·noLang − hg·noHist          (EVA: hg = 1.5, lg = 2.5)

History sits in the first `hist_len` latent frames of the noisy stream (diffusion forcing, as in
LVP/EVA): the transformer gets a per-token timestep, so those frames see the smallest timestep.
A branch whose guidance scale is 0 is not run. With a diffusers cache enabled (cache.py) every
transformer call runs inside `cache_context(name)`: the branch's name, or the joined names when
the branches share one batched forward; `sample` resets the cache state before each chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eva_core.world_model import cache


@dataclass
class GuidanceInputs:
    text: torch.Tensor  # (B, 512, D) instruction embedding
    text_neg: torch.Tensor  # (B, 512, D) empty-prompt embedding
    image: torch.Tensor  # (B, N, Dimg) CLIP features
    y: torch.Tensor  # (B, 20, F, h, w) mask + condition channels (zeros in history mode)
    hist_latents: torch.Tensor | None  # (B, 16, hist_len, h, w), clean
    y_no_hist: torch.Tensor | None = None  # y for the no-history branch (defaults to y)

    @property
    def hist_len(self) -> int:
        return 0 if self.hist_latents is None else self.hist_latents.shape[2]


def token_timesteps(t: torch.Tensor, hist_len: int, t_hist: torch.Tensor, shape: tuple, patch_size) -> torch.Tensor:
    """Per-token timesteps (B, F'·h'·w'): `t_hist` on the first `hist_len` latent frames, `t` elsewhere."""
    b, _, f, h, w = shape
    pt, ph, pw = patch_size
    per_frame = torch.full((b, f // pt), float(t), dtype=torch.float32)
    per_frame[:, : hist_len // pt] = float(t_hist)
    return per_frame.repeat_interleave((h // ph) * (w // pw), dim=1)


def transformer_forward(transformer, latents, timesteps, text, image, y) -> torch.Tensor:
    """One forward on [noisy latents | y] (36 channels); returns the flow prediction in float32."""
    dtype = transformer.patch_embedding.weight.dtype  # the compute dtype (some modules stay float32)
    x = torch.cat([latents, y.to(latents.dtype)], dim=1).to(dtype=dtype)
    out = transformer(
        hidden_states=x, timestep=timesteps.to(x.device), encoder_hidden_states=text.to(dtype),
        encoder_hidden_states_image=image.to(dtype), return_dict=False,
    )[0]
    return out.float()


@dataclass
class BranchBatch:
    """The stacked inputs of the active branches, built once per step."""

    names: list[str]
    latents: torch.Tensor
    timesteps: torch.Tensor
    text: torch.Tensor
    image: torch.Tensor
    y: torch.Tensor


def build_branches(latents, t, t_min, t_max, inp: GuidanceInputs, hist_noise, hist_guidance, lang_guidance,
                   patch_size) -> BranchBatch:
    hist_len = inp.hist_len
    shape = tuple(latents.shape)
    ts_hist = token_timesteps(t, hist_len, t_min, shape, patch_size)
    names = ["cond"]
    lat, ts, text, y = [latents], [ts_hist], [inp.text], [inp.y]
    if lang_guidance:
        names.append("no_lang")
        lat.append(latents), ts.append(ts_hist), text.append(inp.text_neg), y.append(inp.y)
    use_hist_branch = hist_guidance and (hist_len > 0 or inp.y_no_hist is not None)
    if use_hist_branch:
        names.append("no_hist")
        noisy = latents.clone()
        if hist_len:
            noisy[:, :, :hist_len] = hist_noise.to(latents.dtype)
        lat.append(noisy)
        ts.append(token_timesteps(t, hist_len, t_max, shape, patch_size))
        text.append(inp.text)
        y.append(inp.y_no_hist if inp.y_no_hist is not None else inp.y)
    n = len(names)
    return BranchBatch(names, torch.cat(lat), torch.cat(ts), torch.cat(text), inp.image.repeat(n, 1, 1), torch.cat(y))


def combine_guidance(preds: dict[str, torch.Tensor], hist_guidance: float, lang_guidance: float) -> torch.Tensor:
    """(1 + lg + hg)·cond − lg·noLang − hg·noHist (absent branches count as 0)."""
    lg = lang_guidance if "no_lang" in preds else 0.0
    hg = hist_guidance if "no_hist" in preds else 0.0
    v = preds["cond"] * (1 + lg + hg)
    if lg:
        v = v - lg * preds["no_lang"]
    if hg:
        v = v - hg * preds["no_hist"]
    return v


def guided_velocity(transformer, latents, t, t_min, t_max, inp: GuidanceInputs, hist_noise=None,
                    hist_guidance: float = 1.5, lang_guidance: float = 2.5, batched: bool = True,
                    return_branches: bool = False):
    """The guided flow prediction at one step (one batched forward when `batched`)."""
    patch = transformer.config.patch_size
    br = build_branches(latents, t, t_min, t_max, inp, hist_noise, hist_guidance, lang_guidance, patch)
    b = latents.shape[0]
    if batched:
        with cache.branch_context(transformer, "+".join(br.names)):
            out = transformer_forward(transformer, br.latents, br.timesteps, br.text, br.image, br.y)
        preds = {name: out[i * b:(i + 1) * b] for i, name in enumerate(br.names)}
    else:  # three separate forwards (reference / benchmark)
        preds = {}
        for i, name in enumerate(br.names):
            sl = slice(i * b, (i + 1) * b)
            with cache.branch_context(transformer, name):
                preds[name] = transformer_forward(transformer, br.latents[sl], br.timesteps[sl], br.text[sl],
                                                  br.image[sl], br.y[sl])
    v = combine_guidance(preds, hist_guidance, lang_guidance)
    return (v, preds) if return_branches else v


def _history_noise(inp: GuidanceInputs, hist_guidance: float, generator: torch.Generator | None, device):
    """Fresh noise for the no-history branch (None when that branch does not run), drawn on the
    generator's device (CPU without one), then moved to `device`."""
    if not (inp.hist_len and hist_guidance):
        return None
    return torch.randn(inp.hist_latents.shape, generator=generator, dtype=torch.float32,
                       device=generator.device if generator is not None else "cpu").to(device)


@torch.no_grad()
def sample(transformer, scheduler, noise: torch.Tensor, inp: GuidanceInputs, num_steps: int,
           hist_guidance: float = 1.5, lang_guidance: float = 2.5, generator: torch.Generator | None = None,
           batched: bool = True, progress=None) -> torch.Tensor:
    """Denoise `noise` (B, 16, F, h, w) to clean latents with the guided 3-branch sampler.

    The first `inp.hist_len` latent frames are reset to the history latents before every step
    and at the end. `generator` draws the no-history branch's noise (fresh each step, as EVA).
    """
    scheduler.set_timesteps(num_steps, device=noise.device)
    timesteps = scheduler.timesteps
    t_min, t_max = timesteps[-1], timesteps[0]
    latents = noise.float().clone()
    hist_len = inp.hist_len
    cache.reset(transformer)   # no cached state from the previous chunk
    # a stochastic scheduler (step_distill: re-noises after each step) draws from `generator`
    step_kw = {"generator": generator} if getattr(scheduler.config, "stochastic_sampling", False) else {}
    for t in timesteps:
        if hist_len:
            latents[:, :, :hist_len] = inp.hist_latents
        hist_noise = _history_noise(inp, hist_guidance, generator, latents.device)
        v = guided_velocity(transformer, latents, t, t_min, t_max, inp, hist_noise, hist_guidance, lang_guidance,
                            batched=batched)
        latents = scheduler.step(v, t, latents, return_dict=False, **step_kw)[0]
        if progress is not None:
            progress.update(1)
    if hist_len:
        latents[:, :, :hist_len] = inp.hist_latents
    return latents


@dataclass
class Rollout:
    """A stochastic (SDE) trajectory for Flow-GRPO: states x_0 (noise) .. x_K and per-step log-probs."""

    latents: list[torch.Tensor]  # K+1 states, (B, 16, F, h, w) each (history frames held clean)
    log_probs: torch.Tensor  # (K, B): log p(x_{k+1} | x_k), over the non-history latent frames
    timesteps: torch.Tensor  # (K,)
    sigmas: torch.Tensor  # (K+1,)
    hist_len: int


@torch.no_grad()
def sample_sde(transformer, scheduler, noise: torch.Tensor, inp: GuidanceInputs, num_steps: int,
               std_schedule: str = "eva", eta: float = 0.7, hist_guidance: float = 0.0,
               lang_guidance: float = 0.0, generator: torch.Generator | None = None) -> Rollout:
    """Flow-GRPO rollout with the SDE step (sde.py) on the scheduler's sigma schedule.

    Flow-GRPO uses no guidance in rollouts (the defaults); history frames are held clean and
    excluded from the log-prob. With eta = 0 and the 'flow_grpo' schedule this is the Euler ODE.
    """
    from eva_core.world_model import sde

    scheduler.set_timesteps(num_steps, device=noise.device)
    sigmas = scheduler.sigmas.float().cpu()
    timesteps = scheduler.timesteps
    t_min, t_max = timesteps[-1], timesteps[0]
    hist_len = inp.hist_len
    latents = noise.float().clone()
    cache.reset(transformer)
    states, log_probs = [], []
    for i, t in enumerate(timesteps):
        if hist_len:
            latents[:, :, :hist_len] = inp.hist_latents
        states.append(latents.clone())
        hist_noise = _history_noise(inp, hist_guidance, generator, latents.device)
        v = guided_velocity(transformer, latents, t, t_min, t_max, inp, hist_noise, hist_guidance, lang_guidance)
        std = sde.std_dev_t(sigmas[i], std_schedule, eta, sigmas)
        step = sde.sde_step_with_logprob(v[:, :, hist_len:], latents[:, :, hist_len:], sigmas[i], sigmas[i + 1],
                                         std, generator=generator)
        latents = latents.clone()
        latents[:, :, hist_len:] = step.prev_sample
        log_probs.append(step.log_prob if step.log_prob is not None else torch.zeros(latents.shape[0]))
    if hist_len:
        latents[:, :, :hist_len] = inp.hist_latents
    states.append(latents)
    return Rollout(states, torch.stack(log_probs), timesteps, sigmas, hist_len)
