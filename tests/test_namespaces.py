"""Two graphs on one ROS domain, moved apart with `--ros-args -r __ns:=/robot_a` / `/robot_b`,
do not cross-talk: every eva name is relative (eva_ros/names.py), so each graph's topics and
services live under its namespace; only /diagnostics is shared (and tells the nodes apart)."""

from __future__ import annotations


import pytest
import yaml

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from eva_ros import names, qos  # noqa: E402
from eva_ros.params import merged_sections, params_layers  # noqa: E402
from eva_ros.testing import REPO, NodeProcess, Probe, ros_env, unique_domain_id, wait_for  # noqa: E402

pytestmark = pytest.mark.ros

NAMESPACES = ("/robot_a", "/robot_b")


def NamespacedNode(script, params, env, log_dir, namespace):
    """A node main started with `-r __ns:=<namespace>`."""
    return NodeProcess(script, params, env, log_dir, f"{script}{namespace.replace('/', '_')}",
                       extra_args=("-r", f"__ns:={namespace}"))


def params_file(tmp_path):
    """base.yaml + loopback.yaml, with a small synthetic camera (no files, no GPU); node sections
    named "/**/<node>", as in config/, so they reach the nodes in any namespace."""
    data = merged_sections(params_layers(REPO / "config" / "loopback.yaml"), wildcard=True)
    data["/**/camera"]["ros__parameters"].update(source="synthetic", fps=10.0,
                                             source_options={"height": 48, "width": 64})
    path = tmp_path / "ns.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_namespaced_graphs_on_one_domain_do_not_cross_talk(tmp_path):
    domain = unique_domain_id()
    env = ros_env(domain)
    params = params_file(tmp_path)
    procs = [NamespacedNode(script, params, env, tmp_path, ns)
             for ns in NAMESPACES for script in ("eva-controller-node", "eva-camera-node")]
    probe = Probe(domain)
    image = names.camera_topic("cam_high")
    try:
        for ns in ("", *NAMESPACES):
            probe.subscribe(f"{ns}/{names.JOINT_STATES}", JointState, qos.STATE, keep=50)
            probe.subscribe(f"{ns}/{names.CONTROLLER_COMMAND}", JointState, qos.STATE, keep=5000)
            probe.subscribe(f"{ns}/{image}", Image, qos.IMAGE, keep=5)
        probe.subscribe(names.DIAGNOSTICS, DiagnosticArray, qos.DIAGNOSTICS)

        def logs():
            return "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)

        for ns in NAMESPACES:   # each graph runs under its namespace
            wait_for(lambda ns=ns: probe.received(f"{ns}/{names.JOINT_STATES}"), 120, what=f"{ns} joint states\n{logs()}")
            wait_for(lambda ns=ns: probe.received(f"{ns}/{image}"), 120, what=f"{ns} images\n{logs()}")
            wait_for(lambda ns=ns: len(probe.received(f"{ns}/{names.CONTROLLER_COMMAND}")) > 20, 60,
                     what=f"{ns} commands")
        assert all(p.alive() for p in procs), logs()

        # nothing is published in the root namespace, exactly one publisher per namespaced topic
        node = probe.node
        for topic in (names.JOINT_STATES, names.CONTROLLER_COMMAND, image):
            assert node.count_publishers(f"/{topic}") == 0, topic
            for ns in NAMESPACES:
                assert node.count_publishers(f"{ns}/{topic}") == 1, f"{ns}/{topic}"
        for ns in NAMESPACES:
            assert node.count_subscribers(f"{ns}/{names.PLAN_TRAJECTORY}") == 1
        assert not probe.received(f"/{names.JOINT_STATES}") and not probe.received(f"/{image}")

        # a service call reaches only its own graph: e-stop robot_a, robot_b keeps commanding
        a, b = (f"{ns}/{names.CONTROLLER_COMMAND}" for ns in NAMESPACES)
        assert probe.call(Trigger, f"{NAMESPACES[0]}/{names.ESTOP}", Trigger.Request()).success

        def b_after(n):
            start = len(probe.received(b))
            wait_for(lambda: len(probe.received(b)) >= start + n, 60, what="robot_b commands")

        b_after(40)                       # commands of robot_a still in flight have arrived
        stopped_at = len(probe.received(a))
        b_after(200)                      # robot_b's controller kept running meanwhile
        assert len(probe.received(a)) == stopped_at, "robot_a kept commanding after its e-stop"

        assert probe.call(SetBool, f"{NAMESPACES[0]}/{names.ENABLE}", SetBool.Request(data=True)).success
        wait_for(lambda: len(probe.received(a)) > stopped_at, 60, what="robot_a commands after enable")

        # /diagnostics is shared and says which graph each status comes from
        ids = {s.hardware_id for arr in probe.received(names.DIAGNOSTICS) for s in arr.status
               if s.name == "eva/controller"}
        assert {f"{ns}/controller" for ns in NAMESPACES} <= ids, ids
        assert all(p.alive() for p in procs), logs()
    finally:
        probe.close()
        for p in procs:
            p.stop()
