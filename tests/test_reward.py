"""Executability reward: hand-computed sequences, a plain NumPy reference of EVA's released reward, batching."""

import dataclasses
import re

import numpy as np
import pytest
import torch

from eva_core.embodiment import load_embodiment
from eva_core.reward import RewardConfig, executability_reward, huber, plot_action_curves

pytestmark = pytest.mark.unit

EMB = load_embodiment()
CFG = RewardConfig.from_embodiment(EMB)
FPS = 16.0


def reference_reward(A, fps=16.0):
    """EVA's released reward written out directly, one sequence, NumPy, constants typed in."""
    T = A.shape[0]
    if T < 4:
        return 0.0
    dt = 1.0 / fps
    deg = np.array([180, 195, 180, 225, 225, 225]) * np.pi / 180 * 0.85
    vmax = np.concatenate([deg, [2.0], deg, [2.0]])
    amax = np.array([5.0] * 6 + [10.0] + [5.0] * 6 + [10.0])
    w = np.array([1.0] * 6 + [0.2] + [1.0] * 6 + [0.2])
    w = w / w.mean()
    v = np.diff(A, axis=0) / dt
    a = np.diff(v, axis=0) / dt
    j = np.diff(a, axis=0) / dt

    def hub(x, d):
        return np.where(np.abs(x) <= d, 0.5 * x**2, d * (np.abs(x) - 0.5 * d))

    P = (0.5 * np.mean(hub(j, 0.5 * amax / dt) * w) + 0.25 * np.mean(hub(a, 0.5 * amax) * w)
         + 2.0 * np.mean(np.maximum(np.abs(v) - vmax, 0) ** 2 * w) + 1.0 * np.mean(np.maximum(np.abs(a) - amax, 0) ** 2 * w))
    return 10.0 * (1.0 + P / 2000.0) ** -0.5


def smooth(T=32, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None] / FPS
    return 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0, 14) * t + rng.uniform(0, 6, 14)) + (EMB.pos_lower + EMB.pos_upper) / 2


def test_constant_velocity_scores_10():
    T = 24
    v = np.linspace(-1.0, 1.0, 14)  # within every velocity limit
    A = 0.1 + np.arange(T)[:, None] / FPS * v
    res = executability_reward(A, fps=FPS, config=CFG)
    assert float(res.score) == pytest.approx(10.0, abs=1e-9)
    assert all(float(c) == pytest.approx(0.0, abs=1e-12) for c in res.components.values())
    assert float(executability_reward(np.zeros((10, 14)), config=CFG).score) == pytest.approx(10.0)


def test_single_frame_jump_is_penalised_and_matches_hand_values():
    T = 12
    A = np.zeros((T, 14))
    A[6, 0] = 0.1  # one frame of joint 1 jumps by 0.1 rad
    res = executability_reward(A, fps=FPS, config=CFG)
    assert float(res.score) < 10.0
    # Hand computation: v = +-1.6 (below v_max), a = 25.6, -51.2, 25.6 at 16 fps.
    amax, dt, w0 = 5.0, 1 / FPS, 1.0 / ((12 * 1.0 + 2 * 0.2) / 14)
    acc_huber = 2 * (2.5 * (25.6 - 1.25)) + 2.5 * (51.2 - 1.25)
    assert float(res.components["acceleration"]) == pytest.approx(acc_huber * w0 / (10 * 14))
    acc_lim = 2 * (25.6 - 5) ** 2 + (51.2 - 5) ** 2
    assert float(res.components["acceleration_limit"]) == pytest.approx(acc_lim * w0 / (10 * 14))
    assert float(res.components["velocity_limit"]) == 0.0
    dj = 0.5 * amax / dt  # 40: every jerk value (409.6, 1228.8) is in the linear part
    jerk_h = 2 * dj * (409.6 - dj / 2) + 2 * dj * (1228.8 - dj / 2)
    assert float(res.components["jerk"]) == pytest.approx(jerk_h * w0 / (9 * 14))
    assert float(res.score) == pytest.approx(reference_reward(A), rel=1e-12)
    bigger = A.copy()
    bigger[6, 0] = 0.5
    assert float(executability_reward(bigger, config=CFG).score) < float(res.score)


