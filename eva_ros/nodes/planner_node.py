"""planner_node: receding-horizon, asynchronous video planning with the world model.

Subscribes the camera image (`camera_topic`) and eva/instruction (latched); publishes each
generated chunk on eva/plan/frames (encoding: eva_ros.conversions). Generation runs in a worker
thread, so the executor keeps serving callbacks while a chunk is being generated; the
replanning decision (when to start chunk k+1, stale-observation rejection) is
eva_core.planner.RecedingHorizonPlanner. Service eva/replan (std_srvs/Trigger) forces a replan.
Every callback is guarded: a bad image is an event (bad_frame, nonfinite_frame) naming the
topic, and the node lives on. No /joint_states subscription: the planner plans from images.

Parameters: section `planner`, PlannerNodeConfig (eva_ros/node_config.py; docs/ros_interface.md):
eva_core.planner.PlannerConfig's keys, the node's, and world_model.* (a WorldModelConfig; kind
"tiny" starts from WorldModelConfig.tiny_default). The model is whatever kind world_model.kind
names in eva_core.world_model.registry (any VideoModel).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from eva_core import planner as core
from eva_core.embodiment import load_embodiment
from eva_core.images import FrameGate, check_image
from eva_core.latency_breakdown import BreakdownStats, planner_breakdown
from eva_core.cancel import Cancelled, TorchWork
from eva_core.model_process import ModelProcess
from eva_core.world_model.build import build_world_model
from eva_core.world_model.stage_stats import StageStats
from eva_ros import names, qos
from eva_ros.conversions import (bytes_per_pixel, chunk_to_msg, from_time_msg, image_is_finite, msg_to_image,
                                 trajectory_end, trajectory_meta)
from eva_ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, Event, LatencyStats
from eva_ros.node_config import PlannerNodeConfig
from eva_ros.params import NODE_KWARGS, load_node_config
from eva_ros.runtime import run_node, set_torch_threads, stop_thread


class PlannerNode(Node):
    def __init__(self, node_name: str = "planner", world_model=None, **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        p = self.cfg = load_node_config(self, PlannerNodeConfig)
        set_torch_threads(p.torch_threads)
        if world_model is None and p.model_process:   # its own interpreter: no GIL shared with the executor
            world_model = ModelProcess(p.world_model.to_dict(), p.embodiment, p.torch_threads)
        self.wm = world_model or build_world_model(p.world_model, load_embodiment(p.embodiment))
        if p.warmup:  # first-call costs (lazy init, allocator) here, not in the first chunk
            t0 = time.time()
            self.wm.generate(np.zeros((self.wm.height, self.wm.width, 3), np.uint8), "warm up", seed=0)
            self.get_logger().info(f"world model warm-up: {time.time() - t0:.2f} s")
        self.core = core.RecedingHorizonPlanner(p, fps=self.wm.fps, num_frames=self.wm.num_frames)
        self._lock = threading.Lock()
        self._frame: tuple[np.ndarray, float] | None = None   # newest (image, capture stamp)
        self._frame_recv: float | None = None                  # when it reached _take_image
        # keep a second more than the history spans, so a slow or jittery camera still leaves
        # frames older than the observation (select() picks the nearest ones)
        self.history = core.FrameHistory(horizon=(p.history_frames + 2) / self.wm.fps + 1.0)
        self._instruction = p.instruction
        self._last_stale_stamp = None
        self._synchronous = p.policy == "sync"
        self.frames_received = 0
        self.frames_rejected = 0
        self.gate = FrameGate(p.frame_width, p.frame_height, p.max_frame_bytes)   # size checks before any copy
        self.cam_to_plan = LatencyStats()
        self.generation = LatencyStats()
        self.stages = StageStats()   # the model's per-chunk seconds and transformer calls (last_timing)
        self.breakdown = BreakdownStats()   # where each chunk's camera-to-plan time went

        io = MutuallyExclusiveCallbackGroup()
        self.sub_image = self.create_subscription(Image, p.camera_topic, self._on_image, qos.IMAGE, callback_group=io)
        self.sub_instr = self.create_subscription(String, names.INSTRUCTION, self._on_instruction, qos.LATCHED,
                                                  callback_group=io)
        # the decoded trajectories: when the arm is still again (synchronous planning)
        self.sub_traj = self.create_subscription(JointTrajectory, names.PLAN_TRAJECTORY, self._on_trajectory,
                                                 qos.PLAN, callback_group=io)
        self.pub = self.create_publisher(Image, names.PLAN_FRAMES, qos.PLAN)
        self.srv = self.create_service(Trigger, names.REPLAN, self._on_replan, callback_group=io)
        self.diag = DiagnosticsReporter(self, "eva/planner", self.diagnostic_values)

        self._stop = threading.Event()
        self.work = TorchWork("planner: world-model generation")   # close() stops it between denoising steps
        self._worker = threading.Thread(target=self._run, name="eva-planner-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"planning {self.wm.num_frames} frames at {self.wm.fps} fps, "
                               f"n_exec={self.core.n_exec}, policy={p.policy}")

    # -- inputs -----------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        topic = self.sub_image.topic_name
        if self.diag.guard(topic, self._take_image, msg, Event.BAD_FRAME) is not True:
            self.frames_rejected += 1

    def _take_image(self, msg: Image) -> bool:
        topic = self.sub_image.topic_name
        gate = self.gate   # the size checks come before any copy: msg_to_image only views the data
        problem = gate.check_bytes(msg.width, msg.height, bytes_per_pixel(msg.encoding), len(msg.data))
        img = None if problem else msg_to_image(msg, topic)
        problem = problem or gate.check_size(msg.width, msg.height)
        if problem:
            line = gate.report(f"{topic}: {problem}", time.monotonic())
            if line:
                self.diag.event(Event.BAD_OBSERVATION, line)
            return False
        if not image_is_finite(img):
            self.diag.event(Event.NONFINITE_FRAME, f"{topic}: NaN/inf pixels; frame dropped")
            return False
        img = check_image(img, topic)   # uint8 as is; float in [0, 1] -> round+clip
        stamp, now = from_time_msg(msg.header.stamp), time.time()
        if stamp > now + self.cfg.max_obs_age:   # it would look fresh for an hour, and its chunk too
            raise ValueError(f"{topic}: header.stamp: {stamp - now:.3g} s in the future")
        self.gate.accept(msg.width, msg.height)
        with self._lock:
            self._frame, self._frame_recv = (img, stamp), now
            self.frames_received += 1
        if self.cfg.history_frames > 0:
            self.history.add(stamp, img)
        return True

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        topic = self.sub_traj.topic_name
        self.diag.guard(topic, self._take_trajectory, msg, Event.REJECTED_TRAJECTORY)

    def _take_trajectory(self, msg: JointTrajectory) -> None:
        topic = self.sub_traj.topic_name
        meta = trajectory_meta(msg, topic)
        self.core.trajectory_published(trajectory_end(msg, topic), time.time(), meta.chunk_id, meta.t_traj)

    def _on_instruction(self, msg: String) -> None:
        self.diag.guard(self.sub_instr.topic_name, self._take_instruction, msg)

    def _take_instruction(self, msg: String) -> None:
        with self._lock:  # the new text and its replan request together (see _maybe_plan)
            changed = msg.data != self._instruction
            self._instruction = msg.data
            if changed:  # a republished (same) instruction does not restart planning
                self.core.request_replan()
        if changed:
            self.get_logger().info(f"instruction: {msg.data[:200]!r}")

    def _on_replan(self, request, response):
        self.core.request_replan()
        response.success, response.message = True, "replan requested"
        return response

    # -- the worker: decide, generate, publish ---------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.cfg.check_period):
            try:
                self._maybe_plan()
            except Exception as exc:  # noqa: BLE001 - keep planning; report the failure
                self.diag.set_level(ERROR, f"planning failed: {exc}")
                self.diag.event(Event.PLANNING_ERROR, repr(exc), ERROR)
                self._stop.wait(0.5)

    def _maybe_plan(self) -> None:
        now = time.time()
        start, _why = self.core.should_start(now)
        if not start:
            return
        with self._lock:
            frame, instruction, t_recv = self._frame, self._instruction, self._frame_recv
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
                self.diag.event(Event.STALE_OBSERVATION, reason)
            return
        if not self.core.observed_still(stamp):   # synchronous: wait for a frame of the arm at rest
            return
        with self._lock:
            if instruction != self._instruction:  # changed since read: plan the new one next check
                return
            chunk = self.core.begin(stamp, instruction, now)  # consumes a replan request made before
        seed = None if self.cfg.seed < 0 else self.cfg.seed + chunk.chunk_id
        try:
            history = self.history.select(stamp, self.cfg.history_frames, self.wm.fps) or None
            t_gen, cpu = time.time(), time.thread_time()
            with self.work.running():
                frames = self.wm.generate(image, instruction, history=history, seed=seed)
            t_gen_end, cpu = time.time(), time.thread_time() - cpu
        except Cancelled:   # the node is closing: no event, no retry
            self.core.fail(chunk, time.time(), "cancelled: the node is shutting down")
            return
        except Exception as exc:
            self.core.fail(chunk, time.time(), repr(exc))
            raise
        frames = np.asarray(frames)
        if not image_is_finite(frames):
            self.core.fail(chunk, time.time(), "non-finite frames")
            self.diag.event(Event.NONFINITE_PLAN, f"chunk {chunk.chunk_id}: generated frames contain NaN/inf; dropped")
            return
        t_plan = time.time()
        timing = getattr(self.wm, "last_timing", {})
        self.core.finish(chunk, t_plan, timing)   # sets chunk.anchor
        self.stages.add(timing)
        msg = chunk_to_msg(frames, stamp, chunk.chunk_id, self.wm.fps, chunk.n_exec, t_plan, chunk.anchor)
        self.pub.publish(msg)
        self.breakdown.add(planner_breakdown(stamp, t_recv, now, t_gen, t_gen_end, t_plan, timing, cpu))
        if self.core.synchronous != self._synchronous:   # say it once per change, not per chunk
            self._synchronous = self.core.synchronous
            self.get_logger().info(
                f"chunk {chunk.chunk_id}: {t_plan - stamp:.2f} s from frame to plan, chunks run "
                f"{chunk.exec_duration:.2f} s: " + ("planning synchronously (the arm waits for each chunk)"
                                                    if self._synchronous else "planning ahead again (policy lead)"))
        self.cam_to_plan.add(t_plan - stamp)
        self.generation.add(chunk.generation_latency)
        self.diag.set_level(OK, f"chunk {chunk.chunk_id} published")

    # -- reporting ------------------------------------------------------------------------
    def diagnostic_values(self) -> dict:
        c = self.core.counts
        g = self.generation.summary()
        return {"chunks_planned": c["planned"], "chunks_failed": c["failed"],
                "stale_rejected": c["stale_rejected"], "frames_received": self.frames_received,
                "frames_rejected": self.frames_rejected, "expected_latency_s": round(self.core.expected_latency, 4),
                "decode_latency_s": round(self.core.decode_latency, 4),
                "synchronous": self.core.synchronous, "chunks_synchronous": c["synchronous"], "chunks_late": c["late"],
                "generation_p50_ms": g.get("p50_ms", ""), "generation_p99_ms": g.get("p99_ms", ""),
                **{f"world_model.{k}": v for k, v in self.stages.values().items()},
                **self.breakdown.values()}   # the last chunk's latency.<stage>_ms

    def report(self) -> dict:
        return {"chunks_planned": self.core.counts["planned"], "chunks_failed": self.core.counts["failed"],
                "stale_observations_rejected": self.core.counts["stale_rejected"],
                "replan_requests": self.core.counts["replan_requests"],
                "chunks_synchronous": self.core.counts["synchronous"],   # ran from their arrival
                "chunks_late": self.core.counts["late"],                 # ended before they could arrive
                "frames_rejected": self.frames_rejected,
                "latency_camera_to_plan": self.cam_to_plan.summary(),
                "generation_latency": self.generation.summary(),
                "world_model_stages": self.stages.summary(),   # per chunk: seconds per stage, transformer calls
                "latency_breakdown": self.breakdown.summary()}   # eva_core.latency_breakdown, ms per stage

    def close(self) -> None:
        """Stop the worker within launch's SIGINT grace (5 s): a generation in this process stops
        at its next denoising step; one in a model process ends with that process."""
        self.work.cancel()
        stop_thread(self._stop, self._worker, 2.0)
        if isinstance(self.wm, ModelProcess):
            self.wm.close(timeout=1.0)
            self._worker.join(timeout=1.0)   # its generate() returns once the process is gone


def main(args=None):
    run_node(PlannerNode, args)


if __name__ == "__main__":
    main()
