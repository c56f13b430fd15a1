"""controller_node: executes JointTrajectory at the control rate on an `ArmBackend`.

Every tick (200 Hz default; a dedicated thread with absolute deadlines, not an executor timer):
1. read the backend; publish /joint_states (14 names, SI: emb.action_to_joint_positions);
2. watchdog: feedback older than `feedback_timeout` -> e-stop the backend, stop commanding,
   report (ERROR) until /eva/enable; no trajectory for `trajectory_timeout` -> keep holding the
   last safe target and report a `watchdog_trajectory_timeout` event;
3. sample the active trajectory (eva_core.trajectory.TrajectoryFollower: smooth replacement from
   the current time, hold when none), then the final SafetyFilter - the last line of defence;
   any command it had to change counts as a limit violation; a rejected one is never sent;
4. send the position command and echo it on /eva/controller/command (JointState, SI,
   header.frame_id "tick=<n>": equal-spaced control ticks, a gap after each enable).
Services: /eva/estop (std_srvs/Trigger), /eva/enable (std_srvs/SetBool).

Parameters (YAML section `controller`): embodiment, control_rate_hz, arm_backend (registry
name), arm.* (backend options), feedback_timeout, trajectory_timeout, auto_enable,
follower.* (FollowerConfig), safety.* (SafetyConfig of the final filter).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from eva_core.embodiment import load_embodiment
from eva_core.safety import SafetyConfig, SafetyFilter
from eva_core.trajectory import FollowerConfig, Trajectory, TrajectoryFollower
from eva_ros import qos
from eva_ros.backends import make_arm
from eva_ros.conversions import TRAJ_PREFIX, decode_meta, joint_state_msg, msg_to_trajectory
from eva_ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, LatencyStats, RateCounter
from eva_ros.params import NODE_KWARGS, declare_defaults, options_with_prefix
from eva_ros.runtime import run_node, run_periodic, stop_thread

DEFAULTS = {"embodiment": "cobot_magic", "control_rate_hz": 200.0, "arm_backend": "loopback",
            "feedback_timeout": 0.1, "trajectory_timeout": 0.5, "auto_enable": True}


class ControllerNode(Node):
    def __init__(self, node_name: str = "controller", backend=None, **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        p = self.p = declare_defaults(self, DEFAULTS)
        self.emb = load_embodiment(p["embodiment"])
        self.dt = 1.0 / p["control_rate_hz"]
        self.follower = TrajectoryFollower(self.emb, self.dt, FollowerConfig.from_dict(options_with_prefix(self, "follower")))
        self.final = SafetyFilter(self.emb, self.dt, SafetyConfig.from_dict(options_with_prefix(self, "safety")))
        arm_options = options_with_prefix(self, "arm")
        self.backend = backend or make_arm(p["arm_backend"], self.emb, **arm_options)
        self.backend.connect()

        self._lock = threading.Lock()
        self.enabled = False
        self.fault = ""                 # latched reason (feedback loss) until /eva/enable
        self._want_enable = p["auto_enable"]
        self._pending: Trajectory | None = None
        self._pending_t_traj = None
        self._first_cmd_wait = None      # (chunk id, t_traj) awaiting its first command
        self._hold_since = None
        self._starving_reported = False
        self._had_trajectory = False
        self.counts = {"commands_sent": 0, "limit_violations": 0, "rejected_commands": 0,
                       "trajectories_received": 0, "trajectories_rejected": 0,
                       "watchdog_trajectory_timeout": 0, "watchdog_feedback_timeout": 0, "estops": 0}
        self.violation_dims = np.zeros(self.emb.dof, dtype=np.int64)
        self.traj_to_cmd = LatencyStats()
        self.period = LatencyStats()
        self._last_tick = None
        self._tick_index = 0
        self.rate = RateCounter()

        io = MutuallyExclusiveCallbackGroup()
        self.pub_js = self.create_publisher(JointState, "/joint_states", qos.STATE)
        # every command sent, after the final filter (frame_id "tick=<n>": consecutive ticks)
        self.pub_cmd = self.create_publisher(JointState, "/eva/controller/command", qos.STATE)
        self.sub_traj = self.create_subscription(JointTrajectory, "/eva/plan/trajectory", self._on_trajectory,
                                                 qos.PLAN, callback_group=io)
        self.srv_estop = self.create_service(Trigger, "/eva/estop", self._on_estop, callback_group=io)
        self.srv_enable = self.create_service(SetBool, "/eva/enable", self._on_enable, callback_group=io)
        self.diag = DiagnosticsReporter(self, "eva/controller", self.diagnostic_values)
        # The control loop is a dedicated thread with absolute deadlines rather than an executor
        # timer: rclpy's executors add milliseconds of dispatch jitter at 200 Hz.
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._control_loop, name="eva-control-loop", daemon=True)
        self._thread.start()
        self.get_logger().info(f"controller at {p['control_rate_hz']} Hz on backend {p['arm_backend']!r}")

    # -- inputs ------------------------------------------------------------------------------
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            stamp, times, q = msg_to_trajectory(msg, self.emb.joint_names)
            meta = decode_meta(TRAJ_PREFIX, msg.header.frame_id) if msg.header.frame_id.startswith(TRAJ_PREFIX) else {}
            traj = Trajectory(stamp, times, self.emb.joint_positions_to_action(q), chunk_id=int(meta.get("id", -1)))
        except ValueError as exc:
            with self._lock:
                self.counts["trajectories_rejected"] += 1
            self.diag.event("rejected_trajectory", f"/eva/plan/trajectory: {exc}; not executed")
            return
        with self._lock:
            self.counts["trajectories_received"] += 1
            self._pending = traj
            self._pending_t_traj = float(meta["t_traj"]) if "t_traj" in meta else None

    def _on_estop(self, request, response):
        with self._lock:
            self.backend.estop()
            self.enabled = False
            self._want_enable = False
            self._pending = None
            self.follower.clear()
            self.counts["estops"] += 1
        self.diag.set_level(WARN, "e-stopped; call /eva/enable to resume")
        self.diag.event("estop", "e-stop requested; commands stopped")
        response.success, response.message = True, "e-stopped"
        return response

    def _on_enable(self, request, response):
        with self._lock:
            if request.data:
                self._want_enable = True
                response.message = "enable requested"
            else:
                self._want_enable = False
                self.enabled = False
                self.follower.clear()
                response.message = "disabled"
        response.success = True
        return response

    # -- the control tick ---------------------------------------------------------------------
    def _control_loop(self) -> None:
        run_periodic(self.dt, self._stop, self._guarded_tick, max_lag=5 * self.dt)

    def _guarded_tick(self) -> None:
        try:
            self._tick()
        except Exception as exc:  # noqa: BLE001 - never die silently: stop the arm and report
            with self._lock:
                self.enabled, self._want_enable = False, False
                self.follower.clear()
                self.fault = f"control tick failed: {exc!r}"
                try:
                    self.backend.estop()  # the arm must not keep servoing to a stale target
                    self.counts["estops"] += 1
                except Exception as estop_exc:  # noqa: BLE001
                    self.fault += f"; backend e-stop failed too: {estop_exc!r}"
            self.diag.set_level(ERROR, self.fault + "; e-stopped, call /eva/enable to resume")
            self.diag.event("control_error", self.fault, ERROR)

    def _tick(self) -> None:
        now, mono = time.time(), time.monotonic()
        if self._last_tick is not None:
            self.period.add(mono - self._last_tick)
        self._last_tick = mono
        try:
            state = self.backend.read_state()
        except Exception as exc:  # noqa: BLE001 - treated as lost feedback
            state = None
            self.diag.event("backend_error", repr(exc), ERROR)
        with self._lock:
            fresh = state is not None and now - state.stamp <= self.p["feedback_timeout"]
            if fresh:
                self.pub_js.publish(joint_state_msg(
                    self.emb.joint_names, self.emb.action_to_joint_positions(state.positions),
                    self.emb.action_to_joint_positions(state.velocities), state.stamp))
            elif state is not None or self.enabled:
                self._feedback_lost(now, state)
                return
            if self._want_enable and not self.enabled and fresh:
                self._enable(state)
            if not self.enabled:
                return
            self._command(now)

    def _feedback_lost(self, now, state) -> None:
        if self.fault:
            return
        age = "none" if state is None else f"{now - state.stamp:.3f} s old"
        self.fault = f"backend feedback lost ({age})"
        self.counts["watchdog_feedback_timeout"] += 1
        if self.enabled:
            self.backend.estop()
        self.enabled = False
        self._want_enable = False
        self.follower.clear()
        self.diag.set_level(ERROR, self.fault + "; stopped, call /eva/enable when feedback is back")
        self.diag.event("watchdog_feedback_timeout", self.fault + "; stopped", ERROR)

    def _enable(self, state) -> None:
        self.backend.enable()
        self._tick_index += 1  # a gap: commands before and after an enable are not consecutive
        self.follower.reset(state.positions, np.zeros(self.emb.dof))
        self.final.reset(state.positions, np.zeros(self.emb.dof))
        self._pending = None
        self._hold_since, self._starving_reported = None, False
        self.fault = ""
        self.enabled = True
        self.diag.set_level(OK, "enabled")

    def _command(self, now: float) -> None:
        if self._pending is not None:
            traj, self._pending = self._pending, None
            if self.follower.replace(traj, now):
                self._had_trajectory = True
                if self._pending_t_traj is not None:
                    self._first_cmd_wait = (traj.chunk_id, self._pending_t_traj)
            else:  # counted by the follower (counts["expired"])
                self.diag.event("trajectory_expired", f"chunk {traj.chunk_id} ended before it arrived")
        target, _ = self.follower.step(now)
        cmd, rep = self.final.step(target)
        if rep.rejected:
            self.counts["rejected_commands"] += 1
            self.diag.event("rejected_command", f"final safety filter: {rep.reason}; not sent", ERROR)
            return
        if rep.modified:
            self.counts["limit_violations"] += 1
            self.violation_dims += (rep.position_clipped + rep.velocity_limited + rep.acceleration_limited) > 0
        self.backend.send_positions(cmd)
        self.counts["commands_sent"] += 1
        self._tick_index += 1
        cmd_msg = joint_state_msg(self.emb.joint_names, self.emb.action_to_joint_positions(cmd), [], now)
        cmd_msg.header.frame_id = f"tick={self._tick_index}"
        self.pub_cmd.publish(cmd_msg)
        self.rate.tick(now)
        if self._first_cmd_wait is not None and self.follower.active \
                and self.follower.trajectory.chunk_id == self._first_cmd_wait[0]:
            self.traj_to_cmd.add(now - self._first_cmd_wait[1])
            self._first_cmd_wait = None
        self._watchdog_trajectory(now)

    def _watchdog_trajectory(self, now: float) -> None:
        if self.follower.active:
            self._hold_since, self._starving_reported = None, False
            return
        if not self._had_trajectory:
            return
        if self._hold_since is None:
            self._hold_since = now
        elif not self._starving_reported and now - self._hold_since > self.p["trajectory_timeout"]:
            self._starving_reported = True
            self.counts["watchdog_trajectory_timeout"] += 1
            self.diag.event("watchdog_trajectory_timeout",
                            f"no trajectory for {now - self._hold_since:.2f} s; holding the last safe target")

    # -- reporting ----------------------------------------------------------------------------
    def _counts(self) -> dict:
        """The node's counts plus the trajectory counts the follower keeps (call under the lock)."""
        return {**self.counts, "trajectories_executed": self.follower.counts["accepted"],
                "trajectories_expired": self.follower.counts["expired"]}

    def diagnostic_values(self) -> dict:
        with self._lock:
            out = self._counts()
            out.update(enabled=self.enabled, fault=self.fault, holding=not self.follower.active,
                       command_rate_hz=round(self.rate.rate(time.time()), 1))
        per = self.period.summary()
        out["period_p50_ms"], out["period_p99_ms"] = per.get("p50_ms", ""), per.get("p99_ms", "")
        return out

    def report(self) -> dict:
        with self._lock:
            out = self._counts()
            out["limit_violation_dims"] = self.violation_dims.tolist()
        out["watchdog_events"] = out["watchdog_trajectory_timeout"] + out["watchdog_feedback_timeout"]
        out["latency_trajectory_to_first_command"] = self.traj_to_cmd.summary()
        out["control_period"] = self.period.summary()
        return out

    def close(self) -> None:
        stop_thread(self._stop, self._thread, 5.0)
        self.backend.close()


def main(args=None):
    run_node(ControllerNode, args)


if __name__ == "__main__":
    main()
