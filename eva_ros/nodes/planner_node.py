"""planner_node: receding-horizon, asynchronous video planning with the world model.

Subscribes the camera image, /joint_states and /eva/instruction (latched); publishes each
generated chunk on /eva/plan/frames (encoding: eva_ros.conversions). Generation runs in a worker
thread, so the executor keeps serving callbacks while a chunk is being generated; the
replanning decision (when to start chunk k+1, stale-observation rejection) is
eva_core.planner.RecedingHorizonPlanner. Service /eva/replan (std_srvs/Trigger) forces a replan.

Parameters (YAML section `planner`): camera_topic, instruction (default if none is published),
n_exec, max_obs_age, policy, lead_margin, initial_latency, check_period, torch_threads, warmup,
history_frames (camera frames before the observation, at the chunk fps, given as history),
world_model.* (WorldModelConfig keys; kind "tiny" starts from WorldModelConfig.tiny_default).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from eva_core.planner import FrameHistory, PlannerConfig, RecedingHorizonPlanner
from eva_ros import qos
from eva_ros.conversions import chunk_to_msg, from_time_msg, image_is_finite, msg_to_image
from eva_ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, LatencyStats
from eva_ros.params import NODE_KWARGS, declare_defaults, options_with_prefix, unflatten
from eva_ros.runtime import run_node, set_torch_threads, stop_thread

DEFAULTS = {"camera_topic": "/cam_high/color/image_raw", "instruction": "", "n_exec": 8,
            "max_obs_age": 0.5, "policy": "lead", "lead_margin": 0.1, "initial_latency": 0.5,
            "check_period": 0.01, "torch_threads": 1, "seed": -1, "warmup": True, "history_frames": 0}


def build_world_model(options: dict):
    """WorldModel from the node's `world_model.*` parameters."""
    from eva_core.world_model import WorldModel, WorldModelConfig

    cfg = dict(options)
    if cfg.get("kind", "tiny") == "tiny":
        cfg.pop("kind", None)
        return WorldModel.from_config(WorldModelConfig.tiny_default(**cfg))
    return WorldModel.from_config(WorldModelConfig.from_dict(cfg))


