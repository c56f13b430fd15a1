"""MuJoCo physics twin of the embodiment: scene building, servos and contacts, tasks with success
checks, IK-scripted demonstrations (mink), and the Piper CAN emulator's plant."""

import warnings

from eva_core.sim.gl import select_gl_backend

try:   # before anything here imports mujoco: it reads MUJOCO_GL once, at import
    select_gl_backend()
except RuntimeError as exc:   # physics still works; rendering would fail: say what to install
    warnings.warn(f"eva_core.sim: {exc}", RuntimeWarning, stacklevel=2)

from eva_core.sim.registry import TASKS, get_twin, make_task, reset_twins  # noqa: E402
from eva_core.sim.twin import Twin, TwinPlant  # noqa: E402

__all__ = ["TASKS", "Twin", "TwinPlant", "get_twin", "make_task", "reset_twins"]