def test_fewer_than_4_frames_gives_0():
    for T in (0, 1, 2, 3):
        res = executability_reward(np.zeros((T, 14)), config=CFG)
        assert float(res.score) == 0.0
    assert float(executability_reward(np.zeros((4, 14)), config=CFG).score) == pytest.approx(10.0)
    batch = executability_reward(torch.zeros(5, 3, 14), config=CFG)
    assert batch.score.shape == (5,) and torch.all(batch.score == 0)


@pytest.mark.parametrize("seed", range(4))
def test_matches_plain_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    A = smooth(40, seed) + rng.normal(0, 0.02 * (seed + 1), (40, 14))  # noisy: all terms active
    A[20:, 3] += 0.4 * seed  # a step on some seeds
    res = executability_reward(A, fps=FPS, config=CFG)
    assert float(res.score) == pytest.approx(reference_reward(A, FPS), rel=1e-10)
    assert float(executability_reward(A, fps=30.0, config=CFG).score) == pytest.approx(reference_reward(A, 30.0), rel=1e-10)


def test_batch_equals_loop_and_tensor_equals_numpy():
    rng = np.random.default_rng(3)
    batch = np.stack([smooth(30, s) + rng.normal(0, 0.01 * s, (30, 14)) for s in range(6)])
    res = executability_reward(torch.from_numpy(batch), fps=FPS, config=CFG)
    loop = [executability_reward(b, fps=FPS, config=CFG) for b in batch]
    assert res.score.shape == (6,)
    assert torch.allclose(res.score, torch.stack([r.score for r in loop]), rtol=1e-12)
    for name in res.components:
        assert torch.allclose(res.components[name], torch.stack([r.components[name] for r in loop]), rtol=1e-12)
    f32 = executability_reward(torch.from_numpy(batch).float(), fps=FPS, config=CFG)
    assert f32.score.dtype == torch.float32
    assert torch.allclose(f32.score.double(), res.score, rtol=1e-4)


def test_velocity_limit_component_and_nonfinite_actions():
    T = 16
    A = np.zeros((T, 14))
    A[:, 0] = np.arange(T) / FPS * (EMB.vel_max[0] + 1.0)  # 1 rad/s over the limit, constant
    res = executability_reward(A, config=CFG)
    assert float(res.components["velocity_limit"]) == pytest.approx(1.0 / ((12 + 0.4) / 14) / 14)
    assert float(res.components["jerk"]) == pytest.approx(0.0, abs=1e-12)
    assert float(res.score) < 10.0
    A[5, 2] = np.nan
    assert float(executability_reward(A, config=CFG).score) == 0.0


def test_constants_come_from_the_embodiment_and_config():
    cfg = RewardConfig.from_embodiment(EMB)
    assert np.array_equal(cfg.vel_max, EMB.vel_max) and np.array_equal(cfg.acc_max, EMB.acc_max)
    assert np.array_equal(cfg.weights, EMB.reward_weights)
    A = np.zeros((16, 14))
    A[:, 0] = np.arange(16) / FPS * 2.5  # 2.5 rad/s: under the Piper limit (2.67)
    assert float(executability_reward(A, config=cfg).score) == pytest.approx(10.0)
    slow_robot = dataclasses.replace(EMB, vel_max=EMB.vel_max * 0.5)
    assert float(executability_reward(A, config=RewardConfig.from_embodiment(slow_robot)).score) < 10.0
    soft = cfg.with_overrides(p0=1e9)
    jumpy = A.copy()
    jumpy[8] += 0.2
    assert float(executability_reward(jumpy, config=soft).score) > float(executability_reward(jumpy, config=cfg).score)
    with pytest.raises(ValueError, match="not_a_field: unknown key"):
        cfg.with_overrides(not_a_field=1)
    with pytest.raises(ValueError, match=r"\(T, 14\)"):
        executability_reward(np.zeros((10, 7)), config=CFG)


def test_position_limit_extension_is_off_by_default():
    mid = (EMB.pos_lower + EMB.pos_upper) / 2
    A = np.tile(mid, (12, 1))
    A[:, 2] = EMB.pos_upper[2] + 0.3  # joint 3 held 0.3 rad above its limit, not moving
    assert float(executability_reward(A, config=CFG).score) == pytest.approx(10.0)  # EVA: no position term
    cfg = RewardConfig.from_embodiment(EMB, position_limit=True)
    res = executability_reward(A, config=cfg)
    w3 = 1.0 / ((12 + 0.4) / 14)
    assert float(res.components["position_limit"]) == pytest.approx(0.09 * w3 / 14)
    assert float(res.score) < 8.0  # scaled to matter against P0 = 2000
    inside = np.tile(mid, (12, 1))
    assert float(executability_reward(inside, config=cfg).score) == pytest.approx(10.0)


