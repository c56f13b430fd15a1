"""EVA's 3-branch guided sampler and the WorldModel interface, on tiny random models."""

import numpy as np
import pytest
import torch

from eva_core.world_model import WorldModel, WorldModelConfig, sampler, tiny

pytestmark = pytest.mark.unit

torch.set_num_threads(1)

B, F, H, W = 1, 3, 8, 8  # latent video: 3 latent frames of 8x8 (a 9x64x64 clip)
HIST = 2


@pytest.fixture(scope="module")
def transformer():
    return tiny.build_tiny_transformer({"seed": 11})


def make_inputs(seed=0, hist_len=HIST):
    g = torch.Generator().manual_seed(seed)
    s = tiny.TINY_DEFAULTS
    return sampler.GuidanceInputs(
        text=torch.randn(B, 512, s["text_dim"], generator=g),
        text_neg=torch.randn(B, 512, s["text_dim"], generator=g),
        image=torch.randn(B, 5, s["image_dim"], generator=g),
        y=torch.zeros(B, 20, F, H, W),
        hist_latents=torch.randn(B, 16, hist_len, H, W, generator=g) if hist_len else None,
    )


def by_hand_timesteps(t, t_hist, hist_len):
    """Per-token timesteps written out independently: tokens are frame-major, (H/2)*(W/2) per frame."""
    per = (H // 2) * (W // 2)
    ts = torch.full((B, F * per), float(t))
    ts[:, : hist_len * per] = float(t_hist)
    return ts


def fwd(tr, lat, ts, text, image, y):
    x = torch.cat([lat, y], dim=1)
    return tr(hidden_states=x, timestep=ts, encoder_hidden_states=text, encoder_hidden_states_image=image,
              return_dict=False)[0]


@torch.no_grad()
def test_guided_combination_equals_three_separate_forwards(transformer):
    inp = make_inputs()
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(B, 16, F, H, W, generator=g)
    lat[:, :, :HIST] = inp.hist_latents
    hist_noise = torch.randn(B, 16, HIST, H, W, generator=g)
    t, t_min, t_max = torch.tensor(600.0), torch.tensor(25.0), torch.tensor(999.0)
    hg, lg = 1.5, 2.5

    v = sampler.guided_velocity(transformer, lat, t, t_min, t_max, inp, hist_noise, hg, lg, batched=True)

    cond = fwd(transformer, lat, by_hand_timesteps(t, t_min, HIST), inp.text, inp.image, inp.y)
    no_lang = fwd(transformer, lat, by_hand_timesteps(t, t_min, HIST), inp.text_neg, inp.image, inp.y)
    lat_nh = lat.clone()
    lat_nh[:, :, :HIST] = hist_noise
    no_hist = fwd(transformer, lat_nh, by_hand_timesteps(t, t_max, HIST), inp.text, inp.image, inp.y)
    expected = (1 + lg + hg) * cond - lg * no_lang - hg * no_hist

    assert not torch.allclose(cond, no_lang, atol=1e-4) and not torch.allclose(cond, no_hist, atol=1e-4)
    torch.testing.assert_close(v, expected, rtol=1e-4, atol=1e-5)
    # the unbatched path (used by the benchmark) gives the same answer
    v3 = sampler.guided_velocity(transformer, lat, t, t_min, t_max, inp, hist_noise, hg, lg, batched=False)
    torch.testing.assert_close(v3, expected, rtol=1e-4, atol=1e-5)


class ForwardSpy:
    """Records the batch size and per-token timesteps of each transformer forward."""

    def __init__(self, transformer):
        self.calls = []
        self.handle = transformer.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append((kwargs["hidden_states"].shape[0], kwargs["timestep"].clone(), kwargs["hidden_states"].clone()))

    def close(self):
        self.handle.remove()


def test_one_batched_forward_per_step_and_history_timesteps(transformer):
    from diffusers import FlowMatchEulerDiscreteScheduler

    inp = make_inputs()
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    spy = ForwardSpy(transformer)
    try:
        out = sampler.sample(transformer, sched, torch.randn(B, 16, F, H, W), inp, num_steps=3,
                             generator=torch.Generator().manual_seed(0))
    finally:
        spy.close()
    ts = sched.timesteps
    per = (H // 2) * (W // 2)
    assert len(spy.calls) == 3  # one forward per step ...
    for (batch, tok_t, x), t in zip(spy.calls, ts):
        assert batch == 3 * B  # ... holding the three branches
        cond_t, no_lang_t, no_hist_t = tok_t.view(3, -1)
        assert torch.all(cond_t[: HIST * per] == ts[-1]) and torch.all(cond_t[HIST * per:] == t)
        assert torch.equal(no_lang_t, cond_t)
        assert torch.all(no_hist_t[: HIST * per] == ts[0]) and torch.all(no_hist_t[HIST * per:] == t)
        # history latents enter clean in cond/no-lang, as noise in no-hist
        assert torch.equal(x[0, :16, :HIST], inp.hist_latents[0])
        assert not torch.allclose(x[2, :16, :HIST], inp.hist_latents[0])
    assert torch.equal(out[:, :, :HIST], inp.hist_latents)


def test_zero_scales_skip_branches(transformer):
    from diffusers import FlowMatchEulerDiscreteScheduler

    spy = ForwardSpy(transformer)
    try:
        for hg, lg, expect in [(0.0, 0.0, 1), (0.0, 2.5, 2), (1.5, 0.0, 2)]:
            spy.calls.clear()
            sampler.sample(transformer, FlowMatchEulerDiscreteScheduler(shift=3.0), torch.randn(B, 16, F, H, W),
                           make_inputs(), num_steps=1, hist_guidance=hg, lang_guidance=lg)
            assert spy.calls[0][0] == expect * B
    finally:
        spy.close()


@pytest.fixture(scope="module")
def wm():
    return WorldModel.from_config(WorldModelConfig.tiny_default())


def frame(seed, shape=(48, 80, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_generate_interface_and_seed_determinism(wm):
    img = frame(0)
    a = wm.generate(img, "pick up the red cup", seed=5)
    assert a.shape == (wm.num_frames, wm.height, wm.width, 3) and a.dtype == np.uint8
    assert set(wm.last_timing) >= {"encode", "denoise", "decode", "total"}
    assert wm.last_info["context_frames"] == 1
    b = wm.generate(img, "pick up the red cup", seed=5)
    np.testing.assert_array_equal(a, b)
    c = wm.generate(img, "pick up the red cup", seed=6)
    assert not np.array_equal(a, c)
    d = wm.generate(frame(1), "pick up the red cup", seed=5)
    assert not np.array_equal(a, d)


def test_history_changes_output_and_is_deterministic(wm):
    img, hist = frame(0), [frame(2), frame(3)]
    a = wm.generate(img, "open the drawer", history=hist, seed=1)
    assert wm.last_info == {**wm.last_info, "context_frames": 5, "hist_latents": 2}
    np.testing.assert_array_equal(a, wm.generate(img, "open the drawer", history=hist, seed=1))
    assert not np.array_equal(a, wm.generate(img, "open the drawer", seed=1)[: len(a)])


def test_instruction_embeddings_cached(wm):
    before = wm.prompts.encode_calls
    wm.generate(frame(0), "a brand new instruction", seed=0)
    wm.generate(frame(4), "a brand   new instruction ", seed=1)  # same after whitespace cleaning
    assert wm.prompts.encode_calls - before == 1
    e1, e2 = wm.prompts("wipe the table"), wm.prompts("fold the towel")
    assert not torch.allclose(e1, e2)
    n = len(wm.prompts.tokenizer("wipe the table").input_ids)  # 14 bytes + </s>
    assert n == 15
    assert torch.all(e1[0, n:] == 0) and torch.all(e1[0, :n].abs().sum(-1) > 0)  # zero-padded, as Wan does


def test_bad_inputs_are_named(wm):
    with pytest.raises(ValueError, match="image"):
        wm.generate(np.zeros((10, 10), np.uint8), "x")
    with pytest.raises(ValueError, match=r"history\[1\]"):
        wm.generate(frame(0), "x", history=[frame(1), np.zeros((4, 4, 3), np.float32)])


def test_wan_i2v_conditioning_mode_runs():
    wm = WorldModel.from_config(WorldModelConfig.tiny_default(conditioning="wan_i2v", scheduler="unipc", num_steps=3))
    a = wm.generate(frame(0), "push the box", seed=2)
    assert a.shape == (wm.num_frames, wm.height, wm.width, 3)
    np.testing.assert_array_equal(a, wm.generate(frame(0), "push the box", seed=2))
