"""controller_node: the ROS adapter of eva_core.control.ControlLoop (states, watchdogs, faults,
the final safety filter). A dedicated thread with absolute deadlines (not an executor timer)
ticks at `control_rate_hz`: read the backend, publish joint_states, `loop.tick`, send a COMMAND
decision and echo it on eva/controller/command (header.frame_id "tick=<n>": consecutive ticks,
a gap after each enable), publish the loop's events on /diagnostics. An executor timer beats
the loop's heartbeat: none for `heartbeat_timeout` s of ticks (a dead executor thread) -> fault
and e-stop. Services: eva/estop (Trigger, its own callback group), eva/enable (SetBool).
Parameters: the `controller` section (eva_ros.node_config.ControllerConfig).
"""

from __future__ import annotations

import sys
import threading
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from eva_core.control import ControlLoop, EventKind, Kind, TrajectoryRejection, trajectory_msg_rejection
from eva_core.embodiment import load_embodiment
from eva_core.trajectory import Trajectory
from eva_ros import names, qos
from eva_ros.backends import make_arm
from eva_ros.conversions import joint_state_msg, msg_to_trajectory, trajectory_meta
from eva_ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, Event, LatencyStats, RateCounter
from eva_ros.node_config import ControllerConfig
from eva_ros.params import NODE_KWARGS, load_node_config
from eva_ros.runtime import run_node, run_periodic, stop_thread

LEVELS = (OK, WARN, ERROR)   # eva_core.control.Level -> DiagnosticStatus level
HEARTBEAT_PERIOD = 0.1


