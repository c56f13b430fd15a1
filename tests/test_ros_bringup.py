"""eva-bringup: the acceptance run on loopback, subsets of nodes, and clear config errors."""

import json
import os
import subprocess

import pytest

from eva_ros.testing import BIN, REPO, ros_env, unique_domain_id, write_params
from test_latency_breakdown import check_breakdown

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]


def bringup(*args, timeout=150):
    return subprocess.run([str(BIN / "eva-bringup"), "--quiet", *args], env=ros_env(unique_domain_id()),
                          capture_output=True, text=True, timeout=timeout)


def test_help():
    out = subprocess.run([str(BIN / "eva-bringup"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--duration" in out.stdout and "--report" in out.stdout


def test_loopback_acceptance_run(tmp_path):
    """eva-bringup --config config/loopback.yaml --duration 20 --report r.json"""
    report = tmp_path / "r.json"
    out = bringup("--config", str(REPO / "config" / "loopback.yaml"), "--duration", "20", "--report", str(report))
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(report.read_text())
    s = r["summary"]
    assert s["commands_sent"] > 0
    assert s["limit_violations"] == 0
    assert s["chunks_planned"] > 0 and s["trajectories_executed"] > 0, r["nodes_report"]["controller"]
    for key in ("camera_to_plan", "plan_to_trajectory", "trajectory_to_first_command", "camera_to_trajectory"):
        assert s["latency_ms"][key]["count"] > 0 and s["latency_ms"][key]["p50_ms"] > 0
    # capture -> trajectory spans camera -> plan and plan -> trajectory
    lat = s["latency_ms"]
    assert lat["camera_to_trajectory"]["p50_ms"] > lat["plan_to_trajectory"]["p50_ms"]
    assert "watchdog_events" in s
    # the controller's tick-to-tick period reaches the summary (issue #22: its p99 in every layout)
    assert s["control_period"] == r["nodes_report"]["controller"]["control_period"]
    assert s["control_period"]["count"] > 0 and s["control_period"]["p99_ms"] >= s["control_period"]["p50_ms"] > 0
    # the planner's per-chunk world-model costs reach the report: calls counted by a hook, stage seconds
    stages = s["world_model_stages"]
    assert stages == r["nodes_report"]["planner"]["world_model_stages"]
    assert stages["transformer_calls"]["count"] > 0 and stages["transformer_calls"]["p50"] > 0
    assert stages["denoise_s"]["p50"] > 0 and stages["decode_s"]["p50"] > 0
    # where camera-to-plan goes: every stage measured, the parts add up (eva_core.latency_breakdown)
    check_breakdown(s["latency_breakdown"], s["latency_ms"]["camera_to_plan"])
    assert s["latency_breakdown"]["transport"]["count"] == s["latency_ms"]["plan_to_trajectory"]["count"]
    # expired chunks are the controller's count, reported beside the executed ones
    assert s["trajectories_expired"] == r["nodes_report"]["controller"]["trajectories_expired"]
    assert set(r["nodes_report"]) == {"camera", "planner", "idm_action", "controller"}
    assert r["environment"]["FASTDDS_BUILTIN_TRANSPORTS"] == "LARGE_DATA"
    assert not list(tmp_path.glob(".r.json*")), "temporary report file left behind"


def test_subset_of_nodes_holds_without_a_planner(tmp_path):
    report = tmp_path / "c.json"
    out = bringup("--config", "loopback", "--nodes", "controller", "--duration", "2", "--report", str(report))
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads(report.read_text())["summary"]
    assert s["commands_sent"] > 0 and s["chunks_planned"] == 0 and s["limit_violations"] == 0
    assert s["watchdog_events"] == 0       # never had a trajectory: waiting is not a fault


def test_config_errors_name_the_problem(tmp_path):
    bad = write_params(tmp_path / "bad.yaml", overrides={"eva_bringup": {"nodes": ["camera", "teleporter"]}})
    out = bringup("--config", str(bad), "--duration", "1")
    assert out.returncode == 2 and "teleporter" in out.stderr and "bad.yaml" in out.stderr
    out = bringup("--config", str(tmp_path / "missing.yaml"), "--duration", "1")
    assert out.returncode == 2 and "missing.yaml" in out.stderr


def test_gpu_host_config_starts(tmp_path):
    """config/planner.yaml (GPU host: planner + idm_action) has valid, typed parameters; with no
    instruction and no camera it starts and waits."""
    report = tmp_path / "p.json"
    out = bringup("--config", "planner", "--duration", "1", "--report", str(report))
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(report.read_text())
    assert set(r["nodes_report"]) == {"planner", "idm_action"} and r["summary"]["chunks_planned"] == 0


def test_an_unwritable_report_path_fails_before_the_run(tmp_path):
    """--report is checked before the nodes start, not after the run (the results would be lost)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK) and os.geteuid() == 0:
            target = "/proc/eva-report.json"       # root can write a 0500 directory: use /proc
        else:
            target = str(locked / "r.json")
        out = bringup("--config", "loopback", "--nodes", "controller", "--duration", "60", "--report", target,
                      timeout=60)
    finally:
        locked.chmod(0o700)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and target in lines[0], out.stderr[-2000:]
    assert "controller at" not in out.stderr       # no node was started


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["single_per_node", "events"])
def test_every_executor_closes_the_loop_and_measures_every_stage(tmp_path, executor):
    """eva_bringup.executor: a SingleThreadedExecutor per node, or rclpy's EventsExecutor."""
    params = write_params(tmp_path / "p.yaml", overrides={"eva_bringup": {"executor": executor}})
    report = tmp_path / "r.json"
    out = bringup("--config", str(params), "--duration", "12", "--report", str(report))
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(report.read_text())
    s = r["summary"]
    assert r["executor"] == executor
    assert s["chunks_planned"] > 0 and s["trajectories_executed"] > 0 and s["commands_sent"] > 0
    assert s["limit_violations"] == 0
    check_breakdown(s["latency_breakdown"], s["latency_ms"]["camera_to_plan"])
