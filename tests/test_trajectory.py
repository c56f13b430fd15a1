"""eva_core.trajectory: interpolation, smooth replacement, hold (no ROS)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_core.embodiment import load_embodiment
from eva_core.safety import SafetyFilter
from eva_core.trajectory import FollowerConfig, Trajectory, TrajectoryFollower, hermite_decay

pytestmark = pytest.mark.unit

DT = 0.005


@pytest.fixture(scope="module")
def emb():
    return load_embodiment()


def mid(emb):
    return (emb.pos_lower + emb.pos_upper) / 2


def test_trajectory_validates_input(emb):
    q = np.tile(mid(emb), (3, 1))
    with pytest.raises(ValueError, match="non-finite"):
        bad = q.copy()
        bad[1, 4] = np.nan
        Trajectory(0.0, [0.0, 0.1, 0.2], bad)
    with pytest.raises(ValueError, match="increase"):
        Trajectory(0.0, [0.0, 0.1, 0.1], q)
    with pytest.raises(ValueError):
        Trajectory(0.0, [0.0, 0.1], q)


def test_sample_interpolates_and_clamps(emb):
    q0, q1 = mid(emb), mid(emb) + 0.2
    traj = Trajectory(10.0, [0.0, 1.0], np.stack([q0, q1]))
    pos, vel = traj.sample(10.25)
    np.testing.assert_allclose(pos, q0 + 0.05)
    np.testing.assert_allclose(vel, np.full(14, 0.2))
    np.testing.assert_allclose(traj.sample(9.0)[0], q0)
    np.testing.assert_allclose(traj.sample(12.0)[0], q1)
    assert np.all(traj.sample(12.0)[1] == 0)


def test_hermite_decay_boundary_conditions():
    e0, ev0 = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    np.testing.assert_allclose(hermite_decay(e0, ev0, 0.0, 0.2), e0)
    np.testing.assert_allclose(hermite_decay(e0, ev0, 0.2, 0.2), 0.0)
    eps = 1e-6  # derivative at 0 matches ev0
    np.testing.assert_allclose((hermite_decay(e0, ev0, eps, 0.2) - e0) / eps, ev0, rtol=1e-3)


def run(follower, final, t0, ticks):
    cmds, modified = [], 0
    for k in range(ticks):
        target, _ = follower.step(t0 + k * DT)
        cmd, rep = final.step(target)
        modified += int(rep.modified)
        cmds.append(cmd)
    return np.array(cmds), modified


def check_rate_limits(emb, cmds):
    v = np.diff(cmds, axis=0) / DT
    a = np.diff(v, axis=0) / DT
    assert np.all(np.abs(v) <= emb.vel_max * (1 + 1e-9) + 1e-9)
    assert np.all(np.abs(a) <= emb.acc_max * (1 + 1e-6) + 1e-6)


def test_replacement_with_a_jump_stays_within_rate_limits(emb):
    home = mid(emb)
    fol, final = TrajectoryFollower(emb, DT), SafetyFilter(emb, DT)
    fol.reset(home)
    final.reset(home)
    # trajectory A: joint 0 moving at 0.5 rad/s for 2 s
    t = np.arange(401) * DT
    a = np.tile(home, (401, 1))
    a[:, 0] += 0.5 * t
    assert fol.replace(Trajectory(0.0, t, a), 0.0)
    cmds1, mod1 = run(fol, final, 0.0, 100)
    # trajectory B replaces it at t=0.5 s, 1 rad away and moving the other way
    b = np.tile(home, (401, 1))
    b[:, 0] += 1.0 - 0.5 * t
    b[:, 3] += 0.6
    assert fol.replace(Trajectory(0.5, t, b), 0.5)
    cmds2, mod2 = run(fol, final, 0.5, 800)
    cmds = np.concatenate([cmds1, cmds2])
    check_rate_limits(emb, cmds)
    assert mod1 == mod2 == 0, "the final filter had to clip: the follower's stream was infeasible"
    # it did take over: after B ends (t=2.5 s) the command settles at B's last point
    np.testing.assert_allclose(cmds[-1], b[-1], atol=1e-3)
    assert fol.counts == {"accepted": 2, "expired": 0, "finished": 1}


def test_hold_without_trajectory_and_expired_rejected(emb):
    home = mid(emb)
    fol = TrajectoryFollower(emb, DT)
    fol.reset(home)
    cmds = np.array([fol.step(k * DT)[0] for k in range(50)])
    np.testing.assert_allclose(cmds, np.tile(home, (50, 1)))
    old = Trajectory(0.0, [0.0, 0.1], np.stack([home, home + 0.1]))
    assert not fol.replace(old, 1.0)
    assert fol.counts["expired"] == 1 and not fol.active


def test_clear_holds_current_command(emb):
    home = mid(emb)
    fol = TrajectoryFollower(emb, DT)
    fol.reset(home)
    t = np.arange(200) * DT
    q = np.tile(home, (200, 1))
    q[:, 1] += 0.8 * t
    fol.replace(Trajectory(0.0, t, q), 0.0)
    for k in range(60):
        fol.step(k * DT)
    fol.clear()
    cmds = np.array([fol.step((60 + k) * DT)[0] for k in range(400)])
    # brakes smoothly and comes to rest (no further motion at the end)
    np.testing.assert_allclose(cmds[-1], cmds[-2], atol=1e-9)
    check_rate_limits(emb, cmds)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), jitter=st.floats(0.0, 0.4))
def test_random_replacements_never_need_the_final_filter(emb, seed, jitter):
    """Random step targets, filtered like idm_action_node does, replaced at random times and
    sampled with clock jitter: the final filter never clips the follower's commands."""
    rng = np.random.default_rng(seed)
    home = mid(emb)
    fol, final, planner_filter = TrajectoryFollower(emb, DT), SafetyFilter(emb, DT), SafetyFilter(emb, DT)
    fol.reset(home)
    final.reset(home)
    now, next_replace, cmds, modified = 0.0, 0.0, [], 0
    for _ in range(600):
        now += DT * (1 + rng.uniform(-jitter, jitter))
        if now >= next_replace:
            steps = np.repeat(rng.uniform(emb.pos_lower, emb.pos_upper, (5, 14)), 20, axis=0)
            pos, _ = planner_filter.filter_chunk(steps, fol.shaper.position, fol.shaper.velocity)
            fol.replace(Trajectory(now - rng.uniform(0, 0.2), np.arange(len(pos)) * DT, pos), now)
            next_replace = now + rng.uniform(0.05, 0.5)
        target, _ = fol.step(now)
        cmd, rep = final.step(target)
        modified += int(rep.modified)
        cmds.append(cmd)
    assert modified == 0
    check_rate_limits(emb, np.array(cmds))


def test_the_final_filter_would_clip_the_raw_reference_but_not_the_follower(emb):
    """Why the follower shapes its reference: a replacement with a jump (no blend) sent raw to
    the final filter makes it clip; the follower's shaped stream of the same reference does not."""
    raw = count_final_clips(emb, shaped=False)
    shaped = count_final_clips(emb, shaped=True)
    assert raw > 0 and shaped == 0


def count_final_clips(emb, shaped):
    home = mid(emb)
    fol = TrajectoryFollower(emb, DT, FollowerConfig(blend_time=0.0))
    final = SafetyFilter(emb, DT)
    fol.reset(home)
    final.reset(home)
    modified = 0
    for k in range(200):
        if k % 50 == 0:
            target = home + (0.5 if (k // 50) % 2 else -0.5)
            fol.replace(Trajectory(k * DT, [0.0, 1.0], np.stack([target, target])), k * DT)
        target = fol.step(k * DT)[0] if shaped else fol.reference(k * DT)
        modified += int(final.step(target)[1].modified)
    return modified
