"""The MuJoCo physics twin: servo targets in, joint state and rendered camera images out.

It is a *plant* (the interface of `eva_core.sim.piper_emulator`): `set_targets(action)` sets the
position servos, `read()` returns (positions, velocities), both in the embodiment's action units
(rad; grippers normalised [0, 1]). Time advances in fixed physics steps: `step(n)` as fast as
the CPU goes (scripted demos), or `advance_to(t)` paced by a clock (the ROS graph).
`set_action(action)` teleports the robot (kinematic pose, zero velocity); a camera node in its own
process uses it to pose its copy of the twin from /joint_states.

One twin per name and process (`eva_core.sim.registry.get_twin`), so a composed bringup's sim arm
and sim cameras share it. Thread-safe: physics holds `_lock` briefly per call; rendering copies the state and
renders under its own lock, so a slow render never blocks the 200 Hz arm thread.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from eva_core.embodiment import Embodiment

MAX_CATCH_UP_S = 0.1  # advance_to never simulates more than this per call (a stalled caller)


class Twin:
    def __init__(self, emb: Embodiment, scene=None):
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        from eva_core.sim.layout import actuated_joints, arm_layout
        from eva_core.sim.scene import SceneConfig, build_spec, load_urdf, qpos_indices

        self._mujoco = mujoco
        self.emb = emb
        self.scene = scene or SceneConfig()
        spec = load_urdf(emb)
        # the arm layout and the joint of each action dim, computed once and passed down
        self.arms = arm_layout(emb, spec)
        self.joints = actuated_joints(emb)
        self.model = build_spec(emb, self.scene, spec=spec, arms=self.arms).compile()
        self.data = mujoco.MjData(self.model)       # physics state, under _lock
        self._render_data = mujoco.MjData(self.model)
        self._qadr, self._vadr = qpos_indices(self.model, emb, self.joints)
        self._act = np.array([mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_ACTUATOR, n)
                              for n in self.joints])
        self._lock = threading.RLock()
        self._render_lock = threading.Lock()
        self._renderers: dict[tuple[int, int], object] = {}
        self._render_process = None   # render_in_child_process()
        self._clock_origin: float | None = None   # wall time of sim time 0 (advance_to)
        self.driven = False   # an arm backend steps the physics: do not pose it from /joint_states
        self.home = (emb.pos_lower + emb.pos_upper) / 2.0
        self.set_action(self.home)

    # -- description --------------------------------------------------------------------------
    @property
    def cameras(self) -> list[str]:
        return [self.model.camera(i).name for i in range(self.model.ncam)]

    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        with self._lock:
            return float(self.data.time)

    def _check(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.emb.dof,) or not np.all(np.isfinite(a)):
            raise ValueError(f"twin: need {self.emb.dof} finite values, got shape {a.shape}")
        return np.clip(a, self.emb.pos_lower, self.emb.pos_upper)

    # -- plant interface ----------------------------------------------------------------------
    def set_targets(self, action) -> None:
        """Position-servo targets (dof,) in action units, clipped to the limits."""
        q = self.emb.action_to_joint_positions(self._check(action))
        with self._lock:
            self.data.ctrl[self._act] = q

    def targets(self) -> np.ndarray:
        with self._lock:
            return self.emb.joint_positions_to_action(self.data.ctrl[self._act])

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, velocities) in action units."""
        with self._lock:
            q, v = self.data.qpos[self._qadr].copy(), self.data.qvel[self._vadr].copy()
        return self.emb.joint_positions_to_action(q), self.emb.joint_positions_to_action(v)

    def step(self, n: int = 1) -> None:
        if int(n) > 0:
            with self._lock:
                self._mujoco.mj_step(self.model, self.data, nstep=int(n))   # one call: the GIL is handed over once

    def advance_to(self, now: float) -> int:
        """Step until sim time catches up with `now - origin` (origin = first call); returns steps.

        At most MAX_CATCH_UP_S of physics per call, so a caller that stalled does not freeze
        the twin while it replays the gap (the twin then runs behind the clock, as a real
        servo loop that missed ticks)."""
        with self._lock:
            if self._clock_origin is None:
                self._clock_origin = now - self.data.time
            behind = (now - self._clock_origin) - self.data.time
            n = int(min(behind, MAX_CATCH_UP_S) / self.timestep)
            if behind > MAX_CATCH_UP_S:
                self._clock_origin += behind - MAX_CATCH_UP_S
            if n > 0:
                self._mujoco.mj_step(self.model, self.data, nstep=n)
            return max(0, n)

    def reset(self, action=None) -> None:
        """Fresh physics state (time 0, no velocities, no solver warm start), robot at `action`
        (default: home). Free objects go back to their model poses; place them after this."""
        with self._lock:
            self._mujoco.mj_resetData(self.model, self.data)
            self._clock_origin = None
        self.set_action(self.home if action is None else action)

    # -- kinematic pose (old API) -------------------------------------------------------------
    def set_action(self, action) -> None:
        """Teleport the robot to `action` (zero velocity; servo targets follow)."""
        a = self._check(action)
        q = self.emb.action_to_joint_positions(a)
        with self._lock:
            self.data.qpos[self._qadr] = q
            self.data.qvel[self._vadr] = 0.0
            self.data.ctrl[self._act] = q
            self._pose_mimics()
            self._mujoco.mj_forward(self.model, self.data)

    def _pose_mimics(self) -> None:
        """Joint equalities (the URDF's <mimic> fingers): q1 = poly(q2), set exactly."""
        m = self.model
        for e in range(m.neq):
            if m.eq_type[e] == self._mujoco.mjtEq.mjEQ_JOINT and m.eq_obj2id[e] >= 0:
                a1, a2 = m.jnt_qposadr[m.eq_obj1id[e]], m.jnt_qposadr[m.eq_obj2id[e]]
                c = m.eq_data[e, :5]
                x = self.data.qpos[a2]
                self.data.qpos[a1] = c[0] + c[1] * x + c[2] * x**2 + c[3] * x**3 + c[4] * x**4
                self.data.qvel[m.jnt_dofadr[m.eq_obj1id[e]]] = 0.0

    def action(self) -> np.ndarray:
        return self.read()[0]

    # -- objects ------------------------------------------------------------------------------
    def body_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World (position, quaternion wxyz) of a body."""
        with self._lock:
            b = self.data.body(name)
            return b.xpos.copy(), b.xquat.copy()

    def set_body_pose(self, name: str, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
        """Place a free object (zero velocity) or move a fixed marker."""
        m = self._mujoco
        with self._lock:
            bid = m.mj_name2id(self.model, m.mjtObj.mjOBJ_BODY, name)
            if bid < 0:
                raise ValueError(f"twin: no body {name!r}")
            if self.model.body_jntnum[bid] > 0:
                j = self.model.body_jntadr[bid]
                adr, dadr = self.model.jnt_qposadr[j], self.model.jnt_dofadr[j]
                self.data.qpos[adr:adr + 3] = pos
                self.data.qpos[adr + 3:adr + 7] = quat
                self.data.qvel[dadr:dadr + 6] = 0.0
            else:
                self.model.body_pos[bid] = pos
                self.model.body_quat[bid] = quat
            m.mj_forward(self.model, self.data)

    def site_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World (position, 3x3 rotation) of a site (e.g. `tcp_left`)."""
        with self._lock:
            s = self.data.site(name)
            return s.xpos.copy(), s.xmat.reshape(3, 3).copy()

    def contacts(self, body_a: str, body_b: str) -> int:
        """Number of active contacts between two bodies."""
        m = self._mujoco
        with self._lock:
            a = m.mj_name2id(self.model, m.mjtObj.mjOBJ_BODY, body_a)
            b = m.mj_name2id(self.model, m.mjtObj.mjOBJ_BODY, body_b)
            n = 0
            for c in self.data.contact[: self.data.ncon]:
                pair = {self.model.geom_bodyid[c.geom1], self.model.geom_bodyid[c.geom2]}
                n += pair == {a, b}
            return n

    def qpos_snapshot(self) -> np.ndarray:
        with self._lock:
            return self.data.qpos.copy()

    # -- rendering ----------------------------------------------------------------------------
    def render_in_child_process(self) -> None:
        """From now on render in a child process (eva_core.sim.render_process): a render then
        never holds this process's GIL (a control thread of this process keeps its period)."""
        from eva_core.sim.render_process import RenderProcess

        with self._render_lock:
            if self._render_process is None:
                self._render_process = RenderProcess(self.model)

    def render(self, camera: str, height: int = 240, width: int = 320) -> np.ndarray:
        """RGB uint8 (height, width, 3) from a named camera, of the newest physics state."""
        if camera not in self.cameras:
            raise ValueError(f"twin: unknown camera {camera!r}; cameras: {self.cameras}")
        with self._render_lock:
            if self._render_process is not None:
                with self._lock:   # the state a render needs: joints and the fixed bodies' poses
                    state = self.data.qpos.copy(), self.model.body_pos.copy(), self.model.body_quat.copy()
                return self._render_process.render(camera, height, width, *state)
            r = self._renderers.get((height, width))
            if r is None:
                r = self._renderers[(height, width)] = self._mujoco.Renderer(self.model, height, width)
            with self._lock:
                self._render_data.qpos[:] = self.data.qpos
                self._render_data.time = self.data.time
            self._mujoco.mj_kinematics(self.model, self._render_data)
            self._mujoco.mj_camlight(self.model, self._render_data)  # camera poses follow the links
            r.update_scene(self._render_data, camera=camera)
            return r.render().copy()

    def close(self) -> None:
        with self._render_lock:
            for r in self._renderers.values():
                r.close()
            self._renderers.clear()
            if self._render_process is not None:
                self._render_process.close()
                self._render_process = None


class TwinPlant:
    """The twin as the Piper emulator's plant: every `read()` first steps the physics to `clock()`
    (the emulator's 200 Hz loop paces the twin in real time)."""

    def __init__(self, twin: Twin, clock=None):
        import time

        self.twin, self.clock = twin, clock or time.monotonic

    def set_targets(self, action) -> None:
        self.twin.set_targets(action)

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        self.twin.advance_to(self.clock())
        return self.twin.read()
