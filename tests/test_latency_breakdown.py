"""eva_core.latency_breakdown: a chunk's camera-to-plan split into parts that add up to it, the
IDM node's stages, their summaries; eva-demo's generate_ms beside camera-to-plan."""

import numpy as np
import pytest

from eva_core.latency_breakdown import (IDM_PARTS, PLANNER_PARTS, TOLERANCE_S, BreakdownStats, idm_breakdown, merge,
                                        planner_breakdown, unexplained)

pytestmark = pytest.mark.unit


def test_the_planner_parts_add_up_to_camera_to_plan():
    timing = {"encode": 0.01, "denoise": 0.1, "decode": 0.02, "total": 0.13, "transformer_calls": 9}
    r = planner_breakdown(stamp=100.0, t_recv=100.02, t_begin=100.05, t_gen_start=100.06, t_gen_end=100.25,
                          t_plan=100.27, timing=timing, cpu=0.12)
    assert r["camera_to_plan"] == pytest.approx(0.27)
    assert r["frame_age"] == pytest.approx(0.05) and r["frame_transport"] == pytest.approx(0.02)
    assert r["worker_wait"] == pytest.approx(0.01)
    assert r["generate"] == pytest.approx(0.13)            # the model's own total, not the call's 0.19 s
    assert r["executor"] == pytest.approx(0.27 - 0.05 - 0.01 - 0.13)   # the call's rest + checks + publish
    assert abs(unexplained(r)) < 1e-12
    assert (r["encode"], r["denoise"], r["decode"]) == (0.01, 0.1, 0.02)
    assert "transformer_calls" not in r
    assert r["generate_wait"] == pytest.approx(0.19 - 0.12)   # the call's wall time the thread did not run


def test_a_model_without_timing_counts_the_call_as_generate():
    r = planner_breakdown(10.0, None, 10.1, 10.1, 10.4, 10.45, timing={"total": float("nan")})
    assert r["generate"] == pytest.approx(0.3) and r["executor"] == pytest.approx(0.05)
    assert "frame_transport" not in r and "encode" not in r and "generate_wait" not in r


def test_a_model_in_its_own_process_reports_its_own_wait():
    r = planner_breakdown(10.0, None, 10.1, 10.1, 10.4, 10.45, timing={"total": 0.25, "wait": 0.02}, cpu=0.0)
    assert r["generate_wait"] == 0.02   # not the caller's 0.3 s blocked on the pipe


def test_idm_breakdown_names_each_stage_that_ran():
    r = idm_breakdown(t_plan=5.0, t_recv=5.01, t_done=5.2, timing={"idm": 0.15, "reward": 0.01, "safety": 0.02})
    assert r == pytest.approx({"transport": 0.01, "idm": 0.15, "reward": 0.01, "safety": 0.02, "idm_total": 0.19})
    assert set(r) == set(IDM_PARTS)
    assert set(idm_breakdown(None, 5.0, 5.1, {"idm": 0.05})) == {"idm", "idm_total"}   # no t_plan: no transport


def test_stats_summarise_each_stage_in_ms_and_merge_disjoint_summaries():
    stats = BreakdownStats(maxlen=3)
    for i in range(5):
        stats.add({"generate": 0.1 * (i + 1), "executor": 0.01, "bad": float("inf")})
    s = stats.summary()
    assert set(s) == {"generate", "executor"}   # non-finite values are dropped
    assert s["generate"]["count"] == 3 and s["generate"]["p50_ms"] == pytest.approx(400.0)
    assert s["generate"]["last_ms"] == pytest.approx(500.0) and s["executor"]["p90_ms"] == pytest.approx(10.0)
    assert stats.values()["latency.generate_ms"] == pytest.approx(500.0)
    assert merge({"a": 1}, None, {"b": 2}) == {"a": 1, "b": 2}
    assert BreakdownStats().summary() == {} and BreakdownStats().values() == {}


