"""eva_core.chunk_decoding and eva_core.timeseries: frames + metadata + state history ->
trajectory | rejection, without ROS (a real tiny IDM, the real reward and safety filter)."""

import math

import numpy as np
import pytest

from eva_core.chunk_decoding import (FPS_MAX, MAX_CHUNK_DURATION, MAX_CHUNK_FRAMES, ChunkDecoder, ChunkMeta, DecodedChunk,
                                     JointStateHistory, Reject, Rejection, resample)
from eva_core.embodiment import load_embodiment
from eva_core.timeseries import StampedHistory, nearest_index

pytestmark = pytest.mark.unit

EMB = load_embodiment()
MID = (EMB.pos_lower + EMB.pos_upper) / 2
DT = 0.005


# ---- timeseries -----------------------------------------------------------------------------
def test_nearest_index_matches_a_linear_scan():
    rng = np.random.default_rng(0)
    for _ in range(200):
        stamps = np.sort(rng.choice(np.arange(40) * 0.25, size=rng.integers(1, 12), replace=False)).tolist()
        t = float(rng.uniform(-1, 11))
        expected = min(range(len(stamps)), key=lambda i: (abs(stamps[i] - t), i))  # tie: the earlier
        assert nearest_index(stamps, t) == expected, (stamps, t)
    assert nearest_index([1.0, 2.0], 1.5) == 0
    with pytest.raises(ValueError, match="no stamps"):
        nearest_index([], 0.0)


def test_stamped_history_sorts_prunes_and_rejects_bad_stamps():
    h = StampedHistory(horizon=1.0)
    for t in (0.0, 0.5, 0.2, 1.4, 1.1):              # out of order
        h.add(t, f"s{t}")
    assert h.before(10.0)[0] == [0.5, 1.1, 1.4]       # sorted; 0.0 and 0.2 are > 1 s older than 1.4
    assert h.nearest(1.2) == (1.1, "s1.1") and h.nearest(-5.0) == (0.5, "s0.5")
    assert h.before(1.1) == ([0.5], ["s0.5"])
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            h.add(bad, "x")
    assert len(h) == 3 and StampedHistory(2.0).nearest(0.0) is None
    # one sample stamped an hour ahead would become the newest and push every real one out
    with pytest.raises(ValueError, match="3.6e\\+03 s in the future"):
        h.add(3601.4, "x", now=1.4)
    h.add(1.5, "s1.5", now=1.4)                       # a little ahead (clock skew) is fine
    assert h.nearest(1.2) == (1.1, "s1.1")
    with pytest.raises(ValueError, match="horizon"):
        StampedHistory(0.0)


def test_joint_state_history_rejects_wrong_shapes_and_nonfinite_values():
    h = JointStateHistory(EMB.dof, horizon=5.0)
    with pytest.raises(ValueError, match="position: 3 values"):
        h.add(0.0, np.zeros(3))
    bad = MID.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match=r"position: NaN/inf in dims \[4\]"):
        h.add(0.0, bad)
    with pytest.raises(ValueError, match="velocity"):
        h.add(0.0, MID, np.full(EMB.dof, np.inf))
    with pytest.raises(ValueError, match="^header.stamp: .* s in the future"):
        h.add(1e9, MID, now=1.0)
    h.add(1.0, MID)
    stamp, (q, v) = h.nearest(1.0)
    assert stamp == 1.0 and np.array_equal(q, MID) and not v.any() and len(h) == 1


# ---- metadata -------------------------------------------------------------------------------
GOOD = dict(chunk_id=3, frames=9, fps=16.0, n_exec=8, stamp=100.0)


