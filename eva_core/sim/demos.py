"""Scripted demonstrations: execute a task's IK plan in the twin and record an episode.

The plan's waypoints are joined by min-jerk segments and sent to the position servos once per
frame; between frames the physics steps at its fixed timestep, as fast as the CPU allows.
Each frame records what the ALOHA layout holds: the measured joints (qpos, qvel), the servo
effort, the commanded action and every camera, observed *before* that frame's action is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eva_core.data.episode import Episode
from eva_core.sim.tasks import Task, Waypoint
from eva_core.sim.twin import Twin


@dataclass
class DemoResult:
    success: bool
    episode: Episode | None
    seed: int
    steps: int


def min_jerk(a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    s = float(np.clip(s, 0.0, 1.0))
    return a + (b - a) * (10 * s**3 - 15 * s**4 + 6 * s**5)


def action_stream(plan: list[Waypoint], start: np.ndarray, fps: float):
    """Per-frame action targets along the plan."""
    prev = np.asarray(start, float)
    for wp in plan:
        n = max(1, int(round(wp.duration * fps)))
        for k in range(1, n + 1):
            yield min_jerk(prev, wp.action, k / n)
        prev = wp.action


def run_demo(task: Task, twin: Twin, seed: int, fps: float = 25.0, cameras=None, size=(240, 320),
             variant: str = "success", record: bool = True) -> DemoResult:
    """Reset the task from `seed`, run its scripted plan, check success; record if asked."""
    task.reset(twin, seed)
    plan = task.plan(twin, variant)
    steps_per_frame = max(1, int(round(1.0 / (fps * twin.timestep))))
    cams = list(cameras) if cameras is not None else twin.cameras
    emb = twin.emb
    qpos, qvel, effort, action, images = [], [], [], [], {c: [] for c in cams}
    steps = 0
    for target in action_stream(plan, twin.action(), fps):
        if record:
            q, v = twin.read()
            qpos.append(q), qvel.append(v), effort.append(servo_effort(twin))
            action.append(target)
            for c in cams:
                images[c].append(twin.render(c, *size))
        twin.set_targets(target)
        twin.step(steps_per_frame)
        steps += steps_per_frame
    ok = task.success(twin)
    episode = None
    if record:
        episode = Episode(frames=np.stack(images[cams[0]]), qpos=np.array(qpos), action=np.array(action),
                          fps=1.0 / (steps_per_frame * twin.timestep), instruction=task.instruction,
                          camera=cams[0], cameras={c: np.stack(images[c]) for c in cams},
                          qvel=np.array(qvel), effort=np.array(effort),
                          meta={"sim": True, "seed": int(seed), "task": task.name, "success": bool(ok),
                                "embodiment": emb.name})
    return DemoResult(success=bool(ok), episode=episode, seed=int(seed), steps=steps)


def servo_effort(twin: Twin) -> np.ndarray:
    """Actuator forces per action dim (N m for joints, N for the finger)."""
    with twin._lock:
        return twin.data.actuator_force[twin._act].copy()
