"""A faster teacher without retraining: transformer calls counted per chunk by a hook, diffusers'
training-free caches (world_model.cache) inside a cache_context per guidance branch, and the
step-distill schedule of lightx2v's 4-step LoRA. Tiny random models on CPU."""

import numpy as np
import pytest
import torch

from eva_core.config import ConfigError
from eva_core.world_model import WorldModel, WorldModelConfig, cache, sampler
from eva_core.world_model.stage_stats import StageStats

pytestmark = pytest.mark.unit

torch.set_num_threads(1)
IMG = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
# EVA's sampler (UniPC, hist 1.5, lang 2.5) at a step count a unit test affords
EVA = dict(scheduler="unipc", num_steps=12, hist_guidance=1.5, lang_guidance=2.5)


def model(**kw) -> WorldModel:
    return WorldModel.from_config(WorldModelConfig.tiny_default(**kw))


@pytest.mark.parametrize("scheduler", ["euler", "unipc"])
@pytest.mark.parametrize("hg, lg, branches", [(1.5, 2.5, 3), (0.0, 2.5, 2), (1.5, 0.0, 2), (0.0, 0.0, 1)])
def test_transformer_calls_are_steps_times_branches(scheduler, hg, lg, branches):
    """Counted by a forward pre-hook: one call per branch per step, batched or not. With both
    scales 0 the sampler runs the cond branch alone (v = (1+0+0)·cond): one call per step."""
    wm = model(scheduler=scheduler, num_steps=3, hist_guidance=hg, lang_guidance=lg)
    for batched, forwards in ((True, 3), (False, 3 * branches)):
        wm.generate(IMG, "pick", seed=0, batched_guidance=batched)
        assert wm.last_timing["transformer_calls"] == 3 * branches
        assert wm.last_timing["transformer_forwards"] == forwards
    assert {"encode", "denoise", "decode", "total"} <= set(wm.last_timing)


def test_one_branch_without_guidance_is_the_cond_prediction():
    g = torch.Generator().manual_seed(0)
    tr = model().transformer
    f, h, w = 3, 8, 8
    inp = sampler.GuidanceInputs(text=torch.randn(1, 512, 32, generator=g), text_neg=torch.randn(1, 512, 32, generator=g),
                                 image=torch.randn(1, 5, 16, generator=g), y=torch.zeros(1, 20, f, h, w),
                                 hist_latents=torch.randn(1, 16, 1, h, w, generator=g))
    lat = torch.randn(1, 16, f, h, w, generator=g)
    args = (tr, lat, torch.tensor(500.0), torch.tensor(10.0), torch.tensor(999.0), inp, None)
    v, preds = sampler.guided_velocity(*args, 0.0, 0.0, return_branches=True)
    assert list(preds) == ["cond"] and torch.equal(v, preds["cond"])


def test_best_of_counts_every_candidate():
    wm = model(num_steps=2, best_of=3, reward_idm="random_tiny")
    wm.generate(IMG, "pick", seed=0)
    assert wm.last_timing["transformer_calls"] == 3 * 2 * 3


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def uncached():
    wm = model(**EVA)
    return wm.generate(IMG, "pick up the cup", seed=3), wm


@pytest.mark.parametrize("kind", ["first_block", "taylor_seer", "mag"])
def test_each_cache_generates_close_to_the_uncached_teacher(uncached, kind):
    """Measured on this tiny random model (UniPC 12 steps, 3 branches), the relative L2 error of the
    uint8 chunk vs uncached was first_block (0.05) 0.000-0.004, taylor_seer 0.003, mag 0.003;
    asserted loosely (< 0.05)."""
    ref, _ = uncached
    wm = model(**EVA, cache={"kind": kind})
    assert wm.transformer.is_cache_enabled and wm.cache_info["kind"] == kind
    for batched in (True, False):   # one context for the batch, one per branch
        out = wm.generate(IMG, "pick up the cup", seed=3, batched_guidance=batched)
        assert out.shape == ref.shape and _rel_err(out, ref) < 0.05, (kind, batched, _rel_err(out, ref))
        assert wm.last_timing["transformer_calls"] == 12 * 3
    # the state is reset per chunk: the same seed gives the same chunk again
    np.testing.assert_array_equal(wm.generate(IMG, "pick up the cup", seed=3, batched_guidance=False), out)
    if kind == "mag":
        assert wm.cache_info["calibrated"] and len(wm.cache_info["mag_ratios"]) == 12


