"""#23 item 9: every node executable exits 0 soon after SIGINT, even mid-computation (the planner
mid-generate, the IDM mid-decode), so `ros2 launch` never has to escalate to SIGTERM after its
5 s SIGINT grace period (launch's `sigterm_timeout`,
https://github.com/ros2/launch/blob/rolling/launch/launch/actions/execute_local.py).

Each node runs alone as its console script on the loopback configs, is given work (the planner a
frame, an instruction and a 200-step world model; the IDM a 60-frame chunk through a ResNet-50,
one frame per batch), and gets SIGINT while that work is still running: it has used CPU since the work
was sent and produced no output yet."""

import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from eva_core.embodiment import load_embodiment  # noqa: E402
from eva_ros import qos  # noqa: E402
from eva_ros.conversions import chunk_to_msg, image_to_msg, joint_state_msg, trajectory_to_msg  # noqa: E402
from eva_ros.registry import NODE_KINDS  # noqa: E402
from eva_ros.testing import NodeProcess, Probe, ros_env, unique_domain_id, wait_for, write_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]
EMB = load_embodiment()
GRACE = 3.0   # s after SIGINT: well inside launch's 5 s, on a loaded machine
CAM = "/cam_high/color/image_raw"
# busy nodes: a slow world model (200 Euler steps, no warm-up), an IDM decoding frame by frame
OVERRIDES = {"planner": {"warmup": False, "policy": "continuous", "max_obs_age": 60.0,
                         "world_model": {"num_steps": 200}},
             "idm_action": {"warmup": False, "idm": {"variant": "resnet_plus", "batch_size": 1}},
             "leader_arm": {"arm": {"can_interface": "virtual"}},
             "eva_record": {"out_dir": "RECORD_DIR", "segment_seconds": 1.0}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def computing(node: NodeProcess, cpu0: float, seconds: float = 1.0) -> bool:
    """The node has used `seconds` of CPU since `cpu0` (an idle node polls at a few % of one core)."""
    return cpu_seconds(node.proc.pid) - cpu0 >= seconds


class Work:
    """What keeps each node busy when the signal comes; `start` feeds it, `busy` says it is mid-work."""

    def __init__(self, kind: str, probe: Probe, node: NodeProcess):
        self.kind, self.probe, self.node = kind, probe, node
        self.cpu0 = 0.0

    def start(self) -> None:
        p, now = self.probe, time.time()
        self.cpu0 = cpu_seconds(self.node.proc.pid)
        if self.kind == "planner":   # a frame and an instruction: it generates (for many seconds)
            pub = p.publisher(CAM, Image, qos.IMAGE)
            instr = p.publisher("/eva/instruction", String, qos.LATCHED)
            wait_for(lambda: pub.get_subscription_count() > 0, 60, what="the planner's camera subscription")
            instr.publish(String(data="pick up the red block"))
            for _ in range(5):
                pub.publish(image_to_msg(np.full((64, 64, 3), 90, np.uint8), time.time()))
                time.sleep(0.1)
        elif self.kind == "idm_action":   # a chunk of 60 frames, one per batch (resnet50)
            pub = p.publisher("/eva/plan/frames", Image, qos.PLAN)
            js = p.publisher("/joint_states", JointState, qos.STATE)
            wait_for(lambda: pub.get_subscription_count() > 0, 60, what="the IDM's chunk subscription")
            js.publish(joint_state_msg(EMB.joint_names, EMB.action_to_joint_positions(
                (EMB.pos_lower + EMB.pos_upper) / 2), [], now))
            frames = np.random.default_rng(0).integers(0, 256, (60, 64, 64, 3), dtype=np.uint8)
            pub.publish(chunk_to_msg(frames, now, 1, 16.0, 16, now))
        elif self.kind == "eva_record":   # a topic to record
            self.js = p.publisher("/joint_states", JointState, qos.STATE)
        elif self.kind == "controller":   # a long trajectory under way
            pub = p.publisher("/eva/plan/trajectory", JointTrajectory, qos.PLAN)
            wait_for(lambda: pub.get_subscription_count() > 0, 60, what="the controller's subscription")
            mid = (EMB.pos_lower + EMB.pos_upper) / 2
            a = mid + 0.2 * np.sin(np.linspace(0, 6, 2000))[:, None] * (EMB.pos_upper - mid)
            pub.publish(trajectory_to_msg(EMB.joint_names, EMB.action_to_joint_positions(a), 0.005, now + 0.2,
                                          "eva_traj:id=1"))

    def busy(self) -> bool:
        p = self.probe
        if self.kind == "planner":
            return computing(self.node, self.cpu0) and p.count("/eva/plan/frames") == 0
        if self.kind == "idm_action":
            return computing(self.node, self.cpu0) and p.count("/eva/plan/trajectory") == 0 and not [
                s for arr in p.received("/diagnostics") for s in arr.status
                if s.name == "eva/idm_action" and any(kv.key == "event" for kv in s.values)]
        if self.kind == "controller":
            return p.count("/eva/controller/command") > 50
        if self.kind == "camera":
            return p.count(CAM) > 3
        if self.kind == "eva_record":   # writing: it found the topic and gets messages
            self.js.publish(joint_state_msg(EMB.joint_names, [0.0] * EMB.dof, [], time.time()))
            return "recording /joint_states" in self.node.text()
        return True   # the leader arms' loop and the recorder: running is their work


@pytest.mark.parametrize("kind", list(NODE_KINDS))
def test_every_node_exits_0_soon_after_sigint_even_mid_work(tmp_path, kind):
    domain = unique_domain_id()
    overrides = {k: v for k, v in OVERRIDES.items() if k == kind}
    if kind == "eva_record":
        overrides = {"eva_record": {**OVERRIDES["eva_record"], "out_dir": str(tmp_path / "bags")}}
    params = write_params(tmp_path / "params.yaml", overrides=overrides)
    probe = Probe(domain, name=f"shutdown_probe_{kind}")
    for topic, typ, q in (("/diagnostics", DiagnosticArray, qos.DIAGNOSTICS), ("/eva/plan/frames", Image, qos.PLAN),
                          ("/eva/plan/trajectory", JointTrajectory, qos.PLAN), (CAM, Image, qos.IMAGE),
                          ("/eva/controller/command", JointState, qos.STATE)):
        probe.subscribe(topic, typ, q, keep=50)
    node = NodeProcess(NODE_KINDS[kind].script, params, ros_env(domain), tmp_path, kind)
    try:
        # up: its first status on /diagnostics (every node reports once a second; the recorder: its episode)
        up = (lambda: "recording episode" in node.text()) if kind == "eva_record" else \
            (lambda: probe.received("/diagnostics"))
        wait_for(lambda: up() or not node.alive(), 120, what=f"{kind} up")
        assert node.alive(), node.tail()
        work = Work(kind, probe, node)
        work.start()
        wait_for(lambda: work.busy() or not node.alive(), 120, what=f"{kind} mid-work")
        assert node.alive() and work.busy(), node.tail()
        node.proc.send_signal(signal.SIGINT)   # to the process, as launch does
        rc = node.wait(GRACE)
        assert rc == 0, f"{kind}: exit {rc} within {GRACE} s of SIGINT (None: still running)\n{node.tail()}"
        for bad in ("Traceback", "planning_error", "callback_error", "never retrieved"):   # stopped, not crashed
            assert bad not in node.text(), node.tail()
    finally:
        probe.close()
        node.stop(5.0)
