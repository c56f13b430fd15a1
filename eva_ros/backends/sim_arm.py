"""`SimArm`: the loopback arm whose state also poses the MuJoCo twin (so sim cameras see it)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from eva_core.config import param
from eva_core.sim import get_twin
from eva_ros.backends.arm import LoopbackArm


class SimArm(LoopbackArm):
    """Ideal servo (as LoopbackArm) that mirrors every state update into the twin `twin`."""

    @dataclass
    class Options(LoopbackArm.Options):
        twin: str = param("default", "name of the process-wide twin this arm poses")

    def __init__(self, embodiment, options: "SimArm.Options | dict | None" = None, *, clock=time.time):
        super().__init__(embodiment, options, clock=clock)
        self.twin = get_twin(self.options.twin, embodiment)
        self.twin.set_action(self._pos)

    def _advance(self, now: float) -> None:
        super()._advance(now)
        self.twin.set_action(self._pos)