@pytest.mark.parametrize("change, field", [
    ({"fps": 0.0}, "fps"), ({"fps": -16.0}, "fps"), ({"fps": float("nan")}, "fps"),
    ({"fps": float("inf")}, "fps"), ({"fps": FPS_MAX * 1.001}, "fps"),
    ({"n_exec": 0}, "n_exec"), ({"n_exec": -3}, "n_exec"), ({"n_exec": 9}, "n_exec"),
    ({"frames": 0}, "frames"), ({"frames": 1, "n_exec": 1}, "frames"), ({"frames": 10**6}, "frames"),
    ({"fps": 1e-6}, "n_exec"),                                  # 8e6 s: ~1e9 points at 200 Hz
    ({"stamp": float("nan")}, "stamp"), ({"t_plan": float("inf")}, "t_plan"),
    ({"chunk_id": 1.5}, "chunk_id"), ({"n_exec": True}, "n_exec"), ({"fps": "16"}, "fps"),
    ({"anchor": "later"}, "anchor"), ({"anchor": ""}, "anchor"),
])
def test_chunk_meta_ranges(change, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        ChunkMeta(**{**GOOD, **change})


def test_chunk_meta_duration_bound_and_text_fields():
    m = ChunkMeta(**GOOD)
    assert m.exec_duration == 0.5 and m.t_plan is None
    ChunkMeta(**{**GOOD, "frames": MAX_CHUNK_FRAMES, "n_exec": int(MAX_CHUNK_DURATION * 16)})   # at the bounds: ok
    back = ChunkMeta.from_fields({k: str(v) for k, v in m.to_fields().items()}, 100.0)
    assert back == m
    fields = {"id": "3", "frames": "9", "fps": "16", "n_exec": "8", "t_plan": "101.5", "future_key": "x"}
    assert ChunkMeta.from_fields(fields, 100.0).t_plan == 101.5      # unknown keys are ignored
    with pytest.raises(ValueError, match="^fps: not a number: 'fast'"):
        ChunkMeta.from_fields({**fields, "fps": "fast"}, 100.0)
    with pytest.raises(ValueError, match="^n_exec: not an integer: '8.0'"):
        ChunkMeta.from_fields({**fields, "n_exec": "8.0"}, 100.0)
    with pytest.raises(ValueError, match="^frames: missing"):
        ChunkMeta.from_fields({k: v for k, v in fields.items() if k != "frames"}, 100.0)
    with pytest.raises(ValueError, match="^fps: must be a finite number"):
        ChunkMeta.from_fields({**fields, "fps": "nan"}, 100.0)


def test_chunk_anchor_round_trips_and_is_left_out_by_default():
    assert "anchor" not in ChunkMeta(**GOOD).to_fields()   # the encoding older readers know
    m = ChunkMeta(**GOOD, anchor="arrival")
    assert m.to_fields()["anchor"] == "arrival"
    assert ChunkMeta.from_fields({k: str(v) for k, v in m.to_fields().items()}, 100.0) == m
    with pytest.raises(ValueError, match="^anchor: "):
        ChunkMeta.from_fields({**{k: str(v) for k, v in m.to_fields().items()}, "anchor": "soon"}, 100.0)


def test_resample_spans_n_exec_frames_at_the_control_dt():
    actions = np.cumsum(np.ones((9, 2)), axis=0)               # 1, 2, ..., 9 in both dims
    out = resample(actions, fps=16.0, n_exec=8, dt=DT)
    assert out.shape == (int(round(0.5 / DT)) + 1, 2)
    np.testing.assert_allclose(out[0], actions[0])
    np.testing.assert_allclose(out[-1], actions[8])
    np.testing.assert_allclose(out[20], actions[0] + 20 * DT * 16.0)   # linear between frames


# ---- the decoder ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idm():
    import torch

    from eva_core.idm import IDMConfig, build_idm

    torch.manual_seed(0)
    return build_idm(IDMConfig(variant="tiny", action_dim=EMB.dof))


def frames(t=9, seed=0, dtype=np.uint8):
    f = np.random.default_rng(seed).integers(0, 255, (t, 32, 32, 3), dtype=np.uint8)
    return f if dtype == np.uint8 else (f / 255.0).astype(dtype)


def history(*states):
    h = JointStateHistory(EMB.dof)
    for stamp, q in states:
        h.add(stamp, q)
    return h


def test_a_good_chunk_becomes_a_filtered_trajectory_from_the_state_at_observation_time(idm):
    dec = ChunkDecoder(EMB, idm, DT, max_state_age=0.25)
    far = EMB.pos_lower + 0.05 * (EMB.pos_upper - EMB.pos_lower)
    # the state at the observation (t=100.0) is MID; a second later the arm was elsewhere
    out = dec.decode(frames(), ChunkMeta(**GOOD), history((99.9, far), (100.02, MID), (101.0, far)))
    assert isinstance(out, DecodedChunk), out
    assert out.positions.shape == (int(round(0.5 / DT)) + 1, EMB.dof) and out.dt == DT
    assert np.all(np.isfinite(out.positions)) and 0.0 <= out.score <= 10.0
    assert np.all(EMB.within_limits(out.positions))
    step = np.abs(out.positions[0] - MID)
    assert np.all(step <= EMB.vel_max * DT + 1e-9)     # starts from MID at most one tick away
    assert dec.counts["trajectories"] == 1 and dec.counts["chunks"] == 1


def test_float_frames_decode_like_their_uint8_source(idm):
    dec = ChunkDecoder(EMB, idm, DT)
    h = history((100.0, MID))
    a = dec.decode(frames(), ChunkMeta(**GOOD), h)
    b = dec.decode(frames(dtype=np.float32), ChunkMeta(**GOOD), h)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)


@pytest.mark.parametrize("make, kind", [
    (lambda: frames(t=5), Reject.BAD_CHUNK),                              # metadata says 9 frames
    (lambda: frames()[..., :2], Reject.BAD_CHUNK),                        # 2 channels
    (lambda: frames().astype(np.int16), Reject.BAD_CHUNK),
    (lambda: frames(dtype=np.float32) * 3.0, Reject.BAD_CHUNK),           # outside [0, 1]
    (lambda: np.where(np.arange(32)[None, None, :, None] == 4, np.nan, frames(dtype=np.float32)),
     Reject.NONFINITE_FRAMES),
])
def test_bad_frames_are_rejected_before_the_idm(idm, make, kind):
    dec = ChunkDecoder(EMB, idm, DT)
    out = dec.decode(make(), ChunkMeta(**GOOD), history((100.0, MID)))
    assert isinstance(out, Rejection) and out.kind == kind and "chunk 3: frames" in out.message
    assert out.score is None and dec.counts["rejected_frames"] == 1 and dec.counts["trajectories"] == 0


