"""Inverse kinematics on the twin's MuJoCo model with `mink` (differential IK, QP per step).

`ArmIK(twin).solve(arm, pos, rot, start)` returns the action vector whose `tcp_<arm>` site
reaches the world pose (pos, rot); only that arm's joint dims change. Each solve starts from
`start`, so a sequence of nearby waypoints stays on one IK branch.
"""

from __future__ import annotations

import mink
import numpy as np

from eva_core.sim.layout import ArmLayout


# Near a joint limit the QP creeps; a pose this close is good enough for the scripted plans
ACCEPT_POS, ACCEPT_ROT = 0.006, 0.03   # m, rad


class IKError(RuntimeError):
    """The IK did not reach the pose (out of reach or at a joint limit)."""


PITCH = 0.6  # rad the approach leans from vertical: a Piper's wrist (J5 +-70 deg) cannot point
             # straight down over most of the table, a leaning approach reaches all of it


def grasp_rotation(closing_xy, radial_xy, pitch: float = PITCH) -> np.ndarray:
    """Gripper rotation (columns = palm x, y, z in the world): fingers close along the horizontal
    `closing_xy`; the approach (palm z) points down, leaning by `pitch` along the horizontal
    normal of `closing_xy` on the side of `radial_xy` (the arm's outward direction)."""
    c = np.array([closing_xy[0], closing_xy[1], 0.0])
    c /= np.linalg.norm(c)
    t = np.array([-c[1], c[0], 0.0])
    if t[:2] @ np.asarray(radial_xy) < 0:
        t = -t
    approach = np.array([0.0, 0.0, -np.cos(pitch)]) + np.sin(pitch) * t
    return np.column_stack([np.cross(c, approach), c, approach])


class ArmIK:
    def __init__(self, twin, solver: str = "daqp", dt: float = 0.05, max_iters: int = 300,
                 pos_tol: float = 1e-3, rot_tol: float = 1e-2):
        self.twin, self.solver, self.dt, self.max_iters = twin, solver, dt, max_iters
        self.pos_tol, self.rot_tol = pos_tol, rot_tol
        self.model = twin.model
        self.conf = mink.Configuration(self.model)
        self.limits = [mink.ConfigurationLimit(self.model)]
        self._tasks = {}
        for arm in twin.arms:
            frame = mink.FrameTask(f"tcp_{arm.name}", "site", position_cost=1.0, orientation_cost=0.5,
                                   lm_damping=1e-3)
            cost = np.zeros(self.model.nv)
            cost[twin._vadr[list(arm.joint_dims)]] = 1e-3   # prefer staying near the start posture
            posture = mink.PostureTask(self.model, cost=cost)
            self._tasks[arm.name] = (frame, posture)

    def solve(self, arm: ArmLayout, pos, rot, start: np.ndarray) -> np.ndarray:
        emb = self.twin.emb
        q = self.twin.qpos_snapshot()
        q[self.twin._qadr] = emb.action_to_joint_positions(start)
        self.conf.update(q)
        frame, posture = self._tasks[arm.name]
        frame.set_target(mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(np.asarray(rot)),
                                                                np.asarray(pos, float)))
        posture.set_target(self.conf.q.copy())
        keep = np.ones(self.model.nv, bool)
        keep[self.twin._vadr[list(arm.joint_dims)]] = False
        for _ in range(self.max_iters):
            err = frame.compute_error(self.conf)
            if np.linalg.norm(err[:3]) < self.pos_tol and np.linalg.norm(err[3:]) < self.rot_tol:
                break
            v = mink.solve_ik(self.conf, [frame, posture], self.dt, self.solver, damping=1e-3,
                              limits=self.limits)
            v[keep] = 0.0
            self.conf.integrate_inplace(v, self.dt)
        else:
            err = frame.compute_error(self.conf)
            if np.linalg.norm(err[:3]) > ACCEPT_POS or np.linalg.norm(err[3:]) > ACCEPT_ROT:
                raise IKError(f"twin IK: arm {arm.name!r} cannot reach {np.round(pos, 3).tolist()} "
                              f"(residual {np.linalg.norm(err[:3]) * 1000:.1f} mm, {np.linalg.norm(err[3:]):.3f} rad)")
        out = np.asarray(start, float).copy()
        qa = emb.joint_positions_to_action(self.conf.q[self.twin._qadr])
        out[list(arm.joint_dims)] = qa[list(arm.joint_dims)]
        return np.clip(out, emb.pos_lower, emb.pos_upper)

