"""MuJoCo physics twin of the embodiment: scene building, servos and contacts, tasks with success
checks, IK-scripted demonstrations (mink), and the Piper CAN emulator's plant."""

from eva_core.sim.twin import Twin, TwinPlant, get_twin, reset_twins

__all__ = ["Twin", "TwinPlant", "get_twin", "reset_twins"]