class ControllerNode(Node):
    def __init__(self, node_name: str = "controller", backend=None, **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        cfg = self.cfg = load_node_config(self, ControllerConfig)
        self.emb = load_embodiment(cfg.embodiment)
        dt = 1.0 / cfg.control_rate_hz
        self.backend = backend or make_arm(cfg.arm_backend, self.emb, cfg.arm)
        self.loop = ControlLoop(self.emb, dt, self.backend, **{k: getattr(cfg, k) for k in ControlLoop.OPTIONS})
        self.backend.connect()
        self.period, self.traj_to_cmd, self.rate = LatencyStats(), LatencyStats(), RateCounter()
        self._last_tick, self._flush_failed, self._ticks = None, False, 0

        io = MutuallyExclusiveCallbackGroup()
        self.pub_js = self.create_publisher(JointState, names.JOINT_STATES, qos.STATE)
        self.pub_cmd = self.create_publisher(JointState, names.CONTROLLER_COMMAND, qos.STATE)
        self.sub_traj = self.create_subscription(JointTrajectory, names.PLAN_TRAJECTORY, self._on_trajectory,
                                                 qos.PLAN, callback_group=io)
        self.create_service(Trigger, names.ESTOP, self._on_estop, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(SetBool, names.ENABLE, self._on_enable, callback_group=io)
        self.diag = DiagnosticsReporter(self, "eva/controller", self.diagnostic_values)
        self.create_timer(HEARTBEAT_PERIOD, self.loop.beat, callback_group=MutuallyExclusiveCallbackGroup())
        if cfg.auto_enable:
            self.loop.enable()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=run_periodic, args=(dt, self._stop, self._tick, 5 * dt),
                                        name="eva-control-loop", daemon=True)
        self._thread.start()
        self.get_logger().info(f"controller at {cfg.control_rate_hz} Hz on backend {cfg.arm_backend!r}")

    # -- inputs (executor threads) -------------------------------------------------------------
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        topic = self.sub_traj.topic_name
        why = TrajectoryRejection.MALFORMED
        try:
            meta = trajectory_meta(msg, topic)
            why = trajectory_msg_rejection(msg.joint_names, self.emb.joint_names, [p.positions for p in msg.points])
            stamp, times, q = msg_to_trajectory(msg, self.emb.joint_names, topic)
            traj = Trajectory(stamp, times, self.emb.joint_positions_to_action(q), chunk_id=meta.chunk_id)
        except Exception as exc:  # noqa: BLE001 - a bad message is rejected, never fatal
            self.loop.reject(str(exc) if topic in str(exc) else f"{topic}: {exc}", why)
        else:
            self.loop.replace(traj, sent_at=meta.t_traj)
        self._flush()

    def _on_estop(self, request, response):
        response.success, response.message = self.loop.estop("e-stop requested")
        self._flush()
        return response

    def _on_enable(self, request, response):
        response.success, response.message = self.loop.enable() if request.data else self.loop.disable()
        self._flush()
        return response

    def failure(self) -> str:
        """Why this node can no longer do its job ("" while healthy); the main thread checks it."""
        return "" if self._thread.is_alive() or self._stop.is_set() else "control thread ended"

    def halt(self, reason: str) -> None:
        """Stop commanding and e-stop the arm from any thread (e.g. the executor died)."""
        self.loop.fail(reason, EventKind.EXECUTOR_STOPPED)
        self._flush()

    # -- the control tick (control thread) -----------------------------------------------------
    def _tick(self) -> None:
        now, mono = time.time(), time.monotonic()
        if self._last_tick is not None:
            self.period.add(mono - self._last_tick)
        self._last_tick = mono
        try:
            self._control(now)
        except Exception as exc:  # noqa: BLE001 - one latched fault (e-stop), never a dead thread
            self.loop.fail(f"control tick failed: {exc!r}")
        self._flush()

    def _control(self, now: float) -> None:
        try:
            state, error = self.backend.read_state(), ""
        except Exception as exc:  # noqa: BLE001 - lost feedback, handled by the loop
            state, error = None, repr(exc)
        publish_state, self._ticks = self._ticks % self.cfg.joint_states_every == 0, self._ticks + 1
        if publish_state and state is not None and abs(now - state.stamp) <= self.loop.feedback_timeout:
            self.pub_js.publish(joint_state_msg(self.emb.joint_names, self.emb.action_to_joint_positions(
                state.positions), self.emb.action_to_joint_positions(state.velocities), state.stamp))
        decision = self.loop.tick(state, now, error)
        if decision.kind is not Kind.COMMAND:
            return
        try:
            self.backend.send_positions(decision.positions)
        except Exception as exc:  # noqa: BLE001 - the bus failed: latched fault, e-stop
            self.loop.fail(f"send failed: {exc!r}", unsent=True)
            return
        msg = joint_state_msg(self.emb.joint_names, self.emb.action_to_joint_positions(decision.positions), [], now)
        msg.header.frame_id = f"tick={decision.tick}"
        self.pub_cmd.publish(msg)
        self.rate.tick(now)
        if decision.latency is not None:
            self.traj_to_cmd.add(decision.latency)

    def _flush(self) -> None:
        """Publish the loop's events and status. Never raises: callbacks call it too."""
        try:
            for event in self.loop.take_events():
                self.diag.event(Event(event.kind.value), event.message, LEVELS[event.level],
                                {"reason": event.reason} if event.reason else None)
            level, message = self.loop.status()
            self.diag.set_level(LEVELS[level], message)
        except Exception as exc:  # noqa: BLE001 - e.g. the context is shutting down; say it once
            if not self._flush_failed:
                self._flush_failed = True
                print(f"controller: diagnostics not published: {exc!r}", file=sys.stderr)

    # -- reporting ------------------------------------------------------------------------------
    def diagnostic_values(self) -> dict:
        per = self.period.summary()
        return {**self.loop.report(), "command_rate_hz": round(self.rate.rate(time.time()), 1),
                "period_p50_ms": per.get("p50_ms", ""), "period_p99_ms": per.get("p99_ms", "")}

    def report(self) -> dict:
        return {**self.loop.report(), "latency_trajectory_to_first_command": self.traj_to_cmd.summary(),
                "control_period": self.period.summary(), "arm": self.backend.report()}

    def close(self) -> None:
        stop_thread(self._stop, self._thread, 5.0)
        self.backend.close()


def main(args=None):
    run_node(ControllerNode, args)


if __name__ == "__main__":
    main()
