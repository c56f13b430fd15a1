"""Flow-GRPO correctness (eva_core/world_model/grpo.py) on the tiny Wan I2V model."""

from __future__ import annotations

import random

import pytest
import torch

from eva_core.world_model import WorldModel, WorldModelConfig, grpo, lora, sde

pytestmark = pytest.mark.unit

G = 4


@pytest.fixture(scope="module")
def setup():
    wm = WorldModel.from_config(WorldModelConfig.tiny_default(num_frames=9))
    tr = wm.transformer
    lora.add_lora(tr, rank=4, alpha=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-zero adapter, so policy and reference differ
        for n, p in tr.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    image = (torch.rand(64, 64, 3, generator=gen) * 255).to(torch.uint8).numpy()
    inp = wm.conditioning("pick up the cup", wm.context_clip(image, None))
    cond = grpo.Conditioning(inp.text, inp.image, inp.hist_latents)
    wm.c.scheduler.set_timesteps(4)
    ts, sig = wm.c.scheduler.timesteps.float(), wm.c.scheduler.sigmas.float()
    noise = torch.randn((G, *wm.latent_shape), generator=gen)
    traj = grpo.rollout(tr, cond, noise, ts, sig, torch.ones(4, dtype=torch.bool), tr.config.patch_size, tr.dtype,
                        "eva", generator=torch.Generator().manual_seed(1))
    return wm, tr, traj


def _lp(tr, traj, idx, k):
    return grpo.step_log_prob(tr, traj, idx, k, tr.config.patch_size, tr.dtype, "cpu")


def test_on_policy_ratio_is_exactly_one_before_the_first_update(setup):
    wm, tr, traj = setup
    assert traj.hist_len == 1 and traj.states.shape[:2] == (G, 5)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    for k in range(4):
        for idx in (torch.arange(G), torch.tensor([2, 0])):  # the whole group and a shuffled minibatch
            with torch.no_grad():
                out = _lp(tr, traj, idx, k)
            assert torch.equal(out.log_prob, traj.log_probs[idx, k])
            loss = grpo.grpo_step_loss(tr, tr, traj, idx, k, adv[idx], 1e-5, 0.0, tr.config.patch_size, tr.dtype, "cpu")
            assert torch.equal(loss.ratio, torch.ones(len(idx)))
            assert float(loss.clip_frac) == 0.0 and float(loss.approx_kl) == 0.0


def test_history_frames_do_not_enter_the_log_prob(setup):
    wm, tr, traj = setup
    hl, k, idx = traj.hist_len, 1, torch.arange(G)
    base = _lp(tr, traj, idx, k)
    # by hand: a Gaussian over the FUTURE frames only
    fut = traj.states[:, k + 1, :, hl:]
    assert torch.allclose(base.log_prob, sde.gaussian_log_prob(fut, base.mean, base.std), atol=1e-6)
    changed = grpo.Trajectories(**{**traj.__dict__, "states": traj.states.clone()})
    changed.states[:, k + 1, :, :hl] += 3.0  # a different history frame in x_{k+1}
    assert torch.equal(_lp(tr, changed, idx, k).log_prob, base.log_prob)
    changed.states[:, k + 1, :, hl:] += 0.1  # a different future frame does change it
    assert not torch.allclose(_lp(tr, changed, idx, k).log_prob, base.log_prob)
    # EVA's unmasked mean over all frames would differ: the masked one is not that
    x_all = traj.states[:, k + 1]
    v_shape = (G, 16, x_all.shape[2] - hl)
    assert base.mean.shape[:3] == v_shape


def test_history_is_clean_in_every_stored_state(setup):
    wm, tr, traj = setup
    hl = traj.hist_len
    for k in range(traj.states.shape[1]):
        assert torch.equal(traj.states[:, k, :, :hl], traj.states[:1, 0, :, :hl].expand(G, -1, -1, -1, -1))


def test_reference_with_adapter_disabled_equals_the_base_model(setup):
    from eva_core.world_model.tiny import build_tiny_transformer

    wm, tr, traj = setup
    base = build_tiny_transformer()  # the same seed: the weights under the adapter
    idx, k = torch.arange(G), 2
    with_adapter = _lp(tr, traj, idx, k).mean
    ref = grpo.reference_mean(tr, tr, traj, idx, k, tr.config.patch_size, tr.dtype, "cpu")
    plain = _lp(base, traj, idx, k).mean
    assert torch.equal(ref, plain)
    assert not torch.allclose(with_adapter, plain)
    assert torch.equal(_lp(tr, traj, idx, k).mean, with_adapter)  # the adapter is back on afterwards


def test_kl_term_matches_a_hand_computation(setup):
    from eva_core.world_model.tiny import build_tiny_transformer

    wm, tr, traj = setup
    idx, k, beta = torch.arange(G), 1, 0.004
    pol = _lp(tr, traj, idx, k)
    ref = _lp(build_tiny_transformer(), traj, idx, k)
    sigma, sigma_next = float(traj.sigmas[k]), float(traj.sigmas[k + 1])
    std = float(traj.sigmas[1]) * sigma * (sigma - sigma_next) ** 0.5  # EVA: sigmas[1]·σ·sqrt(|dt|)
    hand = ((pol.mean - ref.mean).detach() ** 2).mean(dim=(1, 2, 3, 4)) / (2 * std**2)
    assert torch.allclose(sde.kl_to_reference(pol.mean, ref.mean, pol.std), hand, rtol=1e-5)
    adv = torch.zeros(G)  # policy term 0: the loss is beta * KL
    out = grpo.grpo_step_loss(tr, tr, traj, idx, k, adv, 1e-5, beta, tr.config.patch_size, tr.dtype, "cpu")
    assert float(out.kl) == pytest.approx(float(hand.mean()), rel=1e-5)
    assert float(out.loss) == pytest.approx(beta * float(hand.mean()), rel=1e-5)
    assert float(out.kl) > 0


def test_advantages_are_normalised_per_group():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0,  # group 0
                      101.0, 102.0, 103.0, 104.0,  # group 1: same spread, other level
                      7.0, 7.0, 7.0, 7.0])  # group 2: no spread
    adv, zero = grpo.group_advantages(r, 4, clip=5.0)
    a = adv.view(3, 4)
    assert torch.allclose(a[0], a[1], atol=1e-5)  # only the within-group rank matters
    assert torch.allclose(a[:2].mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(a[:2].std(1, unbiased=False), torch.ones(2), atol=1e-3)
    assert torch.equal(a[2], torch.zeros(4)) and zero == pytest.approx(1 / 3)
    # a pooled (batch-wide) normalisation would give group 1 positive advantages throughout
    assert (a[1] < 0).sum() == 2
    out, _ = grpo.group_advantages(torch.tensor([0.0] * 30 + [1.0]), 31, clip=5.0)
    assert float(out.max()) == 5.0
    with pytest.raises(ValueError):
        grpo.group_advantages(torch.zeros(5), 4)


def test_clipped_objective_stops_the_gradient_outside_the_trust_region():
    old = torch.zeros(3)
    new = torch.tensor([0.5, 0.0, -0.5], requires_grad=True)  # ratios e^0.5, 1, e^-0.5
    adv = torch.tensor([1.0, 1.0, -1.0])
    out = grpo.clipped_objective(new, old, adv, clip_range=0.1)
    out.loss.backward()
    assert new.grad[0] == 0 and new.grad[2] == 0 and new.grad[1] != 0  # clipped where it would help more
    assert float(out.clip_frac) == pytest.approx(2 / 3)


def test_sde_window_never_contains_the_last_step():
    rng = random.Random(0)
    for _ in range(50):
        m = grpo.sde_window(10, 2, rng)
        assert int(m.sum()) == 2 and not m[-1]
        idx = torch.nonzero(m).flatten()
        assert int(idx[1] - idx[0]) == 1
    assert bool(grpo.sde_window(10, 0, rng).all())


def test_ode_steps_outside_the_window_are_deterministic(setup):
    wm, tr, traj = setup
    inp_noise = traj.states[:, 0].clone()
    window = torch.tensor([False, True, False, False])
    cond = grpo.Conditioning(traj.text[:1], traj.image[:1], traj.states[:1, 0, :, :traj.hist_len])
    a = grpo.rollout(tr, cond, inp_noise, traj.timesteps, traj.sigmas, window, tr.config.patch_size, tr.dtype,
                     generator=torch.Generator().manual_seed(5))
    b = grpo.rollout(tr, cond, inp_noise, traj.timesteps, traj.sigmas, window, tr.config.patch_size, tr.dtype,
                     generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.states[:, 1], b.states[:, 1])  # step 0 is the ODE: no noise drawn
    assert not torch.equal(a.states[:, 2], b.states[:, 2])  # step 1 is the SDE
    assert torch.equal(a.log_probs[:, [0, 2, 3]], torch.zeros(G, 3)) and bool((a.log_probs[:, 1] != 0).all())


def test_minibatches_are_accumulated_into_one_optimiser_step_per_run(setup):
    """optimizer_steps_per_epoch=1: four minibatches of one sample give exactly the gradient of one
    minibatch of four (the mean over samples and trained steps), and the optimiser steps once."""
    from accelerate import Accelerator

    from training.grpo import GRPOSection, TrainSection, update

    wm, tr, traj = setup
    params = [p for n, p in tr.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])

    class Capture:   # records the gradient at each step, changes nothing
        def __init__(self):
            self.grads = []

        def step(self):
            self.grads.append(torch.cat([p.grad.flatten().clone() for p in params]))

        def zero_grad(self, set_to_none=True):
            for p in params:
                p.grad = None

    got = {}
    for bs in (1, 4):
        opt = Capture()
        g = GRPOSection(group_size=G, num_steps=4, num_inner_epochs=1, train_batch_size=bs, timestep_fraction=1.0,
                        clip_range=1.0, beta=0.004, optimizer_steps_per_epoch=1)
        update(Accelerator(cpu=True), tr, tr, opt, params, [traj], adv, g, TrainSection(grad_clip=1e9),
               random.Random(0), tr.config.patch_size, tr.dtype)
        assert len(opt.grads) == 1
        got[bs] = opt.grads[0]
    assert got[4].norm() > 0 and (got[1] - got[4]).norm() < 1e-4 * got[4].norm()
    # two optimiser steps an epoch (Flow-GRPO's num_batches_per_epoch // 2)
    opt = Capture()
    g = GRPOSection(group_size=G, num_steps=4, num_inner_epochs=2, train_batch_size=1, clip_range=1.0,
                    optimizer_steps_per_epoch=2)
    update(Accelerator(cpu=True), tr, tr, opt, params, [traj], adv, g, TrainSection(), random.Random(0),
           tr.config.patch_size, tr.dtype)
    assert len(opt.grads) == 4
    tr.eval()


