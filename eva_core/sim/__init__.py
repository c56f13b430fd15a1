"""MuJoCo digital twin of the embodiment (kinematic for now): scene building and rendering."""

from eva_core.sim.twin import Twin, get_twin, reset_twins

__all__ = ["Twin", "get_twin", "reset_twins"]
