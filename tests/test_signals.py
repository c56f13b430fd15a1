"""Signals and dying threads, on real processes: SIGINT/SIGTERM stop eva-bringup and a node main
cleanly (exit 0, the report whole), a second signal forces the exit, a bad message does not
silence the e-stop, and a dead executor thread halts the arm and makes the run fail."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from eva_core.embodiment import load_embodiment  # noqa: E402
from eva_ros import qos  # noqa: E402
from eva_ros.conversions import trajectory_to_msg  # noqa: E402
from eva_ros.testing import BIN, REPO, Probe, ros_env, unique_domain_id, wait_for, write_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]
EMB = load_embodiment()
HOME = (EMB.pos_lower + EMB.pos_upper) / 2


def start(args, env, log):
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def bad_trajectory(t):
    """A valid trajectory whose frame_id holds a non-number: it used to kill the executor."""
    q = EMB.action_to_joint_positions(HOME[None].repeat(10, 0))
    return trajectory_to_msg(EMB.joint_names, q, 0.005, t, "eva_traj:id=7;t_traj=not-a-number")


def running(probe, log):
    """The process is up (its start-up line; another test may share the DDS domain) and publishing."""
    wait_for(lambda: "controller at" in open(log.name).read(), 90, what="the controller's start-up line")
    return wait_for(lambda: len(probe.received("/joint_states")) > 10, 90, what="/joint_states from the process")


def bad_trajectory_then_signal(proc, domain, log, signum) -> tuple[int, str]:
    """Wait for the process, send it a bad trajectory, check /eva/estop still answers and the process
    lives, then send `signum`; return (exit code, its log)."""
    probe = Probe(domain)
    try:
        probe.subscribe("/joint_states", JointState, qos.STATE, keep=100)
        probe.subscribe("/diagnostics", DiagnosticArray, qos.DIAGNOSTICS)
        running(probe, log)
        pub = probe.publisher("/eva/plan/trajectory", JointTrajectory, qos.PLAN)
        wait_for(lambda: pub.get_subscription_count() > 0, 30, what="the controller's subscription")
        pub.publish(bad_trajectory(time.time()))     # used to end the process
        # the signal must come after the rejection, not race it (a loaded machine delays delivery)
        wait_for(lambda: probe.latest_values("eva/controller").get("trajectories_rejected") == "1", 60,
                 what="the controller's rejection of the bad trajectory (its diagnostics)")
        assert probe.call(Trigger, "/eva/estop", Trigger.Request()).success   # still answers
        assert proc.poll() is None
        proc.send_signal(signum)
        rc = proc.wait(timeout=60)
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
    log.seek(0)
    return rc, log.read()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_bringup_survives_a_bad_trajectory_and_stops_on_a_signal(tmp_path, signum):
    domain = unique_domain_id()
    report = tmp_path / "r.json"
    log = open(tmp_path / "bringup.log", "w+")
    proc = start([str(BIN / "eva-bringup"), "--quiet", "--config", "loopback", "--nodes", "controller",
                  "--report", str(report)], ros_env(domain), log)
    rc, out = bad_trajectory_then_signal(proc, domain, log, signum)
    assert rc == 0, out[-3000:]
    r = json.loads(report.read_text())       # whole: it parses
    assert r["stopped_by"] == signum.name and r["error"] == ""
    c = r["nodes_report"]["controller"]
    assert c["trajectories_rejected"] == 1 and c["estops"] == 1 and c["control_errors"] == 0
    assert "never retrieved" not in out and "Traceback" not in out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_node_main_survives_a_bad_trajectory_and_stops_cleanly_on_a_signal(tmp_path, signum):
    domain = unique_domain_id()
    params = write_params(tmp_path / "p.yaml")
    log = open(tmp_path / "node.log", "w+")
    proc = start([str(BIN / "eva-controller-node"), "--ros-args", "--params-file", str(params)], ros_env(domain), log)
    rc, out = bad_trajectory_then_signal(proc, domain, log, signum)
    assert rc == 0, out[-3000:]
    assert "rejected_trajectory" in out and "t_traj" in out
    for bad in ("control_error", "Traceback", "never retrieved", "cannot use Destroyable"):
        assert bad not in out, out[-3000:]


def test_a_second_signal_forces_the_exit(tmp_path):
    """The first signal asks for a clean stop; when that hangs, a second one ends the process."""
    script = textwrap.dedent("""
        import os, signal, time
        from eva_ros.runtime import StopSignals
        with StopSignals("probe") as s:
            os.kill(os.getpid(), signal.SIGTERM)
            while not s.event.is_set():
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)   # the clean stop "hangs"
            time.sleep(30)
        raise SystemExit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 128 + signal.SIGTERM and "second signal SIGTERM" in out.stderr


