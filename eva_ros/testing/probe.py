"""A probe node on a graph's domain: records the topics it subscribes to, publishes, calls services."""

from __future__ import annotations

import threading
import time


class WaitTimeout(TimeoutError, AssertionError):
    """A condition not met in time (an AssertionError for pytest, a TimeoutError for tools)."""


def wait_for(predicate, timeout: float = 60.0, period: float = 0.05, what: str = "condition", proc=None):
    """Poll `predicate()` until truthy and return its value. Raise WaitTimeout naming `what` after
    `timeout` s, or RuntimeError as soon as the graph process `proc` (a procs.Child) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: the graph exited early ({proc.log}): {proc.text()[-300:]!r}")
        if time.monotonic() > deadline:
            log = f" (log {proc.log})" if proc is not None else ""
            raise WaitTimeout(f"timed out after {timeout} s waiting for {what}{log}")
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
    """An rclpy node in its own context on `domain_id`, spinning in a background thread. It keeps
    the messages of the topics it subscribes to (the newest `keep`) and counts them all."""

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
        self.counts: dict[str, int] = {}
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
        self.counts.setdefault(topic, 0)

        def cb(msg):
            with self.lock:
                self.counts[topic] += 1
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

    def count(self, topic: str) -> int:
        """Messages received on `topic` since it was subscribed (or since `reset`)."""
        with self.lock:
            return self.counts.get(topic, 0)

    def reset(self) -> None:
        """Forget the messages received so far (a new graph on the same domain)."""
        with self.lock:
            for topic in self.msgs:
                self.msgs[topic].clear()
                self.counts[topic] = 0

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