def test_chunk_decoder_times_idm_reward_and_safety():
    from eva_core.chunk_decoding import ChunkDecoder, ChunkMeta, JointStateHistory
    from eva_core.embodiment import load_embodiment
    from eva_core.idm import IDMConfig, build_idm

    emb = load_embodiment()
    idm = build_idm(IDMConfig(variant="tiny", action_dim=emb.dof))
    dec = ChunkDecoder(emb, idm, 0.005, max_state_age=1.0)
    states = JointStateHistory(emb.dof)
    states.add(100.0, np.zeros(emb.dof))
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    dec.decode(frames, ChunkMeta(chunk_id=1, frames=5, fps=10.0, n_exec=4, stamp=100.0), states)
    assert set(dec.last_timing) == {"idm", "reward", "safety"} and all(v > 0 for v in dec.last_timing.values())
    dec.decode(frames[:4], ChunkMeta(chunk_id=2, frames=5, fps=10.0, n_exec=4, stamp=100.0), states)   # rejected
    assert dec.last_timing == {}   # no stage of the last chunk ran: nothing stale is reported


def test_demo_report_gives_generate_ms_beside_camera_to_plan():
    from eva_ros.demo.evaluation import generate_ms

    summary = {"world_model_stages": {"total_s": {"count": 4, "p50": 0.125, "p90": 0.2, "max": 0.3, "last": 0.1}}}
    assert generate_ms(summary) == {"count": 4, "p50_ms": 125.0, "p90_ms": 200.0}
    assert generate_ms({}) == {} and generate_ms({"world_model_stages": {"count": 0}}) == {}


def check_breakdown(breakdown: dict, camera_to_plan: dict) -> None:
    """Every stage of a graph's breakdown measured, and the last chunk's parts add up to its
    camera_to_plan (the report's `last_ms` of each stage belongs to the same chunk)."""
    for key in PLANNER_PARTS + IDM_PARTS + ("camera_to_plan", "frame_transport", "generate_wait"):
        assert breakdown.get(key, {}).get("count", 0) > 0, f"stage {key} not measured: {sorted(breakdown)}"
    assert breakdown["camera_to_plan"]["count"] == camera_to_plan["count"]
    parts = sum(breakdown[k]["last_ms"] for k in PLANNER_PARTS)
    assert parts == pytest.approx(breakdown["camera_to_plan"]["last_ms"], abs=TOLERANCE_S * 1e3)
    assert breakdown["executor"]["p50_ms"] >= -TOLERANCE_S * 1e3   # the model's time is inside the call's
    assert breakdown["camera_to_plan"]["p50_ms"] == pytest.approx(camera_to_plan["p50_ms"], abs=0.01)


def test_reports_of_a_split_graph_merge_into_one_summary():
    from eva_ros.bringup import merge_reports, summarize

    model = {"planner": {"kind": "planner", "chunks_planned": 3,
                         "latency_camera_to_plan": {"count": 3, "p50_ms": 200.0},
                         "latency_breakdown": {"generate": {"count": 3, "p50_ms": 150.0}}},
             "idm_action": {"kind": "idm_action", "idm_trajectories": 3,
                            "latency_breakdown": {"transport": {"count": 3, "p50_ms": 2.0}}}}
    robot = {"controller": {"kind": "controller", "commands_sent": 500, "trajectories_executed": 3,
                            "control_period": {"count": 499, "p99_ms": 5.2}}}

    def result(nodes, duration, error=""):
        return {"config": "c", "nodes": list(nodes), "environment": {}, "error": error, "stopped_by": "",
                "summary": summarize(nodes, duration), "nodes_report": nodes}

    merged = merge_reports(result(model, 10.0), result(robot, 10.5, "x"))
    s = merged["summary"]
    assert s["chunks_planned"] == 3 and s["trajectories_published"] == 3 and s["commands_sent"] == 500
    assert s["duration_s"] == 10.5 and merged["error"] == "x"
    assert set(s["latency_breakdown"]) == {"generate", "transport"}
    assert s["latency_ms"]["camera_to_plan"]["p50_ms"] == 200.0
    assert set(merged["nodes_report"]) == {"planner", "idm_action", "controller"}