@pytest.mark.slow   # about 70 s (a real GRPO run)
def test_grpo_raises_a_reward_the_policy_can_reach():
    """The machinery learns, apart from the toy VAE and IDM: with the reward "mean future latent"
    (reachable by the adapter), a few GRPO steps of training.grpo.update (group 64, Adam, β = 0.004,
    clip 1e-2) raise it on fixed evaluation seeds, sample by sample, by several standard errors."""
    from accelerate import Accelerator

    from eva_core.world_model.training import setup_trainable
    from training.grpo import GRPOSection, TrainSection, update

    torch.manual_seed(0)
    wm = WorldModel.from_config(WorldModelConfig.tiny_default(num_frames=9, height=32, width=32))
    tr = wm.transformer
    params = setup_trainable(tr, "lora", 8, 8.0, False)
    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(32, 32, 3, generator=gen) * 255).to(torch.uint8).numpy()
    inp = wm.conditioning("pick up the cup", wm.context_clip(image, None))
    cond = grpo.Conditioning(inp.text, inp.image, inp.hist_latents)
    wm.c.scheduler.set_timesteps(6)
    ts, sig = wm.c.scheduler.timesteps.float(), wm.c.scheduler.sigmas.float()
    patch, full = tr.config.patch_size, torch.ones(6, dtype=torch.bool)

    def rollout(n, seed):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, *wm.latent_shape), generator=g)
        t = grpo.rollout(tr.eval(), cond, noise, ts, sig, full, patch, tr.dtype, "eva", generator=g)
        return t, t.final[:, :, cond.hist_len:].mean(dim=(1, 2, 3, 4))

    def evaluate():   # the same seeds before and after: compared sample by sample
        with torch.no_grad():
            return torch.cat([rollout(32, 10_000 + s)[1] for s in range(2)])

    g = GRPOSection(group_size=64, num_steps=6, num_inner_epochs=1, train_batch_size=16, clip_range=1e-2, beta=0.004)
    opt = torch.optim.AdamW(params, lr=5e-3, weight_decay=1e-4)
    before = evaluate()
    for step in range(12):
        t, r = rollout(64, step)
        adv, _ = grpo.group_advantages(r, 64)
        update(Accelerator(cpu=True), tr, tr, opt, params, [t], adv, g, TrainSection(), random.Random(step), patch, tr.dtype)
    d = evaluate() - before
    se = float(d.std() / len(d) ** 0.5)
    assert float(d.mean()) > 4 * se, (float(before.mean()), float(d.mean()), se)
