"""A kinematic MuJoCo twin: joint positions in, rendered camera images out.

The arm backend writes the joint state (`set_action`), camera sources render it (`render`). One
twin per name and process (`get_twin`), so a composed bringup's sim arm and sim cameras share it.
Dynamics, contacts and tasks are not modelled yet: the twin shows what the arms do.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from eva_core.embodiment import Embodiment, load_embodiment


class Twin:
    def __init__(self, emb: Embodiment):
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        from eva_core.sim.scene import build_spec, qpos_indices

        self._mujoco = mujoco
        self.emb = emb
        self.model = build_spec(emb).compile()
        self.data = mujoco.MjData(self.model)  # owned by render(): posed from _qpos there
        self._adr, self._mimic_adr, self._mimic_dim = qpos_indices(self.model, emb)
        self._qpos = self.data.qpos.copy()
        # set_action only swaps a small array under _lock (the 200 Hz arm thread calls it);
        # rendering (slow) holds its own lock and never blocks the arm.
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._renderers: dict[tuple[int, int], object] = {}
        self.set_action((emb.pos_lower + emb.pos_upper) / 2.0)

    @property
    def cameras(self) -> list[str]:
        return [self.model.camera(i).name for i in range(self.model.ncam)]

    def set_action(self, action) -> None:
        """Pose the robot from a (dof,) action vector (rad; grippers normalised)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.emb.dof,) or not np.all(np.isfinite(a)):
            raise ValueError(f"twin: need {self.emb.dof} finite values, got shape {a.shape}")
        q = self.emb.action_to_joint_positions(np.clip(a, self.emb.pos_lower, self.emb.pos_upper))
        qpos = self._qpos.copy()
        qpos[self._adr] = q
        qpos[self._mimic_adr] = -q[self._mimic_dim]
        with self._lock:
            self._qpos = qpos

    def action(self) -> np.ndarray:
        with self._lock:
            q = self._qpos[self._adr].copy()
        return self.emb.joint_positions_to_action(q)

    def _pose(self) -> None:
        """Copy the newest joint state into the render data and update link and camera poses."""
        with self._lock:
            self.data.qpos[:] = self._qpos
        self._mujoco.mj_kinematics(self.model, self.data)
        self._mujoco.mj_camlight(self.model, self.data)  # camera poses follow the links

    def render(self, camera: str, height: int = 240, width: int = 320) -> np.ndarray:
        """RGB uint8 (height, width, 3) from a named camera."""
        if camera not in self.cameras:
            raise ValueError(f"twin: unknown camera {camera!r}; cameras: {self.cameras}")
        with self._render_lock:
            r = self._renderers.get((height, width))
            if r is None:
                r = self._renderers[(height, width)] = self._mujoco.Renderer(self.model, height, width)
            self._pose()
            r.update_scene(self.data, camera=camera)
            return r.render().copy()

    def close(self) -> None:
        with self._render_lock:
            for r in self._renderers.values():
                r.close()
            self._renderers.clear()


_TWINS: dict[str, Twin] = {}
_TWINS_LOCK = threading.Lock()


def get_twin(name: str = "default", embodiment: str | Embodiment = "cobot_magic") -> Twin:
    """The process-wide twin called `name`, built on first use."""
    with _TWINS_LOCK:
        twin = _TWINS.get(name)
        if twin is None:
            emb = embodiment if isinstance(embodiment, Embodiment) else load_embodiment(embodiment)
            twin = _TWINS[name] = Twin(emb)
        return twin


def reset_twins() -> None:
    with _TWINS_LOCK:
        for t in _TWINS.values():
            t.close()
        _TWINS.clear()
