"""eva_core.planner: receding-horizon bookkeeping and replanning policy (no ROS)."""

import threading

import pytest

from eva_core.planner import PlannerConfig, RecedingHorizonPlanner

pytestmark = pytest.mark.unit


def make(**kw):
    return RecedingHorizonPlanner(PlannerConfig(**kw), fps=16.0, num_frames=17)


def test_config_validation():
    with pytest.raises(ValueError, match="policy"):
        PlannerConfig(policy="sometimes")
    with pytest.raises(ValueError, match="n_exec"):
        PlannerConfig(n_exec=0)
    with pytest.raises(ValueError):
        RecedingHorizonPlanner(PlannerConfig(), fps=16.0, num_frames=1)


def test_n_exec_is_clamped_to_the_chunk():
    assert make(n_exec=100).n_exec == 16
    assert make(n_exec=8).n_exec == 8


def test_stale_observations_are_rejected():
    p = make(max_obs_age=0.5)
    assert p.check_observation(10.0, 10.3) == (True, "")
    ok, reason = p.check_observation(10.0, 10.6)
    assert not ok and "0.600 s old" in reason
    assert not p.check_observation(None, 1.0)[0]


def test_lead_policy_starts_next_chunk_before_the_current_one_runs_out():
    p = make(n_exec=8, lead_margin=0.1, initial_latency=0.3, latency_smoothing=1.0)
    assert p.should_start(0.0) == (True, "first chunk")
    c = p.begin(obs_stamp=100.0, instruction="x", now=100.0)
    assert p.should_start(100.1) == (False, "busy")           # one generation at a time
    p.finish(c, now=100.2)                                    # obs -> done latency 0.2 s
    assert p.expected_latency == pytest.approx(0.2)
    # chunk 0 executes [100.0, 100.5]; start the next at 100.5 - 0.2 - 0.1 = 100.2
    assert not p.should_start(100.19)[0]
    assert p.should_start(100.21) == (True, "lead time reached")
    c1 = p.begin(100.21, "x", 100.21)
    assert c1.chunk_id == 1 and c1.exec_end == pytest.approx(100.71)
    assert p.counts["planned"] == 1


def test_lead_falls_back_to_synchronous_planning_when_generation_is_slower_than_a_chunk():
    # chunks of 8 frames at 16 fps run 0.5 s; generation takes 1.0 s
    p = make(n_exec=8, lead_margin=0.1, initial_latency=0.3, latency_smoothing=1.0, settle_time=0.2)
    assert not p.synchronous
    c0 = p.finish(p.begin(100.0, "x", 100.0), now=101.0)   # its window [100.0, 100.5] has passed
    assert c0.anchor == "arrival" and c0.exec_start == 101.0 and c0.exec_end == pytest.approx(101.5)
    assert p.synchronous and p.counts["synchronous"] == 1 and p.counts["late"] == 0
    # the lead rule would start at 101.5 - 1.0 - 0.1 = 100.4; synchronous waits for the arm to stop
    assert not p.should_start(101.6)[0]
    assert p.should_start(101.71) == (True, "arm still (synchronous)")
    c1 = p.finish(p.begin(101.71, "x", 101.71), now=102.71)
    assert c1.anchor == "arrival" and p.counts["synchronous"] == 2
    # generation gets fast again: the estimate falls below the chunk and lead takes over; this
    # chunk was still planned with the arm at rest, so it runs from its arrival
    c2 = p.finish(p.begin(103.5, "x", 103.5), now=103.6)
    assert not p.synchronous and c2.anchor == "arrival"
    assert p.should_start(103.95) == (True, "lead time reached")   # 103.6 + 0.5 - 0.1 - 0.1
    c3 = p.finish(p.begin(103.95, "x", 103.95), now=104.05)
    assert c3.anchor == "observation" and not c3.late               # planned ahead, from a moving arm


def test_a_late_chunk_observed_while_the_arm_moved_is_not_re_anchored():
    p = make(n_exec=8, lead_margin=0.1, initial_latency=0.2, latency_smoothing=0.0)   # estimate stays 0.2
    p.finish(p.begin(100.0, "x", 100.0), now=100.2)     # runs [100.0, 100.5]
    late = p.finish(p.begin(100.3, "x", 100.3), now=101.0)   # observed mid-motion, window [100.3, 100.8] gone
    assert late.anchor == "observation" and p.counts["late"] == 1 and p.counts["synchronous"] == 0
    assert p.motion_end == pytest.approx(100.5)          # the late chunk will not run


def test_sync_policy_and_no_fallback():
    s = make(policy="sync", n_exec=8, settle_time=0.3)
    c = s.finish(s.begin(100.0, "x", 100.0), now=100.1)  # fast, but sync anchors at arrival anyway
    assert c.anchor == "arrival" and not s.should_start(100.8)[0] and s.should_start(100.91)[0]
    off = make(n_exec=8, sync_fallback=False, latency_smoothing=1.0)
    c = off.finish(off.begin(100.0, "x", 100.0), now=101.0)
    assert c.anchor == "observation" and not off.synchronous and off.counts["late"] == 1
    with pytest.raises(ValueError, match="settle_time"):
        PlannerConfig(settle_time=float("nan"))


