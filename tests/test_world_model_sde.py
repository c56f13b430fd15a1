"""Flow-GRPO SDE step with log-prob (FACTS §5)."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from eva_core.world_model.sde import gaussian_log_prob, kl_to_reference, sde_step_with_logprob, std_dev_t

pytestmark = pytest.mark.unit


def data(seed=0, shape=(3, 16, 2, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def schedule(n=10, shift=3.0):
    s = FlowMatchEulerDiscreteScheduler(shift=shift)
    s.set_timesteps(n)
    return s


@pytest.mark.parametrize("kind", ["flow_grpo", "eva"])
def test_log_prob_matches_torch_normal(kind):
    x, v = data()
    sigmas = schedule().sigmas
    sigma, sigma_next = float(sigmas[3]), float(sigmas[4])
    std = std_dev_t(sigma, kind, eta=0.7, sigmas=sigmas)
    res = sde_step_with_logprob(v, x, sigma, sigma_next, std, generator=torch.Generator().manual_seed(1))
    dt = sigma_next - sigma
    # mean formula, written out from FACTS §5
    mean = x * (1 + std**2 * dt / (2 * sigma)) + v * (1 + std**2 * (1 - sigma) / (2 * sigma)) * dt
    torch.testing.assert_close(res.mean, mean)
    ref = torch.distributions.Normal(mean, std * (-dt) ** 0.5).log_prob(res.prev_sample).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(res.log_prob, ref, rtol=1e-5, atol=1e-5)
    # scoring the same transition again (as GRPO training does) reproduces the log-prob
    again = sde_step_with_logprob(v, x, sigma, sigma_next, std, prev_sample=res.prev_sample)
    torch.testing.assert_close(again.log_prob, res.log_prob)
    assert torch.equal(again.prev_sample, res.prev_sample)


def test_std_schedules():
    sigmas = schedule().sigmas
    s = 0.4
    assert float(std_dev_t(s, "flow_grpo", eta=0.7)) == pytest.approx((s / (1 - s)) ** 0.5 * 0.7)
    assert float(std_dev_t(s, "eva", sigmas=sigmas)) == pytest.approx(float(sigmas[1]) * s)
    # at sigma = 1 upstream substitutes sigmas[1] (no division by zero)
    assert torch.isfinite(std_dev_t(1.0, "flow_grpo", sigmas=sigmas))
    with pytest.raises(ValueError):
        std_dev_t(s, "eva")
    with pytest.raises(ValueError):
        std_dev_t(s, "nope")


def test_zero_std_reproduces_euler_ode_step():
    x, v = data(2)
    sched = schedule(8)
    sched._step_index = None
    for i in (0, 3, 7):
        sched._step_index = i
        euler = sched.step(v, sched.timesteps[i], x, return_dict=False)[0]
        res = sde_step_with_logprob(v, x, sched.sigmas[i], sched.sigmas[i + 1], std=0.0)
        torch.testing.assert_close(res.prev_sample, euler)
        assert res.log_prob is None


def test_per_sample_sigma_and_std():
    x, v = data(3)
    sig = torch.tensor([0.9, 0.5, 0.2])
    nxt = sig - 0.1
    std = std_dev_t(sig, "flow_grpo")
    res = sde_step_with_logprob(v, x, sig, nxt, std, generator=torch.Generator().manual_seed(0))
    for b in range(3):
        one = sde_step_with_logprob(v[b:b + 1], x[b:b + 1], sig[b], nxt[b], std[b], prev_sample=res.prev_sample[b:b + 1])
        torch.testing.assert_close(one.log_prob, res.log_prob[b:b + 1], rtol=1e-5, atol=1e-5)


def test_log_prob_prefers_the_mean_and_kl():
    x, v = data(4)
    res = sde_step_with_logprob(v, x, 0.6, 0.5, 0.5, generator=torch.Generator().manual_seed(0))
    at_mean = gaussian_log_prob(res.mean, res.mean, res.std)
    assert torch.all(at_mean > res.log_prob)
    assert torch.all(kl_to_reference(res.mean, res.mean, res.std) == 0)
    shifted = res.mean + 0.01
    kl = kl_to_reference(res.mean, shifted, res.std)
    torch.testing.assert_close(kl, torch.full((3,), 0.01**2 / (2 * float(res.std) ** 2)), rtol=1e-4, atol=0)


def test_sde_rollout_reduces_to_euler_and_rescoring_matches():
    from eva_core.world_model import sampler, tiny
    from eva_core.world_model.sde import std_dev_t

    tr = tiny.build_tiny_transformer({"seed": 2})
    g = torch.Generator().manual_seed(0)
    s = tiny.TINY_DEFAULTS
    inp = sampler.GuidanceInputs(
        text=torch.randn(1, 512, s["text_dim"], generator=g), text_neg=torch.randn(1, 512, s["text_dim"], generator=g),
        image=torch.randn(1, 5, s["image_dim"], generator=g), y=torch.zeros(1, 20, 3, 8, 8),
        hist_latents=torch.randn(1, 16, 1, 8, 8, generator=g))
    noise = torch.randn(1, 16, 3, 8, 8, generator=g)
    # eta = 0: the SDE rollout is the Euler ODE sampler (no guidance)
    ode = sampler.sample(tr, schedule(), noise, inp, 4, hist_guidance=0, lang_guidance=0)
    r0 = sampler.sample_sde(tr, schedule(), noise, inp, 4, std_schedule="flow_grpo", eta=0.0)
    torch.testing.assert_close(r0.latents[-1], ode, rtol=1e-5, atol=1e-5)

    r = sampler.sample_sde(tr, schedule(), noise, inp, 4, std_schedule="eva", generator=torch.Generator().manual_seed(3))
    assert r.log_probs.shape == (4, 1) and torch.isfinite(r.log_probs).all()
    assert all(torch.equal(x[:, :, :1], inp.hist_latents) for x in r.latents[1:])
    assert not torch.allclose(r.latents[-1], ode, atol=1e-3)
    # training re-scores stored transitions: same model + same states -> same log-probs
    for k in range(4):
        x = r.latents[k]
        v = sampler.guided_velocity(tr, x, r.timesteps[k], r.timesteps[-1], r.timesteps[0], inp, None, 0.0, 0.0)
        res = sde_step_with_logprob(v[:, :, 1:], x[:, :, 1:], r.sigmas[k], r.sigmas[k + 1],
                                    std_dev_t(r.sigmas[k], "eva", sigmas=r.sigmas), prev_sample=r.latents[k + 1][:, :, 1:])
        torch.testing.assert_close(res.log_prob, r.log_probs[k], rtol=1e-4, atol=1e-4)
