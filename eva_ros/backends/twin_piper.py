"""`TwinPiperArm` (`twin_piper`): the real Piper backend driving the physics twin over CAN.

In one process it starts `eva_core.sim.piper_emulator.PiperEmulator` on python-can `virtual`
channels with the twin as its plant (`TwinPlant`), and is otherwise exactly `PiperArm` on those
channels: enable, joint/gripper commands, feedback and faults go through the same CAN frames as
on the robot, and the emulator's servo targets move the simulated arms (contacts, held objects).
Sim cameras in the same process render the same twin (`twin` option).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from eva_core.config import param
from eva_core.piper.layout import piper_arms
from eva_core.sim import TwinPlant, get_twin
from eva_core.sim.piper_emulator import PiperEmulator
from eva_ros.backends.piper import PiperArm
from eva_ros.backends.sim_arm import TwinTask, task_report


class TwinPiperArm(PiperArm):
    @dataclass
    class Options(PiperArm.Options):
        can_interface: str = param("virtual", "python-can interface of the emulated buses (virtual only)",
                                   choices=("virtual",))
        twin: str = param("default", "name of the process-wide twin the emulated arms move")
        task: str = param("", "twin task whose objects the twin holds ('' for none; as the sim cameras')")
        task_params: dict = param({}, "parameters of the task (the keys of its Params in eva_core/sim/tasks.py)")
        seed: int | None = param(None, "with a task: place its objects from this seed at start-up (and log "
                                       "the task's success check at close), as the sim arm does")

        def validate(self):
            super().validate()
            TwinTask.check_options(self)

    def __init__(self, embodiment, options: "TwinPiperArm.Options | dict | None" = None):
        opt = options if isinstance(options, TwinPiperArm.Options) else TwinPiperArm.Options.from_dict(options)
        self.twin = get_twin(opt.twin, embodiment, task=opt.task or None)
        self.twin.driven = True   # sim cameras of this process stop posing it from /joint_states
        self.task = TwinTask.place(self.twin, opt.task, opt.seed, embodiment, opt.task_params)
        arms = piper_arms(embodiment)
        if all(a.name in ("left", "right") for a in arms):   # channels private to this twin
            channels = {a.name: f"{opt.twin}_{a.can}" for a in arms}
            opt = dataclasses.replace(opt, **{f"can_{n}": ch for n, ch in channels.items()})
        else:                                                # PiperArm takes other arms' channels from the table
            channels = {a.name: a.can for a in arms}
        self.emulator = PiperEmulator(embodiment, channels=channels, plant=TwinPlant(self.twin),
                                      interface="virtual")
        super().__init__(embodiment, opt)

    def connect(self) -> None:
        self.emulator.start()
        try:
            super().connect()
        except Exception:
            self.emulator.stop()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.emulator.stop()
            if self.task is not None:
                self.task.check()

    def report(self) -> dict:
        return task_report(self.task)
