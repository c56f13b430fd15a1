"""SROS2 with the rmw here (issue #23 row 16): what can be checked without a security-enabled
Fast DDS. The pip wheel (ros-fastdds 3.2) is built without -DSECURITY=ON: a node asked to run
secured refuses to start ("This Fast DDS version doesn't have the security libraries"), so a
secured pair of nodes cannot be tested here (docs/hardware.md, "DDS security (SROS2)").

Checked: with ROS_SECURITY_ENABLE=true and ROS_SECURITY_STRATEGY=Enforce a node never comes up
unsecured (a missing enclave is refused by rcl, naming the directory; an enclave whose files are
not valid certificates is refused by the rmw, on this build and on a secured one alike); and
`--ros-args --enclave /eva/<node>`, as the launch files pass it, is accepted while security is off
(the default), by rclpy and by the node mains' argument parsing. And the interface allow-list
profile of docs/hardware.md loads in this Fast DDS and carries a graph over `lo`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eva_ros.testing import REPO, ros_env, unique_domain_id

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

# A node in the enclave /eva/camera: prints NODE_UP once rclpy created it.
SCRIPT = """
import rclpy
rclpy.init(args=["x", "--ros-args", "--enclave", "/eva/camera"])
node = rclpy.create_node("camera")
print("NODE_UP", flush=True)
node.destroy_node()
rclpy.shutdown()
"""
# The files rcl looks for in an enclave (sros2's create_enclave writes them).
ENCLAVE_FILES = ("identity_ca.cert.pem", "cert.pem", "key.pem", "permissions_ca.cert.pem",
                 "governance.p7s", "permissions.p7s")


def run(keystore: Path | None):
    extra = {} if keystore is None else {"ROS_SECURITY_ENABLE": "true", "ROS_SECURITY_STRATEGY": "Enforce",
                                         "ROS_SECURITY_KEYSTORE": str(keystore)}
    env = ros_env(**extra)
    if keystore is None:
        for k in ("ROS_SECURITY_ENABLE", "ROS_SECURITY_STRATEGY", "ROS_SECURITY_KEYSTORE"):
            env.pop(k, None)
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)


def pip_fastdds() -> bool:
    """The Fast DDS of the ros-fastdds wheel (in this interpreter's prefix), not a ROS install's."""
    return any((Path(sys.prefix) / "lib").glob("libfastdds.so*"))


def test_enclave_argument_is_accepted_while_security_is_off():
    out = run(None)
    assert out.returncode == 0 and "NODE_UP" in out.stdout, out.stderr


def test_node_mains_pass_the_enclave_to_rclpy():
    from eva_ros.runtime import parse_cli

    argv = ["eva-camera-node", "--ros-args", "--enclave", "/eva/camera"]
    assert parse_cli("eva-camera-node", "doc", argv) == argv


def test_enforce_without_the_enclave_refuses_to_start(tmp_path):
    (tmp_path / "enclaves").mkdir()
    out = run(tmp_path)
    assert out.returncode != 0 and "NODE_UP" not in out.stdout
    assert "enclaves/eva/camera" in out.stderr and "does not exist" in out.stderr, out.stderr


def test_enforce_never_starts_an_unsecured_node(tmp_path):
    """Enclave files present but not certificates: no node, on any Fast DDS. On the pip wheel the
    reason is that it has no security plugins at all (the finding docs/hardware.md states)."""
    enclave = tmp_path / "enclaves" / "eva" / "camera"
    enclave.mkdir(parents=True)
    for name in ENCLAVE_FILES:
        (enclave / name).write_text("not a certificate\n")
    out = run(tmp_path)
    assert out.returncode != 0 and "NODE_UP" not in out.stdout, out.stdout
    if pip_fastdds():
        assert "doesn't have the security libraries" in out.stderr, out.stderr


# ---- the interface allow-list profile of docs/hardware.md --------------------------------------
TALK = """
import sys, time, rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("allowlist_" + sys.argv[1])
end = time.monotonic() + 30
if sys.argv[1] == "pub":
    pub = node.create_publisher(String, "allowlist_check", 10)
    while time.monotonic() < end and pub.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    for _ in range(40):
        pub.publish(String(data="over lo"))
        rclpy.spin_once(node, timeout_sec=0.05)
else:
    got = []
    node.create_subscription(String, "allowlist_check", lambda m: got.append(m.data), 10)
    while time.monotonic() < end and not got:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("GOT", got[:1], flush=True)
"""


def doc_profile() -> str:
    doc = (REPO / "docs" / "hardware.md").read_text()
    after = doc.split("<!-- fastdds-lan-profile", 1)[1]
    return after.split("```xml\n", 1)[1].split("```", 1)[0]


def talk(profile: Path):
    env = ros_env(unique_domain_id(), FASTDDS_DEFAULT_PROFILES_FILE=str(profile))
    pub = subprocess.Popen([sys.executable, "-c", TALK, "pub"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        sub = subprocess.run([sys.executable, "-c", TALK, "sub"], env=env, capture_output=True, text=True, timeout=90)
    finally:
        _out, pub_err = pub.communicate(timeout=90)
    return sub, pub_err


def test_documented_allowlist_profile_loads_and_carries_the_graph(tmp_path):
    """The XML block of docs/hardware.md, with its LAN interface set to lo: Fast DDS 3.2 loads it
    (no XML error) and two processes talk through its UDP transport; a misspelt interface is only
    logged ("All whitelist interfaces were filtered out"), as the docs warn."""
    xml = doc_profile()
    assert "<allowlist>" in xml and "<useBuiltinTransports>false</useBuiltinTransports>" in xml
    ok = tmp_path / "lan.xml"
    ok.write_text(xml.replace('name="enp3s0"', 'name="lo"'))
    sub, pub_err = talk(ok)
    assert "GOT ['over lo']" in sub.stdout, sub.stderr
    assert "Error" not in sub.stderr + pub_err, sub.stderr + pub_err
    typo = tmp_path / "typo.xml"
    typo.write_text(xml.replace('name="enp3s0"', 'name="enp3s9"').replace('name="lo"', 'name="lo9"'))
    sub, pub_err = talk(typo)
    assert "All whitelist interfaces were filtered out" in sub.stderr + pub_err