class PlannerNode(Node):
    def __init__(self, node_name: str = "planner", world_model=None, **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        p = self.p = declare_defaults(self, DEFAULTS)
        set_torch_threads(p["torch_threads"])
        self.wm = world_model or build_world_model(unflatten(options_with_prefix(self, "world_model")))
        if p["warmup"]:  # first-call costs (lazy init, allocator) here, not in the first chunk
            t0 = time.time()
            self.wm.generate(np.zeros((self.wm.height, self.wm.width, 3), np.uint8), "warm up", seed=0)
            self.get_logger().info(f"world model warm-up: {time.time() - t0:.2f} s")
        self.core = RecedingHorizonPlanner(
            PlannerConfig(n_exec=p["n_exec"], max_obs_age=p["max_obs_age"], policy=p["policy"],
                          lead_margin=p["lead_margin"], initial_latency=p["initial_latency"]),
            fps=self.wm.fps, num_frames=self.wm.num_frames)
        self._lock = threading.Lock()
        self._frame: tuple[np.ndarray, float] | None = None   # newest (image, capture stamp)
        # keep a second more than the history spans, so a slow or jittery camera still leaves
        # frames older than the observation (select() picks the nearest ones)
        self.history = FrameHistory(horizon=(p["history_frames"] + 2) / self.wm.fps + 1.0)
        self._instruction = p["instruction"]
        self._joint_stamp = None
        self._last_stale_stamp = None
        self.frames_received = 0
        self.frames_rejected = 0
        self.cam_to_plan = LatencyStats()
        self.generation = LatencyStats()

        io = MutuallyExclusiveCallbackGroup()
        self.sub_image = self.create_subscription(Image, p["camera_topic"], self._on_image, qos.IMAGE, callback_group=io)
        self.sub_joints = self.create_subscription(JointState, "/joint_states", self._on_joints, qos.STATE, callback_group=io)
        self.sub_instr = self.create_subscription(String, "/eva/instruction", self._on_instruction, qos.LATCHED, callback_group=io)
        self.pub = self.create_publisher(Image, "/eva/plan/frames", qos.PLAN)
        self.srv = self.create_service(Trigger, "/eva/replan", self._on_replan, callback_group=io)
        self.diag = DiagnosticsReporter(self, "eva/planner", self.diagnostic_values)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="eva-planner-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"planning {self.wm.num_frames} frames at {self.wm.fps} fps, "
                               f"n_exec={self.core.n_exec}, policy={p['policy']}")

    # -- inputs -----------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        try:
            img = msg_to_image(msg, self.p["camera_topic"])
        except ValueError as exc:
            self.frames_rejected += 1
            self.diag.event("bad_frame", str(exc))
            return
        if not image_is_finite(img):
            self.frames_rejected += 1
            self.diag.event("nonfinite_frame", f"{self.p['camera_topic']}: NaN/inf pixels; frame dropped")
            return
        if img.dtype != np.uint8:
            img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        stamp = from_time_msg(msg.header.stamp)
        with self._lock:
            self._frame = (img, stamp)
            self.frames_received += 1
        if self.p["history_frames"] > 0:
            self.history.add(stamp, img)

    def _on_joints(self, msg: JointState) -> None:
        self._joint_stamp = from_time_msg(msg.header.stamp)

    def _on_instruction(self, msg: String) -> None:
        with self._lock:  # the new text and its replan request together (see _maybe_plan)
            changed = msg.data != self._instruction
            self._instruction = msg.data
            if changed:  # a republished (same) instruction does not restart planning
                self.core.request_replan()
        if changed:
            self.get_logger().info(f"instruction: {msg.data!r}")

    def _on_replan(self, request, response):
        self.core.request_replan()
        response.success, response.message = True, "replan requested"
        return response

    # -- the worker: decide, generate, publish ---------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.p["check_period"]):
            try:
                self._maybe_plan()
            except Exception as exc:  # noqa: BLE001 - keep planning; report the failure
                self.diag.set_level(ERROR, f"planning failed: {exc}")
                self.diag.event("planning_error", repr(exc), ERROR)
                self._stop.wait(0.5)

    def _maybe_plan(self) -> None:
        now = time.time()
        start, _why = self.core.should_start(now)
        if not start:
            return
        with self._lock:
            frame, instruction = self._frame, self._instruction
        if frame is None or not instruction:
            self.diag.set_level(WARN, "waiting for " + ("a camera frame" if frame is None else "/eva/instruction"))
            return
        image, stamp = frame
        ok, reason = self.core.check_observation(stamp, now)
        if not ok:
            if stamp != self._last_stale_stamp:  # one event per stale frame, not per check
                self._last_stale_stamp = stamp
                self.core.reject_stale()
                self.diag.set_level(WARN, reason)
                self.diag.event("stale_observation", reason)
            return
        with self._lock:
            if instruction != self._instruction:  # changed since read: plan the new one next check
                return
            chunk = self.core.begin(stamp, instruction, now)  # consumes a replan request made before
        seed = None if self.p["seed"] < 0 else self.p["seed"] + chunk.chunk_id
        try:
            history = self.history.select(stamp, self.p["history_frames"], self.wm.fps) or None
            frames = self.wm.generate(image, instruction, history=history, seed=seed)
        except Exception as exc:
            self.core.fail(chunk, time.time(), repr(exc))
            raise
        frames = np.asarray(frames)
        if not image_is_finite(frames):
            self.core.fail(chunk, time.time(), "non-finite frames")
            self.diag.event("nonfinite_plan", f"chunk {chunk.chunk_id}: generated frames contain NaN/inf; dropped")
            return
        t_plan = time.time()
        msg = chunk_to_msg(frames, stamp, chunk.chunk_id, self.wm.fps, chunk.n_exec, t_plan)
        self.core.finish(chunk, t_plan, getattr(self.wm, "last_timing", {}))
        self.pub.publish(msg)
        self.cam_to_plan.add(t_plan - stamp)
        self.generation.add(chunk.generation_latency)
        self.diag.set_level(OK, f"chunk {chunk.chunk_id} published")

    # -- reporting ------------------------------------------------------------------------
    def diagnostic_values(self) -> dict:
        c = self.core.counts
        g = self.generation.summary()
        age = "" if self._joint_stamp is None else round(time.time() - self._joint_stamp, 3)
        return {"chunks_planned": c["planned"], "chunks_failed": c["failed"], "joint_state_age_s": age,
                "stale_rejected": c["stale_rejected"], "frames_received": self.frames_received,
                "frames_rejected": self.frames_rejected, "expected_latency_s": round(self.core.expected_latency, 4),
                "generation_p50_ms": g.get("p50_ms", ""), "generation_p99_ms": g.get("p99_ms", "")}

    def report(self) -> dict:
        return {"chunks_planned": self.core.counts["planned"], "chunks_failed": self.core.counts["failed"],
                "stale_observations_rejected": self.core.counts["stale_rejected"],
                "replan_requests": self.core.counts["replan_requests"],
                "frames_rejected": self.frames_rejected,
                "latency_camera_to_plan": self.cam_to_plan.summary(),
                "generation_latency": self.generation.summary()}

    def close(self) -> None:
        stop_thread(self._stop, self._worker, 30.0)


def main(args=None):
    run_node(PlannerNode, args)


if __name__ == "__main__":
    main()
