"""eva-demo's report: what the graph adds over the model, the arm's idle fraction and the
controller's p99 period per variant and task (issue #22's acceptance numbers), in the table."""

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.unit


def episode(plan_p50, gen_p50, p99, idle):
    return {"variant": "student", "task": "pick", "success": True, "success_reported": True, "mean_reward": 9.9,
            "chunks_executed": 5, "chunks_expired": 0, "chunks_planned": 5, "limit_violations": 0,
            "latency_ms": {"camera_to_plan": {"p50_ms": plan_p50, "p90_ms": plan_p50, "p99_ms": plan_p50},
                           "camera_to_trajectory": {"p50_ms": plan_p50 + 40, "p90_ms": plan_p50 + 40,
                                                    "p99_ms": plan_p50 + 40}},
            "generate_ms": {"p50_ms": gen_p50, "p90_ms": gen_p50},
            "control_period_ms": {"p50_ms": 5.0, "p99_ms": p99, "max_ms": p99},
            "idle": {"seconds": idle, "fraction": idle / 10}}


def test_graph_added_idle_and_control_period_are_reported(capsys):
    from eva_ros.demo.evaluation import build_report, print_table

    args = SimpleNamespace(best_of=1, seed=0, episodes=2, episode_seconds=10.0, layout="split")
    manifest = {"files": {}, "config": {"pipeline": {"camera": {"height": 48, "width": 64}}}}
    eps = [episode(200.0, 150.0, 5.5, 0.2), episode(300.0, 220.0, 6.5, 0.4)]
    s = build_report(manifest, "ckpt", args, ["pick"], {}, eps, 1.0)["summary"]["student"]["pick"]
    assert s["graph_added_ms"] == pytest.approx(65.0)           # mean of 50 and 80
    assert s["control_period_p99_ms"] == {"mean": 6.0, "max": 6.5}
    assert s["idle_fraction_mean"] == pytest.approx(0.03)
    assert s["latency_camera_to_trajectory_ms"]["p50_ms"] == pytest.approx(290.0)
    print_table(build_report(manifest, "ckpt", args, ["pick"], {}, eps, 1.0))
    out = capsys.readouterr().out
    assert "graph ms" in out and "ctl p99 ms" in out and "65.0" in out and "None" not in out


def test_an_episode_without_a_model_time_is_left_out_of_graph_added():
    from eva_ros.demo.evaluation import build_report

    args = SimpleNamespace(best_of=1, seed=0, episodes=2, episode_seconds=10.0, layout="composed")
    manifest = {"files": {}, "config": {"pipeline": {"camera": {"height": 48, "width": 64}}}}
    a, b = episode(200.0, 150.0, 5.5, 0.2), episode(300.0, 220.0, 6.5, 0.4)
    b["generate_ms"] = {}
    s = build_report(manifest, "ckpt", args, ["pick"], {}, [a, b], 1.0)["summary"]["student"]["pick"]
    assert s["graph_added_ms"] == pytest.approx(50.0)
