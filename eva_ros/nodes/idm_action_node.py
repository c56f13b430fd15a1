"""idm_action_node: generated frames -> 14-D actions -> safety filter -> JointTrajectory.

For each chunk on /eva/plan/frames:
1. decode and check the frames (NaN/inf -> rejected with a diagnostic, nothing published);
2. batched IDM: (T, 3, H, W) in [0, 1] -> (T, 14) actions; non-finite actions are rejected;
3. executability reward of the chunk -> /eva/plan/score (std_msgs/Float32); below
   `reward_threshold` (when `reject_below_threshold`) the chunk is dropped and /eva/replan called;
4. the first n_exec actions (at the chunk fps) are resampled to the control dt and passed
   through the safety filter from the joint state at the chunk's observation time;
5. publish /eva/plan/trajectory: header.stamp = observation time (point 0), time_from_start =
   i * control dt, positions in /joint_states units (emb.action_to_joint_positions).

Parameters (YAML section `idm_action`): embodiment, control_rate_hz, reward_threshold,
reject_below_threshold, torch_threads, state_history_s, max_state_age (s between the chunk's
observation and the nearest /joint_states, else the chunk is rejected), warmup, idm.variant (+ idm.fusion)
| idm.checkpoint, idm.precision (float32 | bfloat16 | auto = bf16 where native; bench/idm_precision.py has its cost),
idm.batch_size, safety.* (SafetyConfig).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from eva_core.embodiment import load_embodiment
from eva_core.safety import SafetyConfig, SafetyFilter
from eva_ros import qos
from eva_ros.conversions import (TRAJ_PREFIX, encode_meta, from_time_msg, image_is_finite, msg_to_chunk,
                                 joint_values_to_action, trajectory_to_msg)
from eva_ros.diagnostics import OK, DiagnosticsReporter, LatencyStats
from eva_ros.params import NODE_KWARGS, declare_defaults, options_with_prefix
from eva_ros.runtime import run_node, set_torch_threads

DEFAULTS = {"embodiment": "cobot_magic", "control_rate_hz": 200.0, "reward_threshold": 0.0,
            "reject_below_threshold": False, "torch_threads": 1, "state_history_s": 5.0, "max_state_age": 0.25, "warmup": True}


def build_idm(options: dict):
    """IDM from `idm.checkpoint` (our safetensors dir or EVA .pt) or a fresh `idm.variant`."""
    from eva_core.idm import IDMConfig, build_idm as _build, load_idm

    if options.get("checkpoint"):
        return load_idm(options["checkpoint"])
    return _build(IDMConfig(variant=options.get("variant", "tiny"), fusion=options.get("fusion")))


def resample(actions: np.ndarray, fps: float, n_exec: int, dt: float) -> np.ndarray:
    """Actions 0..n_exec at spacing 1/fps -> positions at spacing dt over n_exec/fps seconds."""
    n = min(n_exec, actions.shape[0] - 1)
    src_t = np.arange(n + 1) / fps
    dst_t = np.arange(int(np.floor(src_t[-1] / dt + 1e-9)) + 1) * dt
    return np.stack([np.interp(dst_t, src_t, actions[: n + 1, j]) for j in range(actions.shape[1])], axis=1)


class IDMActionNode(Node):
    def __init__(self, node_name: str = "idm_action", idm=None, **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        p = self.p = declare_defaults(self, DEFAULTS)
        set_torch_threads(p["torch_threads"])
        self.emb = load_embodiment(p["embodiment"])
        self.dt = 1.0 / p["control_rate_hz"]
        from eva_core.idm import resolve_precision
        from eva_core.reward import executability_reward  # imported here: heavy, holds the GIL

        idm_options = options_with_prefix(self, "idm")
        self.idm = idm or build_idm(idm_options)
        try:
            self.idm_precision = resolve_precision(idm_options.get("precision", "float32"), self.idm.action_mean.device)
        except ValueError as e:
            raise ValueError(f"{node_name}: parameter idm.precision: {e}") from e
        self.idm_batch_size = int(idm_options.get("batch_size", 16))
        cfg = self.idm.config
        self.get_logger().info(f"IDM {cfg.variant} ({cfg.fusion} fusion, {cfg.image_size}px) in {self.idm_precision}")

        self._reward = executability_reward
        if p["warmup"]:  # first-call costs here, not in the first chunk
            self.score(self.predict(np.zeros((4, 64, 64, 3), np.uint8)), 16.0)
        self.filter = SafetyFilter(self.emb, self.dt, SafetyConfig.from_dict(options_with_prefix(self, "safety")))
        self._states = deque()  # (stamp, positions, velocities) in action units
        self._lock = threading.Lock()
        self.counts = {"chunks": 0, "trajectories": 0, "rejected_frames": 0, "rejected_actions": 0,
                       "rejected_reward": 0, "rejected_safety": 0, "no_state": 0, "safety_modified": 0}
        self.scores: list[float] = []
        self.plan_to_traj = LatencyStats()
        self.decode = LatencyStats()

        work = MutuallyExclusiveCallbackGroup()   # the IDM runs here, off the state callbacks
        state = MutuallyExclusiveCallbackGroup()
        self.sub_frames = self.create_subscription(Image, "/eva/plan/frames", self._on_chunk, qos.PLAN, callback_group=work)
        self.sub_joints = self.create_subscription(JointState, "/joint_states", self._on_joints, qos.STATE, callback_group=state)
        self.pub_traj = self.create_publisher(JointTrajectory, "/eva/plan/trajectory", qos.PLAN)
        self.pub_score = self.create_publisher(Float32, "/eva/plan/score", qos.DIAGNOSTICS)
        self.replan = self.create_client(Trigger, "/eva/replan", callback_group=state)
        self.diag = DiagnosticsReporter(self, "eva/idm_action", self.diagnostic_values)

    def _on_joints(self, msg: JointState) -> None:
        try:
            q = joint_values_to_action(self.emb, msg.name, msg.position, "/joint_states")
            v = joint_values_to_action(self.emb, msg.name, msg.velocity, "/joint_states") if len(msg.velocity) else np.zeros(self.emb.dof)
        except ValueError as exc:
            self.diag.event("bad_joint_state", str(exc))
            return
        stamp = from_time_msg(msg.header.stamp)
        with self._lock:
            self._states.append((stamp, q, v))
            while self._states and self._states[0][0] < stamp - self.p["state_history_s"]:
                self._states.popleft()

    def state_at(self, t: float):
        """The buffered joint state closest to time t, or None."""
        with self._lock:
            if not self._states:
                return None
            return min(self._states, key=lambda s: abs(s[0] - t))

    def _reject(self, kind: str, counter: str, message: str, replan: bool = False) -> None:
        self.counts[counter] += 1
        self.diag.event(kind, message)
        if replan and self.replan.service_is_ready():
            self.replan.call_async(Trigger.Request())

    def _on_chunk(self, msg: Image) -> None:
        t_recv = time.time()
        self.counts["chunks"] += 1
        try:
            frames, meta = msg_to_chunk(msg)
        except ValueError as exc:
            return self._reject("bad_chunk", "rejected_frames", str(exc))
        cid = meta["id"]
        if not image_is_finite(frames):
            return self._reject("nonfinite_frames", "rejected_frames", f"chunk {cid}: NaN/inf in frames; no trajectory")
        actions = self.predict(frames)
        self.decode.add(time.time() - t_recv)
        if not np.all(np.isfinite(actions)):
            return self._reject("nonfinite_actions", "rejected_actions", f"chunk {cid}: IDM produced NaN/inf actions; no trajectory")
        score = self.score(actions, meta["fps"])
        self.scores.append(score)
        self.pub_score.publish(Float32(data=float(score)))
        if self.p["reject_below_threshold"] and score < self.p["reward_threshold"]:
            return self._reject("low_reward", "rejected_reward",
                                f"chunk {cid}: reward {score:.3f} < {self.p['reward_threshold']}; replanning", replan=True)
        state = self.state_at(meta["stamp"])
        if state is None:
            return self._reject("no_joint_state", "no_state", f"chunk {cid}: no /joint_states yet; no trajectory")
        if abs(state[0] - meta["stamp"]) > self.p["max_state_age"]:  # e.g. the controller died
            return self._reject("stale_joint_state", "no_state",
                                f"chunk {cid}: nearest /joint_states is {abs(state[0] - meta['stamp']):.2f} s from "
                                f"the observation (> max_state_age {self.p['max_state_age']} s); no trajectory")
        targets = resample(actions, meta["fps"], meta["n_exec"], self.dt)
        positions, rep = self.filter.filter_chunk(targets, state[1], state[2])
        if rep.rejected:
            return self._reject("safety_rejected", "rejected_safety", f"chunk {cid}: {rep.reason}")
        self.counts["safety_modified"] += int(rep.modified)
        t_traj = time.time()
        frame_id = encode_meta(TRAJ_PREFIX, {"id": cid, "t_traj": f"{t_traj:.6f}", "score": f"{score:.4f}"})
        self.pub_traj.publish(trajectory_to_msg(self.emb.joint_names, self.emb.action_to_joint_positions(positions),
                                                self.dt, meta["stamp"], frame_id))
        self.counts["trajectories"] += 1
        self.plan_to_traj.add(t_traj - meta["t_plan"])
        self.diag.set_level(OK, f"chunk {cid}: reward {score:.2f}")

    def predict(self, frames: np.ndarray) -> np.ndarray:
        import torch

        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        video = video.float() / 255.0 if frames.dtype == np.uint8 else video.float()
        with torch.inference_mode():
            actions = self.idm.predict(video, batch_size=self.idm_batch_size, precision=self.idm_precision)
        return actions.numpy().astype(np.float64)

    def score(self, actions: np.ndarray, fps: float) -> float:
        return float(self._reward(actions, fps=fps).score)

    def diagnostic_values(self) -> dict:
        out = dict(self.counts)
        out["last_score"] = round(self.scores[-1], 4) if self.scores else ""
        out["decode_p50_ms"] = self.decode.summary().get("p50_ms", "")
        return out

    def report(self) -> dict:
        s = np.asarray(self.scores)
        return {**{f"idm_{k}": v for k, v in self.counts.items()},
                "reward_mean": round(float(s.mean()), 4) if s.size else None,
                "latency_plan_to_trajectory": self.plan_to_traj.summary(),
                "idm_decode_latency": self.decode.summary()}

    def close(self) -> None:
        pass


def main(args=None):
    run_node(IDMActionNode, args)


if __name__ == "__main__":
    main()
