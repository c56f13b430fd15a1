"""idm_action_node: generated chunks -> eva_core.chunk_decoding.ChunkDecoder -> JointTrajectory.

Subscribes eva/plan/frames (encoding: eva_ros.conversions) and joint_states (the decoder's state
history); publishes eva/plan/trajectory (header.stamp = point 0 = the observation time, or the
publish time for a chunk anchored at its arrival (synchronous planning: policy sync or lead's fallback),
time_from_start = i * control dt, /joint_states units) and eva/plan/score (std_msgs/Float32,
the reward of every chunk that got that far). A rejected chunk is an event of its kind
(eva_core.chunk_decoding.Reject); a low reward also calls eva/replan. Every callback is
guarded: a bad message is an event naming the topic and field, and the node lives on.
Parameters: section `idm_action`, IDMActionConfig (eva_ros/node_config.py, docs/ros_interface.md).
"""

from __future__ import annotations

import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from eva_core.cancel import Cancelled, TorchWork
from eva_core.chunk_decoding import ChunkDecoder, JointStateHistory, Rejection, load_or_build_idm
from eva_core.embodiment import load_embodiment
from eva_core.latency_breakdown import BreakdownStats, idm_breakdown
from eva_ros import names, qos
from eva_ros.conversions import (TrajectoryMeta, from_time_msg, joint_values_to_action, msg_to_chunk,
                                 trajectory_to_msg)
from eva_ros.diagnostics import OK, DiagnosticsReporter, Event, LatencyStats
from eva_ros.node_config import IDMActionConfig
from eva_ros.params import NODE_KWARGS, load_node_config
from eva_ros.runtime import run_node, set_torch_threads


class IDMActionNode(Node):
    def __init__(self, node_name: str = "idm_action", idm=None, **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        cfg = self.cfg = load_node_config(self, IDMActionConfig)
        set_torch_threads(cfg.torch_threads)
        self.emb = load_embodiment(cfg.embodiment)
        idm = idm or load_or_build_idm(cfg.idm.checkpoint, cfg.idm.variant, cfg.idm.fusion, self.emb.dof)
        self.decoder = ChunkDecoder(
            self.emb, idm, 1.0 / cfg.control_rate_hz, safety=cfg.safety,
            reward_threshold=cfg.reward_threshold if cfg.reject_below_threshold else None,
            max_state_age=cfg.max_state_age, batch_size=cfg.idm.batch_size, precision=cfg.idm.precision,
            action_limit_tolerance=cfg.action_limit_tolerance)
        c = self.decoder.idm.config
        self.get_logger().info(f"IDM {c.variant} ({c.fusion} fusion, {c.image_size}px) in {self.decoder.precision}")
        if cfg.warmup:
            self.decoder.warmup()
        self.states = JointStateHistory(self.emb.dof, cfg.state_history_s)
        self.plan_to_traj, self.decode, self.cam_to_traj = LatencyStats(), LatencyStats(), LatencyStats()
        self.breakdown = BreakdownStats()   # per chunk: transport, idm, reward, safety, idm_total
        work = MutuallyExclusiveCallbackGroup()   # the IDM runs here, off the state callbacks
        state = MutuallyExclusiveCallbackGroup()
        self.sub_frames = self.create_subscription(Image, names.PLAN_FRAMES, self._on_chunk, qos.PLAN, callback_group=work)
        self.sub_joints = self.create_subscription(JointState, names.JOINT_STATES, self._on_joints, qos.STATE,
                                                   callback_group=state)
        self.pub_traj = self.create_publisher(JointTrajectory, names.PLAN_TRAJECTORY, qos.PLAN)
        self.pub_score = self.create_publisher(Float32, names.PLAN_SCORE, qos.DIAGNOSTICS)
        self.replan = self.create_client(Trigger, names.REPLAN, callback_group=state)
        self.diag = DiagnosticsReporter(self, "eva/idm_action", self.diagnostic_values)
        self.work = TorchWork("idm_action: chunk decoding")   # close() stops it between IDM batches

    @property
    def counts(self) -> dict:
        return self.decoder.counts

    def _on_joints(self, msg: JointState) -> None:
        self.diag.guard(self.sub_joints.topic_name, self._add_state, msg, Event.BAD_JOINT_STATE)

    def _add_state(self, msg: JointState) -> None:
        topic = self.sub_joints.topic_name
        q = joint_values_to_action(self.emb, msg.name, msg.position, topic)
        v = joint_values_to_action(self.emb, msg.name, msg.velocity, topic, "velocity") if len(msg.velocity) else None
        self.states.add(from_time_msg(msg.header.stamp), q, v, now=time.time())

    def _on_chunk(self, msg: Image) -> None:
        self.diag.guard(self.sub_frames.topic_name, self._decode, msg)

    def _decode(self, msg: Image) -> None:
        t_recv = time.time()
        try:
            frames, meta = msg_to_chunk(msg, self.sub_frames.topic_name)
        except ValueError as exc:
            result = self.decoder.bad_chunk(str(exc))
        else:
            try:
                with self.work.running():
                    result = self.decoder.decode(frames, meta, self.states)
            except Cancelled:   # the node is closing: the chunk is dropped without an event
                return
        self.decode.add(time.time() - t_recv)
        score = result.score
        if score is not None:
            self.pub_score.publish(Float32(data=float(score)))
        if isinstance(result, Rejection):
            self.diag.event(Event(result.kind.value), result.message)
            if result.replan and self.replan.service_is_ready():
                self.replan.call_async(Trigger.Request())
            return
        meta, t_traj, q = result.meta, time.time(), self.emb.action_to_joint_positions(result.positions)
        start = t_traj if meta.anchor == "arrival" else meta.stamp   # arrival: the arm was still since the observation
        self.pub_traj.publish(trajectory_to_msg(self.emb.joint_names, q, result.dt, start,
                                                TrajectoryMeta(meta.chunk_id, t_traj, score).to_frame_id()))
        if meta.t_plan is not None:
            self.plan_to_traj.add(t_traj - meta.t_plan)
        self.cam_to_traj.add(t_traj - meta.stamp)   # the observation's capture -> its trajectory out
        self.breakdown.add(idm_breakdown(meta.t_plan, t_recv, t_traj, self.decoder.last_timing))
        self.diag.set_level(OK, f"chunk {meta.chunk_id}: reward {score:.2f}")

    def diagnostic_values(self) -> dict:
        s = self.decoder.scores
        return {**self.counts, "last_score": round(s[-1], 4) if s else "",
                "decode_p50_ms": self.decode.summary().get("p50_ms", ""), **self.breakdown.values()}

    def report(self) -> dict:
        s = self.decoder.scores
        return {**{f"idm_{k}": v for k, v in self.counts.items()},
                "reward_mean": round(sum(s) / len(s), 4) if s else None,
                "latency_plan_to_trajectory": self.plan_to_traj.summary(),
                "latency_camera_to_trajectory": self.cam_to_traj.summary(),
                "idm_decode_latency": self.decode.summary(),
                "latency_breakdown": self.breakdown.summary()}   # eva_core.latency_breakdown, ms per stage

    def close(self) -> None:
        """A chunk being decoded stops at the IDM's next batch, so the executor drains at once."""
        self.work.cancel()


def main(args=None):
    run_node(IDMActionNode, args)


if __name__ == "__main__":
    main()