def test_continuous_and_on_demand_policies():
    cont = make(policy="continuous")
    c = cont.begin(0.0, "x", 0.0)
    cont.finish(c, 0.1)
    assert cont.should_start(0.1)[0]
    od = make(policy="on_demand")
    assert not od.should_start(0.0)[0]
    od.request_replan()
    assert od.should_start(0.0) == (True, "replan requested")
    od.finish(od.begin(0.0, "x", 0.0), 0.1)
    assert not od.should_start(0.2)[0]        # the request was consumed by begin()


def test_replan_request_overrides_lead_time_and_failures_are_counted():
    p = make(n_exec=16)
    p.finish(p.begin(0.0, "x", 0.0), 0.1)
    assert not p.should_start(0.2)[0]
    p.request_replan()
    assert p.should_start(0.2)[0]
    c = p.begin(0.2, "x", 0.2)
    p.fail(c, 0.3, "boom")
    assert c.status == "failed" and p.counts["failed"] == 1 and p.current is None
    with pytest.raises(RuntimeError):
        p.finish(c, 0.4)


def test_begin_is_exclusive_across_threads():
    p = make()
    started, errors = [], []

    def worker():
        try:
            started.append(p.begin(0.0, "x", 0.0))
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(started) == 1 and len(errors) == 7


def test_frame_history_picks_frames_at_the_chunk_rate():
    from eva_core.planner import FrameHistory

    h = FrameHistory(horizon=1.0)
    for i in range(60):                       # a 30 Hz camera, frames named by their index
        h.add(i / 30.0, i)
    # observation at frame 59 (t=1.9667), 4 history frames at 16 fps: t - 4/16 .. t - 1/16
    assert h.select(59 / 30.0, 4, 16.0) == [51, 53, 55, 57]   # targets 51.5 (tie: older), 53.4, 55.3, 57.1
    assert h.select(59 / 30.0, 0, 16.0) == []
    assert h.select(0.0, 2, 16.0) == []       # nothing older than the observation
    assert len(h) == 31                       # pruned to the horizon: frames 29..59


def test_the_published_trajectory_refines_when_the_arm_is_still():
    p = make(policy="sync", n_exec=8, settle_time=0.1)
    p.finish(p.begin(100.0, "x", 100.0), now=101.0)       # planner's estimate: runs [101.0, 101.5]
    p.trajectory_published(101.8, now=101.3)              # the IDM took 0.3 s: it really ends at 101.8
    assert not p.should_start(101.7)[0] and p.should_start(101.91)[0]
    p.trajectory_published(101.0, now=101.3)              # an earlier end never shortens the wait
    assert p.motion_end == 101.8
    p.trajectory_published(102.5, now=102.6)              # ended before it was heard: it expires, never runs
    assert p.motion_end == 101.8
    for bad in (101.3 + 31.0, float("nan")):
        with pytest.raises(ValueError, match="bound on one chunk"):
            p.trajectory_published(bad, now=101.3)
    assert p.motion_end == 101.8


def test_synchronous_planning_ends_only_well_inside_the_chunk_and_counts_the_idm_decode():
    p = make(n_exec=8, lead_margin=0.1, latency_smoothing=1.0, settle_time=0.0)   # 0.5 s chunks, budget 0.4 s
    c = p.finish(p.begin(100.0, "x", 100.0), now=100.6)           # late: synchronous
    assert p.synchronous
    p.trajectory_published(101.35, now=100.9, chunk_id=c.chunk_id, t_traj=100.85)   # the IDM took 0.25 s
    assert p.decode_latency == pytest.approx(0.25) and p.total_latency == pytest.approx(0.85)
    p.trajectory_published(101.35, now=100.9, chunk_id=c.chunk_id + 5, t_traj=100.88)   # not the newest: no sample
    assert p.decode_latency == pytest.approx(0.25)
    # 0.1 s generation + 0.25 s decode: inside the 0.4 s budget but above half of it, so still synchronous
    c = p.finish(p.begin(101.4, "x", 101.4), now=101.5)
    assert not c.late and c.anchor == "arrival" and p.synchronous
    p.trajectory_published(102.1, now=101.6, chunk_id=c.chunk_id, t_traj=101.55)   # decode 0.05 s
    c = p.finish(p.begin(102.2, "x", 102.2), now=102.3)            # 0.1 + 0.05 < 0.2: lead again
    assert not p.synchronous and c.anchor == "arrival"             # (it was observed with the arm still)
    # a chunk whose decode would land it after its window is late, though generation alone fits
    p.trajectory_published(103.0, now=102.7, chunk_id=c.chunk_id, t_traj=102.65)   # decode 0.35 s
    late = p.finish(p.begin(102.8, "x", 102.8), now=103.0)         # 103.0 + 0.35 + 0.1 >= 103.3
    assert late.late and p.synchronous


def test_synchronous_planning_waits_for_a_frame_of_the_arm_at_rest():
    p = make(policy="sync", n_exec=8, settle_time=0.0)
    assert p.observed_still(50.0)                          # nothing ran yet
    p.finish(p.begin(100.0, "x", 100.0), now=100.1)        # runs [100.1, 100.6]
    assert p.should_start(100.61)[0]
    assert not p.observed_still(100.55) and p.observed_still(100.6)
    assert make(n_exec=8).observed_still(0.0)              # lead, not falling back: any fresh frame