CRASHING_CONTROLLER = """
from eva_ros.nodes.controller_node import ControllerNode


class CrashingController(ControllerNode):
    # a controller plus a callback bug elsewhere in the process: the exception ends rclpy's spin
    def __init__(self, **kw):
        super().__init__(**kw)
        self._crash = self.create_timer(1.0, self._boom)

    def _boom(self):
        raise RuntimeError("injected callback bug")
"""


DYING_CONTROL_THREAD = """
from eva_ros.nodes.controller_node import ControllerNode


class CrashingController(ControllerNode):
    # a bug that escapes the tick's guard (not an Exception) ends the control thread itself
    ticks = 0

    def _control(self, now):
        CrashingController.ticks += 1
        if CrashingController.ticks > 400:
            raise SystemExit("injected control thread bug")
        super()._control(now)
"""


@pytest.mark.parametrize("helper, cause", [(CRASHING_CONTROLLER, "injected callback bug"),
                                           (DYING_CONTROL_THREAD, "control thread ended")])
def test_a_dead_executor_or_control_thread_halts_the_arm_and_fails_the_run(tmp_path, helper, cause):
    (tmp_path / "crashing_controller.py").write_text(helper)
    report = tmp_path / "r.json"
    script = textwrap.dedent(f"""
        import sys
        from eva_ros import bringup
        bringup.NODE_KINDS["controller"] = bringup.NODE_KINDS["controller"]._replace(
            target="crashing_controller:CrashingController")
        sys.exit(bringup.main(["--quiet", "--config", "loopback", "--nodes", "controller", "--duration", "120",
                               "--report", {str(report)!r}]))
    """)
    env = ros_env(unique_domain_id())
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=150)
    assert out.returncode == 1, out.stderr[-3000:]
    assert cause in out.stderr
    r = json.loads(report.read_text())
    assert cause in r["error"]
    c = r["nodes_report"]["controller"]
    assert c["state"] == "fault" and c["executor_stopped"] == 1 and c["estops"] >= 1
    assert r["summary"]["duration_s"] < 120        # it did not run on to --duration


def test_a_params_error_at_start_up_is_one_line_and_exit_2(tmp_path):
    params = write_params(tmp_path / "typo.yaml", overrides={"controller": {"feedback_timout": 0.05}})
    out = subprocess.run([str(BIN / "eva-controller-node"), "--ros-args", "--params-file", str(params)],
                         env=ros_env(unique_domain_id()), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("eva-controller-node:")]
    assert len(lines) == 1 and "typo.yaml" in lines[0] and "feedback_timout" in lines[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr


def test_a_dead_executor_in_a_node_main_halts_the_arm_and_exits_1(tmp_path):
    (tmp_path / "crashing_controller.py").write_text(CRASHING_CONTROLLER)
    params = write_params(tmp_path / "p.yaml")
    script = textwrap.dedent(f"""
        from crashing_controller import CrashingController
        from eva_ros.runtime import run_node
        run_node(CrashingController, ["eva-crashing", "--ros-args", "--params-file", {str(params)!r}])
    """)
    env = ros_env(unique_domain_id())
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=150)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "executor thread died" in out.stderr and "injected callback bug" in out.stderr
    assert "executor_stopped" in out.stderr        # the controller's fault event: the arm was e-stopped
