"""Diagnostics helpers: latency statistics, the event kinds, and a /diagnostics publisher per node."""

from __future__ import annotations

import threading
from collections import deque
from enum import Enum

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from eva_ros import names, qos
from eva_ros.conversions import to_time_msg

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


class Event(str, Enum):
    """Every diagnostic event kind (the `event` key of an event's status on /diagnostics).

    A new kind is one line here plus one in EVENT_DOCS; docs/ros_interface.md lists them all."""

    # camera
    READ_ERROR = "read_error"
    CAMERA_DROPPED = "camera_dropped"            # RealSense watchdog (eva_ros/backends/realsense.py)
    CAMERA_RECONNECTED = "camera_reconnected"
    CAMERA_RECONNECT_FAILED = "camera_reconnect_failed"
    LEADER_SILENT = "leader_silent"              # leader_arm_node: a leader arm sends no frames
    # camera, planner
    NONFINITE_FRAME = "nonfinite_frame"
    # planner
    BAD_FRAME = "bad_frame"
    STALE_OBSERVATION = "stale_observation"
    PLANNING_ERROR = "planning_error"
    NONFINITE_PLAN = "nonfinite_plan"
    # idm_action (eva_core.chunk_decoding.Reject)
    BAD_CHUNK = "bad_chunk"
    NONFINITE_FRAMES = "nonfinite_frames"
    NONFINITE_ACTIONS = "nonfinite_actions"
    LOW_REWARD = "low_reward"
    NO_JOINT_STATE = "no_joint_state"
    STALE_JOINT_STATE = "stale_joint_state"
    SAFETY_REJECTED = "safety_rejected"
    # controller (eva_core.control.EventKind)
    ESTOP = "estop"
    ENABLE_FAILED = "enable_failed"
    WATCHDOG_FEEDBACK_TIMEOUT = "watchdog_feedback_timeout"
    WATCHDOG_TRAJECTORY_TIMEOUT = "watchdog_trajectory_timeout"
    BACKEND_FAULT = "backend_fault"
    BACKEND_ERROR = "backend_error"
    CONTROL_ERROR = "control_error"
    EXECUTOR_STOPPED = "executor_stopped"
    REJECTED_TRAJECTORY = "rejected_trajectory"
    TRAJECTORY_EXPIRED = "trajectory_expired"
    REJECTED_COMMAND = "rejected_command"
    # any node
    BAD_JOINT_STATE = "bad_joint_state"
    CALLBACK_ERROR = "callback_error"


EVENT_DOCS = {
    Event.READ_ERROR: "the camera source raised while reading a frame",
    Event.CAMERA_DROPPED: "no frames for frame_timeout; the source resets the camera and reopens it",
    Event.CAMERA_RECONNECTED: "the camera delivers frames again after a reset and reopen",
    Event.CAMERA_RECONNECT_FAILED: "the camera did not come back within reconnect_timeout; retried on the next read",
    Event.LEADER_SILENT: "a leader (master) arm sends no frames (silent until moved) or stopped; nothing published",
    Event.NONFINITE_FRAME: "a frame with NaN/inf pixels was dropped",
    Event.BAD_FRAME: "an image message that cannot be decoded was dropped",
    Event.STALE_OBSERVATION: "the newest camera frame is older than max_obs_age; no chunk planned",
    Event.PLANNING_ERROR: "world-model generation failed; the planner retries",
    Event.NONFINITE_PLAN: "the generated frames hold NaN/inf; the chunk was dropped",
    Event.BAD_CHUNK: "a chunk message with bad frames or metadata was rejected",
    Event.NONFINITE_FRAMES: "a chunk with NaN/inf frames was rejected",
    Event.NONFINITE_ACTIONS: "the IDM produced NaN/inf actions; no trajectory",
    Event.LOW_REWARD: "the chunk's executability reward is below reward_threshold; replanning",
    Event.NO_JOINT_STATE: "no joint state yet; no trajectory",
    Event.STALE_JOINT_STATE: "no joint state within max_state_age of the observation; no trajectory",
    Event.SAFETY_REJECTED: "the safety filter rejected the chunk; no trajectory",
    Event.ESTOP: "e-stop requested; commands stopped until eva/enable",
    Event.ENABLE_FAILED: "the backend did not confirm enable",
    Event.WATCHDOG_FEEDBACK_TIMEOUT: "backend feedback older than feedback_timeout; stopped (latched)",
    Event.WATCHDOG_TRAJECTORY_TIMEOUT: "no trajectory for trajectory_timeout; holding the last safe target",
    Event.BACKEND_FAULT: "the backend reports a fault or disabled itself; latched until eva/enable",
    Event.BACKEND_ERROR: "reading the backend raised",
    Event.CONTROL_ERROR: "a control tick failed; e-stopped (latched)",
    Event.EXECUTOR_STOPPED: "an executor thread died; the controller e-stopped the backend",
    Event.REJECTED_TRAJECTORY: "a malformed trajectory message was not executed (controller) or not counted (planner)",
    Event.TRAJECTORY_EXPIRED: "a trajectory ended before it arrived",
    Event.REJECTED_COMMAND: "the final safety filter rejected a command; not sent",
    Event.BAD_JOINT_STATE: "a malformed joint_states message was ignored",
    Event.CALLBACK_ERROR: "a callback raised on a message; the message was dropped, the node lives on",
}


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

    def event(self, kind: Event, message: str, level=WARN) -> None:
        """Publish one event status at once and count it (`kind` is an Event)."""
        kind = kind.value if isinstance(kind, Event) else str(kind)
        with self._lock:
            count = self.events[kind] = self.events.get(kind, 0) + 1
        if level >= WARN:
            self.node.get_logger().warning(f"{kind}: {message}")
        self._publish(level, f"{kind}: {message}", {"event": kind, f"events.{kind}": count})

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
