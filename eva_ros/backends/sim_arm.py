"""`SimArm`: the loopback arm whose state also poses the MuJoCo twin (so sim cameras see it)."""

from __future__ import annotations

import time

from eva_core.sim import get_twin
from eva_ros.backends.arm import LoopbackArm


class SimArm(LoopbackArm):
    """Ideal servo (as LoopbackArm) that mirrors every state update into the twin `twin`."""

    def __init__(self, embodiment, initial_positions=None, twin: str = "default", clock=time.time):
        super().__init__(embodiment, initial_positions=initial_positions, clock=clock)
        self.twin = get_twin(twin, embodiment)
        self.twin.set_action(self._pos)

    def _advance(self, now: float) -> None:
        super()._advance(now)
        self.twin.set_action(self._pos)
