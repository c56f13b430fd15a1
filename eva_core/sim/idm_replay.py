"""IDM replay in the twin: decode a ground-truth demonstration video with the IDM and execute the
decoded actions from the same seed (EVA's `idm_replay_success`, 89.52 % on RoboTwin).

A scripted demo (eva_core.sim.demos.run_demo) gives frames observed before each frame's action;
the IDM turns the video back into one action per frame; the replay resets the task from the same
seed and sends those actions to the servos at the video's frame rate, exactly as the demo sent its
own. Nothing but the IDM separates the replay from the demonstration.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from eva_core.embodiment import Embodiment
from eva_core.sim.demos import run_demo
from eva_core.sim.registry import make_task


class _SlowTask:
    """A task whose scripted plan runs `time_scale` times slower (as the demos recorded through
    the ROS graph, see eva_ros/demo/runs.py); everything else is the task's."""

    def __init__(self, task, time_scale: float):
        self._task, self._scale = task, float(time_scale)

    def __getattr__(self, name):
        return getattr(self._task, name)

    def plan(self, twin, variant: str = "success"):
        return [replace(wp, duration=wp.duration * self._scale) for wp in self._task.plan(twin, variant)]


def ground_truth_demos(task_name: str, emb: Embodiment, seeds, fps: float, size: tuple[int, int],
                       time_scale: float = 1.0):
    """[(seed, Episode)] of the successful scripted demos of `task_name` (cam_high only)."""
    task = make_task(task_name, emb)
    twin = task.make_twin()
    slow = _SlowTask(task, time_scale) if time_scale != 1.0 else task
    try:
        out = []
        for seed in seeds:
            res = run_demo(slow, twin, int(seed), fps=fps, cameras=["cam_high"], size=size)
            if res.success:
                out.append((int(seed), res.episode))
        return out
    finally:
        twin.close()


def decode_video(idm, frames: np.ndarray, emb: Embodiment) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, dof) actions, clipped to the embodiment's position limits."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    actions = idm.predict(video).numpy().astype(float)
    return np.clip(actions, emb.pos_lower, emb.pos_upper)


def replay(task_name: str, emb: Embodiment, seed: int, actions: np.ndarray, fps: float) -> bool:
    """Execute one action per frame from the task's `seed`; the task's success check at the end."""
    return replay_end(task_name, emb, seed, actions, fps)[0]


def replay_end(task_name: str, emb: Embodiment, seed: int, actions: np.ndarray, fps: float) -> tuple[bool, dict]:
    """`replay`, and where the task's objects ended up: (success, {object: world xyz})."""
    task = make_task(task_name, emb)
    twin = task.make_twin()
    try:
        task.reset(twin, seed)
        steps = max(1, int(round(1.0 / (fps * twin.timestep))))
        for a in actions:
            twin.set_targets(a)
            twin.step(steps)
        return bool(task.success(twin)), {o.name: np.asarray(twin.body_pose(o.name)[0]) for o in task.objects}
    finally:
        twin.close()


def replay_demos(idm, task_name: str, emb: Embodiment, demos, tried: int | None = None) -> dict:
    """idm_replay_success over `demos` [(seed, Episode)]: each demo's video decoded by the IDM and
    executed from its seed. The demo's own recorded commands are replayed the same way as the
    control (`gt_replay_success`): a replay the ground truth fails is not the IDM's fault.
    `tried`: how many seeds were demonstrated (the scripted plan can fail; those have no video)."""
    results, truth, errors = {}, {}, []
    for seed, ep in demos:
        actions = decode_video(idm, ep.frames, emb)
        errors.append(float(np.abs(actions - ep.action).mean()))
        results[str(seed)] = replay(task_name, emb, seed, actions, ep.fps)
        truth[str(seed)] = replay(task_name, emb, seed, np.asarray(ep.action), ep.fps)
    n, k = len(results), sum(results.values())
    return {"task": task_name, "seeds": sorted(results, key=int), "success": results,
            "idm_replay_success": (k / n) if n else None, "succeeded": k, "replayed": n,
            "attempted": tried if tried else n,
            "gt_replay_success": (sum(truth.values()) / n) if n else None,
            "demo_success": n / tried if tried else None,
            "action_mae": round(float(np.mean(errors)), 4) if errors else None}



def excluded_seeds(seeds, replayed, why: dict) -> dict:
    """{seed: reason} of the held-out `seeds` that were not replayed (their demo failed to run or
    to record): a rate over the rest must not hide them. `why`: {seed: reason} known per seed."""
    done = {str(s) for s in replayed}
    return {str(s): why.get(str(s), "no episode recorded") for s in seeds if str(s) not in done}


def replay_text(r: dict) -> str:
    """The rate beside its count, k/n, and the excluded seeds with their reasons (for reports and
    tables: 2/2 of 3 reads differently from 3/3), or why nothing could be measured."""
    excluded = r.get("excluded") or {}
    tail = (f"; {len(excluded)} of {r.get('attempted', r['replayed'] + len(excluded))} held-out demos excluded: "
            + ", ".join(f"seed {s} ({why})" for s, why in excluded.items())) if excluded else ""
    if not r["replayed"]:
        return f"not measured: 0 of {r.get('attempted', len(excluded))} held-out {r['task']} demos ran{tail}"
    return f"{r['idm_replay_success']:.2f} ({r['succeeded']}/{r['replayed']}{tail})"
