"""leader_arm_node: publishes the teleoperation leader (master) arms on leader/joint_states.

The recorded demonstrations' action, like ALOHA's /action: a sensor_msgs/JointState with the
embodiment's joint names and SI positions (rad; gripper = finger travel, m, as joint_states),
read by `eva_ros.backends.piper.PiperLeader` from the control frames the leader arms send.
Nothing is sent to the arms. Silent or stale leader arms are reported on /diagnostics and
nothing is published for them (never a zero position).

Parameters (`eva_ros.node_config.LeaderArmConfig`, checked like every node's: a misspelled key is an error):
embodiment, rate_hz (publish rate, default 200), arm.* (PiperArm.Options: can_interface,
can_left, can_right, feedback_timeout). On Cobot Magic the leader arms have their own CAN
adapters (set arm.can_left / arm.can_right to their names); on a master-slave linked bus the
leader's frames are on the follower's channel, which then cannot also be opened by a
controller in the same process.
"""

from __future__ import annotations

import threading
import time

from rclpy.node import Node
from sensor_msgs.msg import JointState

from eva_core.embodiment import load_embodiment
from eva_ros import names, qos
from eva_ros.backends.piper import PiperLeader
from eva_ros.conversions import joint_state_msg
from eva_ros.diagnostics import ERROR, OK, DiagnosticsReporter, Event, RateCounter
from eva_ros.node_config import LeaderArmConfig
from eva_ros.params import NODE_KWARGS, load_node_config
from eva_ros.runtime import run_node, run_periodic, stop_thread


class LeaderArmNode(Node):
    def __init__(self, node_name: str = "leader_arm", **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        cfg = self.cfg = load_node_config(self, LeaderArmConfig)
        self.emb = load_embodiment(cfg.embodiment)
        rate = cfg.rate_hz
        self.leader = PiperLeader(self.emb, cfg.arm)
        self.leader.connect()
        self.pub = self.create_publisher(JointState, names.LEADER_JOINT_STATES, qos.STATE)
        self.published, self.problem = 0, ""
        self.rate = RateCounter()
        self.diag = DiagnosticsReporter(self, "eva/leader_arm", self.diagnostic_values)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=run_periodic, args=(1.0 / rate, self._stop, self._tick, 5.0 / rate),
                                        name="eva-leader", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        q, stamp_or_problem = self.leader.read()
        if q is None:
            if stamp_or_problem != self.problem:   # one event per new problem
                self.problem = stamp_or_problem
                self.diag.set_level(ERROR, self.problem)
                self.diag.event(Event.LEADER_SILENT, self.problem, ERROR)
            return
        if self.problem:
            self.problem = ""
            self.diag.set_level(OK, "ok")
        self.pub.publish(joint_state_msg(self.emb.joint_names, self.emb.action_to_joint_positions(q), [],
                                         stamp_or_problem))
        self.published += 1
        self.rate.tick(time.time())

    def diagnostic_values(self) -> dict:
        return {"published": self.published, "rate_hz": round(self.rate.rate(time.time()), 1), "problem": self.problem}

    def close(self) -> None:
        stop_thread(self._stop, self._thread, 5.0)
        self.leader.close()


def main(args=None):
    run_node(LeaderArmNode, args)


if __name__ == "__main__":
    main()
