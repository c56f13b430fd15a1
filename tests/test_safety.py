"""Safety filter on adversarial input: outputs never leave limits or exceed rate limits."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eva_core.embodiment import load_embodiment
from eva_core.safety import SafetyConfig, SafetyFilter, braking_speed

pytestmark = pytest.mark.unit

EMB = load_embodiment()
DT = 1 / 200
TOL = 1e-7


def check_bounds(out, start_pos, start_vel, filt):
    """Positions inside hard limits, |v| <= vel_max, |dv| <= acc_max*dt at every tick."""
    assert np.all(np.isfinite(out))
    assert np.all(out >= EMB.pos_lower - 1e-12) and np.all(out <= EMB.pos_upper + 1e-12)
    pos = np.vstack([start_pos, out])
    vel = np.diff(pos, axis=0) / DT
    assert np.all(np.abs(vel) <= filt.vel_max + TOL)
    vel = np.vstack([start_vel, vel])
    acc = np.diff(vel, axis=0) / DT
    assert np.all(np.abs(acc) <= filt.acc_max + 1e-5)  # float noise of the differences


def inside_state(draw_unit, draw_vel):
    lo, hi = EMB.pos_lower + 0.01, EMB.pos_upper - 0.01
    pos = lo + draw_unit * (hi - lo)
    return pos


adversarial = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e9, -1e9, 0.0, 4.0, -4.0]),
    st.floats(-4, 4),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    unit=arrays(np.float64, 14, elements=st.floats(0, 1)),
    vel_frac=arrays(np.float64, 14, elements=st.floats(-1, 1)),
    targets=arrays(np.float64, st.tuples(st.integers(1, 40), st.just(14)), elements=adversarial),
)
def test_never_leaves_limits_or_rate_limits(unit, vel_frac, targets):
    filt = SafetyFilter(EMB, DT)
    start = inside_state(unit, None)
    # a start velocity from which stopping inside the limits is possible
    room_up = braking_speed(filt.upper - start, filt.acc_max, DT)
    room_dn = braking_speed(start - filt.lower, filt.acc_max, DT)
    v0 = np.clip(vel_frac * filt.vel_max, -room_dn, room_up)
    out, rep = filt.filter_chunk(targets, start, v0)
    assert out.shape == targets.shape
    check_bounds(out, start, v0, filt)
    if not np.all(np.isfinite(targets)):
        assert rep.rejected and "non-finite" in rep.reason
        # a rejected chunk only brakes: speed never grows
        speeds = np.abs(np.diff(np.vstack([start, out]), axis=0) / DT)
        assert np.all(np.diff(np.vstack([np.abs(v0), speeds]), axis=0) <= 1e-9)


def test_full_range_jump_in_one_step_is_rate_limited():
    filt = SafetyFilter(EMB, DT)
    start = EMB.pos_lower + 0.01
    targets = np.tile(EMB.pos_upper, (4000, 1))  # whole range at once, held for 20 s
    out, rep = filt.filter_chunk(targets, start)
    check_bounds(out, start, np.zeros(14), filt)
    np.testing.assert_allclose(out[-1], filt.upper, atol=1e-6)  # it gets there, inside the margin
    assert rep.acceleration_limited.min() > 0
    assert rep.position_clipped[list(EMB.arm_indices)].min() > 0  # margin clips joints, not grippers
    assert not rep.rejected


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_chunk_is_rejected_and_holds(value):
    filt = SafetyFilter(EMB, DT)
    start = (EMB.pos_lower + EMB.pos_upper) / 2
    targets = np.tile(start + 0.1, (10, 1))
    targets[5, 3] = value
    out, rep = filt.filter_chunk(targets, start)
    assert rep.rejected and "[3]" in rep.reason
    np.testing.assert_allclose(out, np.tile(start, (10, 1)))  # at rest: hold exactly


def test_empty_and_misshapen_chunks_are_rejected():
    filt = SafetyFilter(EMB, DT)
    start = (EMB.pos_lower + EMB.pos_upper) / 2
    out, rep = filt.filter_chunk(np.empty((0, 14)), start)
    assert out.shape == (0, 14) and rep.rejected and "empty" in rep.reason
    out, rep = filt.filter_chunk(np.zeros((5, 13)), start)
    assert out.shape == (0, 14) and rep.rejected and "shape" in rep.reason


def test_step_requires_reset_and_rejects_nan_state():
    filt = SafetyFilter(EMB, DT)
    with pytest.raises(RuntimeError, match="reset"):
        filt.step(np.zeros(14))
    with pytest.raises(ValueError, match="NaN"):
        filt.reset(np.full(14, np.nan))
    with pytest.raises(ValueError, match="expected"):
        filt.reset(np.zeros(3))


def test_step_target_is_reached_without_overshoot():
    filt = SafetyFilter(EMB, DT)
    start = (EMB.pos_lower + EMB.pos_upper) / 2
    target = start.copy()
    target[0] += 1.0
    target[6] = 0.9
    out, rep = filt.filter_chunk(np.tile(target, (800, 1)), start)
    np.testing.assert_allclose(out[-1], target, atol=1e-6)
    assert out[:, 0].max() <= target[0] + 1e-4 and out[:, 6].max() <= target[6] + 1e-4


def test_feasible_trajectory_passes_nearly_unchanged():
    filt = SafetyFilter(EMB, DT)
    start = (EMB.pos_lower + EMB.pos_upper) / 2
    t = np.arange(1, 1001) * DT
    traj = np.tile(start, (1000, 1))
    traj[:, 0] += 0.3 * (1 - np.cos(2 * np.pi * 0.3 * t))  # starts at rest, |a| <= 1.07
    out, rep = filt.filter_chunk(traj, start)
    assert np.abs(out - traj).max() < 1e-3
    assert rep.velocity_limited.sum() == 0 and rep.position_clipped.sum() == 0


def test_report_counts_only_changed_dims():
    filt = SafetyFilter(EMB, DT)
    start = (EMB.pos_lower + EMB.pos_upper) / 2
    target = start.copy()
    target[8] = 100.0  # right_joint2 far outside its limit
    out, rep = filt.filter_chunk(np.tile(target, (20, 1)), start)
    assert rep.position_clipped[8] == 20
    assert rep.position_clipped.sum() == 20 and rep.acceleration_limited[8] > 0
    assert rep.as_dict()["ticks"] == 20


def test_margin_and_scales_are_applied():
    cfg = SafetyConfig.from_dict({"position_margin": 0.1, "velocity_scale": 0.5})
    filt = SafetyFilter(EMB, DT, cfg)
    np.testing.assert_allclose(filt.upper[:6], EMB.pos_upper[:6] - 0.1)
    np.testing.assert_allclose(filt.vel_max, EMB.vel_max * 0.5)
    out, _ = filt.filter_chunk(np.tile(EMB.pos_upper, (3000, 1)), (EMB.pos_lower + EMB.pos_upper) / 2)
    assert np.all(out[:, :6] <= EMB.pos_upper[:6] - 0.1 + 1e-9)
    with pytest.raises(ValueError, match="unknown key"):
        SafetyConfig.from_dict({"velocity_scael": 0.5})
    with pytest.raises(ValueError, match="velocity_scale"):
        SafetyConfig.from_dict({"velocity_scale": 2.0})


def test_braking_bound_is_exactly_consistent():
    # after one tick at the bound, the bound drops by exactly acc*dt (no acc violation needed)
    acc, dt = 5.0, DT
    d = np.linspace(0, 2, 50)
    v = braking_speed(d, acc, dt)
    np.testing.assert_allclose(braking_speed(d - v * dt, acc, dt), np.maximum(v - acc * dt, 0), atol=1e-9)
    # and the stop really fits: simulate it
    for d0, v0 in zip(d, v):
        x, s = 0.0, v0
        while s > 0:
            x += s * dt
            s -= acc * dt
        assert x <= d0 + 1e-12


@pytest.mark.parametrize("field, value", [("pos_upper", np.nan), ("pos_lower", -np.inf), ("vel_max", np.inf),
                                          ("vel_max", np.nan), ("acc_max", np.nan), ("acc_max", 0.0)])
def test_non_finite_or_unordered_limits_are_refused(field, value):
    import dataclasses

    arr = np.array(getattr(EMB, field))
    arr[3] = value
    bad = dataclasses.replace(EMB, **{field: arr})
    with pytest.raises(ValueError, match=r"safety filter: embodiment 'cobot_magic': .*\['left_joint4'\]"):
        SafetyFilter(bad, dt=0.005)


def test_a_non_finite_output_is_rejected_never_passed():
    mid = (EMB.pos_lower + EMB.pos_upper) / 2
    filt = SafetyFilter(EMB, dt=0.005)
    filt.reset(mid)
    filt.upper = filt.upper.copy()
    filt.upper[2] = np.nan  # limits corrupted after the checks
    filt.acc_max = filt.acc_max.copy()
    filt.acc_max[5] = np.nan
    out, rep = filt.step(mid + 0.01)
    assert rep.rejected and "non-finite output" in rep.reason
    assert np.all(np.isfinite(out)) and np.allclose(out, mid)
    chunk, crep = filt.filter_chunk(np.tile(mid + 0.01, (5, 1)), mid)
    assert crep.rejected and np.all(np.isfinite(chunk))