def test_nan_actions_low_reward_and_missing_or_stale_state_are_rejections(idm):
    import torch

    from eva_core.idm import IDMConfig, build_idm

    broken = build_idm(IDMConfig(variant="tiny", action_dim=EMB.dof))
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(float("nan"))
    h = history((100.0, MID))
    out = ChunkDecoder(EMB, broken, DT).decode(frames(), ChunkMeta(**GOOD), h)
    assert out.kind == Reject.NONFINITE_ACTIONS and not out.replan

    dec = ChunkDecoder(EMB, idm, DT, reward_threshold=10.5)         # the score is in [0, 10]
    out = dec.decode(frames(), ChunkMeta(**GOOD), h)
    assert out.kind == Reject.LOW_REWARD and out.replan and 0.0 <= out.score <= 10.0
    assert "< 10.5" in out.message and dec.counts["rejected_reward"] == 1

    dec = ChunkDecoder(EMB, idm, DT, max_state_age=0.25)
    assert dec.decode(frames(), ChunkMeta(**GOOD), JointStateHistory(EMB.dof)).kind == Reject.NO_JOINT_STATE
    out = dec.decode(frames(), ChunkMeta(**GOOD), history((98.0, MID)))
    assert out.kind == Reject.STALE_JOINT_STATE and "2.00 s" in out.message and out.score is not None
    assert dec.counts["no_state"] == 2


def test_decoder_checks_its_configuration(idm):
    from eva_core.idm import IDMConfig, build_idm

    with pytest.raises(ValueError, match="7-D actions; the embodiment has 14 DOF"):
        ChunkDecoder(EMB, build_idm(IDMConfig(variant="tiny", action_dim=7)), DT)
    with pytest.raises(ValueError, match="max_state_age"):
        ChunkDecoder(EMB, idm, DT, max_state_age=math.nan)
    with pytest.raises(ValueError, match="precision"):
        ChunkDecoder(EMB, idm, DT, precision="fp8")
    with pytest.raises(ValueError, match="dt"):
        ChunkDecoder(EMB, idm, 0.0)


def test_a_7_dof_embodiment_decodes_through_the_same_pipeline():
    from pathlib import Path

    from eva_core.idm import IDMConfig, build_idm

    emb = load_embodiment(Path(__file__).parent / "fixtures" / "single_piper" / "single_piper.yaml")
    mid = (emb.pos_lower + emb.pos_upper) / 2
    dec = ChunkDecoder(emb, build_idm(IDMConfig(variant="tiny", action_dim=emb.dof)), DT)
    h = JointStateHistory(emb.dof)
    h.add(100.0, mid)
    out = dec.decode(frames(), ChunkMeta(**GOOD), h)
    assert isinstance(out, DecodedChunk) and out.positions.shape[1] == emb.dof == 7
    assert np.all(emb.within_limits(out.positions))
    with pytest.raises(ValueError, match="position: 14 values, expected 7"):
        h.add(101.0, MID)


@pytest.mark.parametrize("joint1, grip", [(1e30, 0.5), (10.0, 0.5), (0.0, -5.0), (0.0, 5.0)])
def test_actions_far_beyond_the_limits_are_a_rejection_not_a_silent_clip(joint1, grip):
    from eva_core.idm import IDMConfig, build_idm

    idm = build_idm(IDMConfig(variant="tiny", action_dim=EMB.dof))
    mean = MID.copy()
    mean[0], mean[int(np.flatnonzero(EMB.is_gripper)[0])] = joint1, grip
    idm.set_normalization(mean, np.full(EMB.dof, 1e-6))   # the IDM predicts (about) `mean`
    dec = ChunkDecoder(EMB, idm, DT)
    out = dec.decode(frames(), ChunkMeta(**GOOD), history((100.0, MID)))
    assert isinstance(out, Rejection) and out.kind == Reject.ACTIONS_OUT_OF_LIMITS, out
    assert "chunk 3: IDM action point 0:" in out.message and "limit" in out.message
    assert dec.counts["rejected_limits"] == 1 and dec.counts["trajectories"] == 0


def test_actions_slightly_beyond_the_limits_are_clipped_by_the_safety_filter():
    from eva_core.idm import IDMConfig, build_idm

    idm = build_idm(IDMConfig(variant="tiny", action_dim=EMB.dof))
    mean = MID.copy()
    mean[0] = EMB.pos_upper[0] + 0.05
    idm.set_normalization(mean, np.full(EMB.dof, 1e-6))
    out = ChunkDecoder(EMB, idm, DT).decode(frames(), ChunkMeta(**GOOD), history((100.0, MID)))
    assert isinstance(out, DecodedChunk) and np.all(EMB.within_limits(out.positions, tol=0.0))
    with pytest.raises(ValueError, match="action_limit_tolerance"):
        ChunkDecoder(EMB, idm, DT, action_limit_tolerance=-1.0)