def test_mag_cache_with_given_ratios_skips_calibration():
    wm = model(**EVA, cache={"kind": "mag", "mag_ratios": [1.0] * 6})   # interpolated to 12 steps
    assert wm.cache_info == {"kind": "mag", "calibrated": False, "mag_ratios": [1.0] * 6}
    wm.generate(IMG, "pick", seed=0)


def _block_calls(wm, **kw) -> int:
    """Computations of block 1's feed-forward: its first linear runs only when the block and its
    MLP really run (a skipped block or a predicted module is still called: the cache hook returns
    the cached residual or the Taylor prediction instead of running it)."""
    calls = []
    handle = wm.transformer.blocks[1].ffn.net[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        wm.generate(IMG, "pick up the cup", seed=3, **kw)
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("cache_cfg", [{"kind": "first_block", "threshold": 0.2}, {"kind": "taylor_seer"},
                                       {"kind": "mag"}])
def test_the_caches_skip_block_computations(uncached, cache_cfg):
    _, plain = uncached
    assert _block_calls(plain) == 12   # one batched forward per step
    wm = model(**EVA, cache=cache_cfg)
    computed = _block_calls(wm)
    assert 0 < computed < 12 and wm.last_timing["transformer_calls"] == 36


def test_without_a_context_diffusers_raises():
    """Why the sampler wraps each call: the hooks have no state to use outside a context."""
    wm = model(**EVA, cache={"kind": "first_block"})
    tr = wm.transformer
    x = torch.zeros(1, 36, 3, 8, 8)
    kw = dict(timestep=torch.zeros(1), encoder_hidden_states=torch.zeros(1, 512, 32),
              encoder_hidden_states_image=torch.zeros(1, 5, 16), return_dict=False)
    with pytest.raises(ValueError, match="No cache context is set"):
        tr(hidden_states=x, **kw)
    with cache.branch_context(tr, "cond"):
        tr(hidden_states=x, **kw)


@pytest.mark.parametrize("bad, key", [
    ({"kind": "first_block", "max_skip_steps": 2}, "max_skip_steps"),
    ({"kind": "none", "threshold": 0.1}, "threshold"),
    ({"kind": "mag", "mag_ratios": [1.0, 0.0]}, "mag_ratios"),
    ({"kind": "mag", "mag_ratio": [1.0]}, "mag_ratio"),
    ({"kind": "teacache"}, "kind"),
    ({"kind": "taylor_seer", "cache_identifiers": ["blocks.(attn"]}, "cache_identifiers"),
])
def test_cache_config_errors_name_the_key(bad, key):
    with pytest.raises(ConfigError) as e:
        WorldModelConfig.from_dict({"cache": bad}, source="wm.yaml", section="world_model")
    assert str(e.value).startswith(f"wm.yaml: world_model.cache: {key}: ")


def test_step_distill_is_lightx2vs_schedule():
    """lightx2v WanStepDistillScheduler: denoising_step_list [1000, 750, 500, 250], sample_shift 5."""
    wm = model(scheduler="step_distill", num_steps=4, shift=5.0, hist_guidance=0.0, lang_guidance=0.0)
    s = wm.c.scheduler
    s.set_timesteps(4)
    expect = [5 * x / (1 + 4 * x) for x in (1.0, 0.75, 0.5, 0.25)]
    np.testing.assert_allclose(s.sigmas.numpy(), expect + [0.0], rtol=1e-6)
    np.testing.assert_allclose(s.timesteps.numpy(), np.array(expect) * 1000, rtol=1e-5)
    a = wm.generate(IMG, "pick", seed=1)
    assert wm.last_timing["transformer_calls"] == 4
    np.testing.assert_array_equal(wm.generate(IMG, "pick", seed=1), a)   # re-noising drawn from the seed
    assert not np.array_equal(wm.generate(IMG, "pick", seed=2), a)


def test_stage_stats_latest_and_p50():
    s = StageStats()
    assert s.summary() == {} and s.values() == {}
    for i, calls in enumerate((36, 12, 12)):
        s.add({"encode": 0.1, "denoise": 1.0 + i, "decode": 0.5, "total": 2.0, "transformer_calls": calls,
               "note": "ignored"})
    s.add({"denoise": float("nan")})
    summ = s.summary()
    assert summ["transformer_calls"] == {"count": 3, "p50": 12.0, "p90": 31.2, "max": 36.0, "last": 12.0}
    assert summ["denoise_s"]["p50"] == 2.0 and summ["denoise_s"]["last"] == 3.0
    v = s.values()
    assert v["transformer_calls_last"] == 12.0 and v["denoise_p50_s"] == 2.0 and v["encode_last_s"] == 0.1