def test_huber_definition():
    x = torch.tensor([-3.0, -1.0, 0.5, 2.0])
    assert torch.allclose(huber(x, torch.tensor(1.0)), torch.tensor([2.5, 0.5, 0.125, 1.5]))


def test_plot_action_curves_writes_a_png(tmp_path):
    A = smooth(20)
    fig = plot_action_curves(A, tmp_path / "idm_plot.png", names=EMB.joint_names, reference=A + 0.01,
                             lower=EMB.pos_lower, upper=EMB.pos_upper, title="decoded")
    assert (tmp_path / "idm_plot.png").stat().st_size > 1000
    assert len([ax for ax in fig.axes if ax.lines]) == 14
    plot_action_curves(A, tmp_path / "run.v2" / "curves")  # no suffix: PNG, whatever the directory is called
    assert (tmp_path / "run.v2" / "curves").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_there_is_no_default_robot_and_bad_coefficients_are_refused(tmp_path):
    with pytest.raises(TypeError, match="config"):
        executability_reward(np.zeros((10, 14)))
    with pytest.raises(TypeError, match="needs an Embodiment"):
        RewardConfig.from_embodiment("cobot_magic")
    assert float(executability_reward(np.zeros((10, 14)), config=EMB).score) == pytest.approx(10.0)
    for bad in ({"p0": float("nan")}, {"p0": 0.0}, {"gamma": -1.0}, {"min_frames": 2}, {"position_limit": "yes"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CFG.with_overrides(**bad)
    for fps in (0.0, -16.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps"):
            executability_reward(np.zeros((10, 14)), fps=fps, config=CFG)


def test_the_terms_table_computes_and_reports_every_term(monkeypatch):
    from eva_core.reward import executability as ex

    cfg = RewardConfig.from_embodiment(EMB, position_limit=True)
    A = smooth(20) + 0.05 * np.random.default_rng(1).normal(size=(20, 14))
    res = executability_reward(A, config=cfg)
    assert list(res.components) == [t.name for t in ex.TERMS]
    assert float(res.penalty) == pytest.approx(sum(getattr(cfg, t.coef) * float(res.components[t.name]) for t in ex.TERMS))
    assert list(executability_reward(A[:2], config=cfg).components) == [t.name for t in ex.TERMS]   # short: zeros
    assert "position_limit" not in executability_reward(A, config=CFG).components
    # a new term is one entry of the table: it is computed, weighted and reported
    extra = ex.Term("speed", "acc_coef", lambda k: k.v.abs())
    monkeypatch.setattr(ex, "TERMS", ex.TERMS + (extra,))
    more = executability_reward(A, config=cfg)
    speed = float(np.mean(np.abs(np.diff(A, axis=0) * FPS) * (EMB.reward_weights / EMB.reward_weights.mean())))
    assert float(more.components["speed"]) == pytest.approx(speed)
    assert float(more.penalty) == pytest.approx(float(res.penalty) + cfg.acc_coef * speed)


def test_reward_config_is_a_typed_section():
    from eva_core.config import ConfigError

    with pytest.raises(ConfigError) as e:
        RewardConfig.from_embodiment(EMB, jerk_cof=1.0)
    assert (e.value.section, e.value.key) == ("embodiment.reward", "jerk_cof") and "did you mean 'jerk_coef'" in str(e.value)
    assert str(EMB.config_file) in str(e.value)
    for bad, problem in (({"acc_coef": -1.0}, ">= 0"), ({"min_frames": 4.5}, "expected int"),
                         ({"vel_max": [1.0] * 13}, "(D,) alike"), ({"weights": [0.0] * 14}, "not all 0"),
                         ({"acc_max": [float("inf")] * 14}, "finite")):
        with pytest.raises(ConfigError, match=re.escape(problem)):
            CFG.with_overrides(**bad)
    assert CFG.with_overrides(p0=1000).p0 == 1000.0 and isinstance(CFG.with_overrides(p0=1000).p0, float)
    assert CFG.with_overrides(vel_max=[2.0] * 14).vel_max.dtype == np.float64
