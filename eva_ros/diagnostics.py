"""Diagnostics helpers: latency statistics and a /diagnostics publisher per node. The event kinds
(`Event`, `EVENT_DOCS`) are defined in eva_core.events and re-exported here."""

from __future__ import annotations

import threading
from collections import deque
from enum import Enum

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from eva_core.events import EVENT_DOCS, Event  # noqa: F401 - re-exported for the nodes
from eva_ros import names, qos
from eva_ros.conversions import to_time_msg

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


class LatencyStats:
    """Thread-safe window of latency samples (seconds) with percentiles in milliseconds."""

    def __init__(self, maxlen: int = 10_000):
        self._samples = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        if np.isfinite(seconds):
            with self._lock:
                self._samples.append(float(seconds))

    def __len__(self) -> int:
        return len(self._samples)

    def summary(self) -> dict:
        with self._lock:
            x = np.asarray(self._samples, dtype=float) * 1e3
        if x.size == 0:
            return {"count": 0}
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        return {"count": int(x.size), "p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3),
                "p99_ms": round(float(p99), 3), "max_ms": round(float(x.max()), 3),
                "mean_ms": round(float(x.mean()), 3)}


class RateCounter:
    """Events per second over a sliding window (for topic rates in diagnostics)."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self._t = deque()
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        with self._lock:
            self._t.append(now)
            while self._t and self._t[0] < now - self.window:
                self._t.popleft()

    def rate(self, now: float) -> float:
        with self._lock:
            while self._t and self._t[0] < now - self.window:
                self._t.popleft()
            return len(self._t) / self.window


class DiagnosticsReporter:
    """Publishes a node's health on /diagnostics: periodically and immediately on events.

    `values_fn()` returns a dict of key -> value shown with every periodic status. `event()`
    publishes one status at once (e.g. "rejected non-finite actions") and keeps a count.
    """

    def __init__(self, node, name: str, values_fn, period: float = 1.0, clock=None):
        import time

        self.node = node
        self.name = name
        self.values_fn = values_fn
        self._clock = clock or time.time
        self.pub = node.create_publisher(DiagnosticArray, names.DIAGNOSTICS, qos.DIAGNOSTICS)
        self.level = OK
        self.message = "ok"
        self.events: dict[str, int] = {}   # Event value -> count
        self._lock = threading.Lock()
        self.timer = node.create_timer(period, self.publish) if period > 0 else None

    def set_level(self, level, message: str) -> None:
        with self._lock:
            self.level, self.message = level, message

    def event(self, kind: Event, message: str, level=WARN, values: dict | None = None) -> None:
        """Publish one event status at once and count it (`kind`: a kind of eva_core.events;
        `values`: extra key/values of the event, e.g. a rejected_trajectory's `reason`)."""
        kind = kind.value if isinstance(kind, Enum) else str(kind)
        with self._lock:
            count = self.events[kind] = self.events.get(kind, 0) + 1
        if level >= WARN:
            self.node.get_logger().warning(f"{kind}: {message}")
        self._publish(level, f"{kind}: {message}", {"event": kind, f"events.{kind}": count, **(values or {})})

    def guard(self, topic: str, fn, msg, kind: Event = Event.CALLBACK_ERROR):
        """fn(msg) for a callback, never raising: a ValueError is an event `kind` naming the topic,
        any other exception a CALLBACK_ERROR event, and the node lives on. fn's result, or None."""
        try:
            return fn(msg)
        except ValueError as exc:
            text = str(exc)
            self.event(kind, text if text.startswith(topic) else f"{topic}: {text}")
        except Exception as exc:  # noqa: BLE001 - a callback never kills its node
            self.event(Event.CALLBACK_ERROR, f"{topic}: {exc!r}", ERROR)
        return None

    def publish(self) -> None:
        with self._lock:
            level, message = self.level, self.message
            events = dict(self.events)
        values = dict(self.values_fn())
        values.update({f"events.{k}": v for k, v in events.items()})
        self._publish(level, message, values)

    def _publish(self, level, message: str, values: dict) -> None:
        status = DiagnosticStatus(level=level, name=self.name, message=message,
                                  hardware_id=self.node.get_fully_qualified_name())
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = to_time_msg(self._clock())
        arr.status = [status]
        try:
            self.pub.publish(arr)
        except Exception:  # noqa: BLE001 - context shutting down
            pass
