"""MuJoCo physics twin of the embodiment: scene building, servos and contacts, tasks with success
checks, IK-scripted demonstrations (mink), and the Piper CAN emulator's plant."""

from eva_core.sim.registry import TASKS, get_twin, make_task, reset_twins
from eva_core.sim.twin import Twin, TwinPlant

__all__ = ["TASKS", "Twin", "TwinPlant", "get_twin", "make_task", "reset_twins"]
