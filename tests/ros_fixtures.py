"""Helpers for the ROS tests: isolated DDS domains, node processes and a probe node.

Every test that touches DDS gets a unique ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=
LOCALHOST (nothing leaves the machine). Waits are generous timeouts on conditions, never
timing thresholds.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_ids = itertools.count()


def unique_domain_id() -> int:
    """1..99 (the conftest's process default is 100..199): per pid and per call."""
    return (os.getpid() * 7 + next(_ids) * 13) % 99 + 1


def ros_env(domain_id: int) -> dict:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               FASTDDS_BUILTIN_TRANSPORTS="LARGE_DATA", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def write_params(path: Path, base: str | None = "loopback.yaml", overrides: dict | None = None) -> Path:
    """A params file: config/base.yaml + config/<base> (eva_ros.params.params_layers) with
    `overrides` ({node: {param: value}}) merged in."""
    from eva_ros.params import merge, merged_sections, params_layers

    data = merged_sections(params_layers(REPO / "config" / base)) if base else {}
    for node, params in (overrides or {}).items():
        section = data.setdefault(node, {}).setdefault("ros__parameters", {})
        merge(section, params)
    # relative data paths in the base resolve against the repo's config/
    cam = data.get("camera", {}).get("ros__parameters", {}).get("source_options", {})
    if "path" in cam and not Path(cam["path"]).is_absolute():
        cam["path"] = str(REPO / "config" / cam["path"])
    path.write_text(yaml.safe_dump(data))
    return path


class NodeProcess:
    """One console-script node in its own process group (so we can stop exactly it)."""

    def __init__(self, script: str, params: Path, env: dict, log_dir: Path, name: str | None = None):
        self.name = name or script
        self.log = log_dir / f"{self.name}.log"
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen([str(BIN / script), "--ros-args", "--params-file", str(params)],
                                     env=env, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process dies without any cleanup (a crashed planner)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self._fh.close()

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_for(predicate, timeout: float = 60.0, period: float = 0.05, what: str = "condition"):
    """Poll `predicate()` until truthy; return its value or raise AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(period)


def call_service(node, srv_type, name: str, request, timeout: float = 30.0):
    """Call a service from `node` (spun elsewhere) and wait for the response."""
    client = node.create_client(srv_type, name)
    wait_for(client.service_is_ready, timeout, what=f"service {name}")
    future = client.call_async(request)
    wait_for(future.done, timeout, what=f"response of {name}")
    return future.result()


def diagnostic_events(arrays, name: str, kind: str) -> list:
    """The statuses of `name` in DiagnosticArrays that report an event of `kind`."""
    return [s for a in arrays for s in a.status
            if s.name == name and any(kv.key == "event" and kv.value == kind for kv in s.values)]


class Probe:
    """A test-side rclpy node in its own context, spinning in a background thread."""

    def __init__(self, domain_id: int, name: str = "eva_test_probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.msgs: dict[str, list] = {}
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down
                break

    def subscribe(self, topic: str, msg_type, qos, keep=None):
        self.msgs.setdefault(topic, [])

        def cb(msg):
            with self.lock:
                self.msgs[topic].append((time.time(), msg))
                if keep and len(self.msgs[topic]) > keep:
                    del self.msgs[topic][: len(self.msgs[topic]) - keep]

        self.node.create_subscription(msg_type, topic, cb, qos)

    def received(self, topic: str) -> list:
        with self.lock:
            return [m for _, m in self.msgs.get(topic, [])]

    def received_since(self, topic: str, t: float) -> list:
        with self.lock:
            return [m for tr, m in self.msgs.get(topic, []) if tr >= t]

    def publisher(self, topic: str, msg_type, qos):
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        return call_service(self.node, srv_type, name, request, timeout)

    # /diagnostics helpers --------------------------------------------------------------------
    def statuses(self, name: str) -> list:
        out = []
        for arr in self.received("/diagnostics"):
            out += [s for s in arr.status if s.name == name]
        return out

    def events(self, name: str, kind: str) -> list:
        return diagnostic_events(self.received("/diagnostics"), name, kind)

    def latest_values(self, name: str) -> dict:
        """Key/values of the newest periodic status of `name` (event statuses skipped)."""
        for s in reversed(self.statuses(name)):
            values = {kv.key: kv.value for kv in s.values}
            if "event" not in values:
                return values
        return {}

    def close(self):
        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.node.destroy_node()
        finally:
            if self.context.ok():
                self.rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)
