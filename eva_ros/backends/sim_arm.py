"""`SimArm`: arms of the MuJoCo physics twin (the sim cameras of the same process see them).

With `physics: true` each command becomes the reference of LoopbackArm's ideal,
rate-limited servo; the twin's position servos track that reference, the physics steps to the
arm's clock (`Twin.advance_to`), and the state read back is what the simulated joints did
(contacts, a held block, servo lag). With `physics: false` (the default) the twin is only posed
(kinematic), as config/sim.yaml's closed-loop demo has always run; see docs/twin_and_data.md for
the latency measured in both modes.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

from eva_core.config import Section, param
from eva_core.sim.registry import get_twin, make_task, task_params, unknown_task
from eva_ros.backends.arm import ArmState, LoopbackArm


class TwinTask:
    """A twin task whose objects were placed from `seed` at start-up; `check()` runs its success
    check (at close), keeps it in `result` (the controller's report: eva-demo reads it from the
    eva-bringup report JSON) and logs it on stderr."""

    def __init__(self, task, twin, seed: int):
        self.task, self.twin, self.seed = task, twin, int(seed)
        self.result = {"task": task.name, "seed": self.seed, "success": None}   # None: not checked yet

    @classmethod
    def place(cls, twin, task_name: str, seed: int | None, embodiment, params=None) -> "TwinTask | None":
        if not task_name or seed is None:
            return None
        task = make_task(task_name, embodiment, params)
        task.reset(twin, seed)
        return cls(task, twin, seed)

    @staticmethod
    def check_options(opts: Section) -> None:
        """An arm's `task` is a registered task and its `task_params` are the task's `Params`:
        a typo is a ConfigError naming the key (`<section>.task_params` for a parameter)."""
        if opts.task and (problem := unknown_task(opts.task)):
            opts.error("task", problem)
        if opts.task_params and not opts.task:
            opts.error("task_params", "parameters without a task")
        if opts.task:
            section = getattr(opts, "_section", "")
            task_params(opts.task, opts.task_params, source=getattr(opts, "_source", "") or "<dict>",
                        section=f"{section}.task_params" if section else "task_params")

    def check(self) -> None:
        self.result["success"] = bool(self.task.success(self.twin))
        print(f"sim arm: twin task {self.task.name} seed {self.seed}: success {self.result['success']}",
              file=sys.stderr, flush=True)


def task_report(task: TwinTask | None) -> dict:
    """An arm backend's report with a twin task: {"twin_task": {task, seed, success}} (success
    None before close); {} without one."""
    return {"twin_task": dict(task.result)} if task is not None else {}


class SimArm(LoopbackArm):
    """Simulated arms of the process-wide twin `twin` (optionally with a task's objects)."""

    @dataclass
    class Options(LoopbackArm.Options):
        twin: str = param("default", "name of the process-wide twin these arms drive")
        task: str = param("", "twin task whose objects the twin holds (a name of eva_core/sim/registry.py; "
                              "'' for none). The first user of a twin name builds it")
        task_params: dict = param({}, "parameters of the task (the keys of its Params in eva_core/sim/tasks.py)")
        physics: bool = param(False, "step the physics (servos, contacts, held objects); false: pose the twin "
                                     "kinematically (what config/sim.yaml's closed-loop demo uses)")
        seed: int | None = param(None, "with a task: place its objects from this seed at start-up (and log "
                                       "the task's success check at close)")

        def validate(self):
            super().validate()
            TwinTask.check_options(self)

    def __init__(self, embodiment, options: "SimArm.Options | dict | None" = None, *, clock=time.time):
        super().__init__(embodiment, options, clock=clock)
        o = self.options
        self.twin = get_twin(o.twin, embodiment, task=o.task or None)
        self.task = TwinTask.place(self.twin, o.task, o.seed, embodiment, o.task_params)
        self.twin.set_action(self._pos)
        self.twin.driven = self.options.physics   # sim cameras of this process stop posing it

    def _advance(self, now: float) -> None:
        super()._advance(now)   # self._pos: the rate-limited reference
        if self.options.physics:
            self.twin.set_targets(self._pos)
            self.twin.advance_to(now)
        else:
            self.twin.set_action(self._pos)

    def close(self) -> None:
        super().close()
        if self.task is not None:
            self.task.check()

    def report(self) -> dict:
        return task_report(self.task)

    def read_state(self) -> ArmState | None:
        state = super().read_state()
        if state is None or not self.options.physics or self._feedback_lost:
            return state
        q, v = self.twin.read()
        return dataclasses.replace(state, positions=q, velocities=v)
