"""The twin tasks by name, and the process-wide twins by name.

`TASKS` is the one list of task names (the sim arm's and sim cameras' `task` option, eva-sim-demos,
the demo evaluation): name -> "module:Class", imported only when a task is made, so reading the
names loads neither MuJoCo nor the task module. A new task: its class in tasks.py, one line here.

`get_twin(name, embodiment, task)` is the process's twin called `name`, built on first use with the
task's objects; the sim arm and the sim cameras of one process share it. Kept here, above twin.py
and tasks.py, so that the twin never imports the tasks (tasks.py imports twin.py).
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Mapping

from eva_core.embodiment import DEFAULT_EMBODIMENT, Embodiment, load_embodiment
from eva_core.sim.twin import Twin

TASKS = {
    "pick_block": "eva_core.sim.tasks:PickBlock",
    "push_block": "eva_core.sim.tasks:PushBlock",
    "lift_bar": "eva_core.sim.tasks:LiftBar",
    "pick_block_narrow": "eva_core.sim.tasks:PickBlockNarrow",
    "push_block_narrow": "eva_core.sim.tasks:PushBlockNarrow",
}


def unknown_task(name: str) -> str:
    """'' for a registered task name, else the problem, with the nearest name as a hint."""
    if name in TASKS:
        return ""
    near = difflib.get_close_matches(str(name), list(TASKS), n=1, cutoff=0.6)
    return f"unknown task {name!r}; " + (f"did you mean {near[0]!r}? " if near else "") + f"tasks: {', '.join(TASKS)}"


def task_class(name: str):
    if name not in TASKS:
        raise ValueError(unknown_task(name))
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def task_params(name: str, params: Mapping | None = None, source: str = "<dict>", section: str = "task_params"):
    """The checked `Params` section of task `name` (ConfigError naming the key on a typo)."""
    return task_class(name).parse_params(params, source, section)


def make_task(name: str, emb: Embodiment, params=None, source: str = "<dict>", section: str = "task_params"):
    """Task `name` on `emb`, its parameters (a mapping or its Params) over the task's defaults."""
    return task_class(name)(emb, params, name=name, source=source, section=section)


_TWINS: dict[str, Twin] = {}
_TWINS_LOCK = threading.Lock()


def get_twin(name: str = "default", embodiment: str | Embodiment = DEFAULT_EMBODIMENT, task: str | None = None) -> Twin:
    """The process-wide twin called `name`, built on first use (with `task`'s objects, if given).
    Asking an existing twin for another task is an error (the arm and cameras must agree)."""
    with _TWINS_LOCK:
        twin = _TWINS.get(name)
        if twin is None:
            emb = embodiment if isinstance(embodiment, Embodiment) else load_embodiment(embodiment)
            twin = make_task(task, emb).make_twin() if task else Twin(emb)
            twin.task_name = task or ""
            _TWINS[name] = twin
        elif task and task != twin.task_name:
            raise ValueError(f"twin {name!r} was built with task {twin.task_name!r}, not {task!r}; "
                             f"give the sim arm and the sim cameras the same task")
        return twin


def reset_twins() -> None:
    with _TWINS_LOCK:
        for t in _TWINS.values():
            t.close()
        _TWINS.clear()
