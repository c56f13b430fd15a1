"""Nodes under test and a probe node in THIS process: one private rclpy context on a unique
domain, one multi-threaded executor spinning in a thread."""

from __future__ import annotations

import threading

from eva_ros.testing.env import unique_domain_id
from eva_ros.testing.probe import call_service, diagnostic_events


class InProcessGraph:
    """`add` constructs a node class in the context (params as parameter overrides); the probe
    node subscribes (`subscribe`, `got`), publishes (`publisher`) and calls services (`call`).
    /diagnostics is recorded from the start (`events`)."""

    def __init__(self, num_threads: int = 4, probe_name: str = "probe", diagnostics: bool = True):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import MultiThreadedExecutor

        from eva_ros import qos
        from eva_ros.runtime import spin

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=unique_domain_id())
        self.executor = MultiThreadedExecutor(num_threads=num_threads, context=self.context)
        self.probe = rclpy.create_node(probe_name, context=self.context)
        self.executor.add_node(self.probe)
        self.nodes = []
        self.msgs = {}
        self.lock = threading.Lock()
        if diagnostics:
            self.subscribe("/diagnostics", DiagnosticArray, qos.DIAGNOSTICS)
        self.spinning = threading.Event()
        self.spinning.set()
        self.thread = threading.Thread(target=spin, args=(self.executor, self.spinning), daemon=True)
        self.thread.start()

    def add(self, cls, params=None, **kw):
        from rclpy.parameter import Parameter

        overrides = [Parameter(k, value=v) for k, v in (params or {}).items()]
        node = cls(context=self.context, parameter_overrides=overrides, **kw)
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def subscribe(self, topic, msg_type, profile):
        self.msgs[topic] = []

        def cb(m):
            with self.lock:
                self.msgs[topic].append(m)
        self.probe.create_subscription(msg_type, topic, cb, profile)

    def got(self, topic):
        with self.lock:
            return list(self.msgs[topic])

    def publisher(self, topic, msg_type, profile):
        return self.probe.create_publisher(msg_type, topic, profile)

    def events(self, name, kind):
        return diagnostic_events(self.got("/diagnostics"), name, kind)

    def call(self, srv, name, req, timeout: float = 30.0):
        return call_service(self.probe, srv, name, req, timeout)

    def close(self):
        from eva_ros.runtime import drain

        for n in self.nodes:
            n.close()
        drain(self.executor, self.thread, self.spinning)
        for n in self.nodes + [self.probe]:
            n.destroy_node()
        self.rclpy.shutdown(context=self.context)
