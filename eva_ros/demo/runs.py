"""Runs of the sim graph for the toy EVA pipeline (`tools/train_demo.py`, `eva-demo`).

Each run is one `eva-bringup` child process on a params file made of config/base.yaml, an overlay
(config/sim.yaml or config/demo.yaml) and per-run overrides (the twin task and its seed), so every
episode starts from a fresh twin placed by its seed. This process joins the same ROS domain with a
small probe node (loopback discovery only; the graph harness eva_ros.testing):

- `record_demo`: the camera + controller graph and `eva-record`; the probe publishes the task's
  instruction and its scripted IK plan as one JointTrajectory, which the controller executes on the
  twin's arms. The bag therefore holds what the robot's path records: the twin camera's images, the
  measured /joint_states and the controller's commands.
- `closed_loop`: the full graph (camera -> planner -> idm_action -> controller -> twin arms) for a
  fixed time, with a RecorderNode keeping the camera view, the chunks, the commands, the scores and
  the trajectories.

The twin's success check is read from the bringup's report JSON (`twin_task_success`): the sim
arm's report in its controller's `arm` entry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from eva_ros.testing import BIN, Child, Probe, use_domain, wait_for, write_params
from eva_ros.testing import ros_env as _graph_env

EPISODE_SEED_RE = re.compile(r"_seed(-?\d+)_")
# what a demonstration's bag holds: the robot path's camera, measured joints and commands
RECORD_TOPICS = ["joint_states", "cam_high/color/image_raw", "eva/instruction", "eva/controller/command"]


def ros_env() -> dict:
    """The environment of the graphs: this process's domain (eva_ros.testing.use_domain), loopback."""
    return _graph_env(use_domain())


def twin_task_success(report: dict | None) -> bool | None:
    """The twin task's success check in an eva-bringup report (the `twin_task` of a controller's
    `arm` report); None without a report, a twin task or a check."""
    for node in (report or {}).get("nodes_report", {}).values():
        task = (node.get("arm") or {}).get("twin_task") if isinstance(node, dict) else None
        if task is not None:
            return task.get("success")
    return None


def read_report(path: Path) -> dict | None:
    """The eva-bringup report at `path`; None if it was not written (the graph died)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def bringup(params: Path, log: Path, env: dict, duration: float | None = None, report: Path | None = None,
            nodes: list[str] | None = None) -> Child:
    argv = [str(BIN / "eva-bringup"), "--quiet", "--config", str(params)]
    if duration is not None:
        argv += ["--duration", str(duration)]
    if report is not None:
        argv += ["--report", str(report)]
    if nodes:
        argv += ["--nodes", ",".join(nodes)]
    return Child(argv, log, env)


# eva-demo's process layouts: every node in one eva-bringup, or as on the robot: the model nodes in
# one process (the GPU host's), camera + controller in another (the robot PC's)
LAYOUTS = {"composed": [None], "split": [["planner", "idm_action"], ["camera", "controller"]]}


def run_graph(params: Path, work: Path, name: str, env: dict, duration: float, layout: str | list = "composed",
              timeout_extra: float = 240.0):
    """One run of the graph in `layout` (a name of LAYOUTS, or a list of node-kind lists, one per
    process; None: the params' own list): the first process runs `duration` s once built, the others
    until it has ended (SIGINT: a clean stop, report written). Returns (exit codes, the merged
    report or None, the first process's Child)."""
    from eva_ros.bringup import merge_reports

    groups = LAYOUTS[layout] if isinstance(layout, str) else layout
    stems = [name] if len(groups) == 1 else [f"{name}_{i}" for i in range(len(groups))]
    reports = [work / "reports" / f"{stem}.json" for stem in stems]
    reports[0].parent.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    graphs = []
    try:
        for i, (nodes, report) in enumerate(zip(groups, reports)):
            log = work / "logs" / f"{stems[i]}.log"
            graphs.append(bringup(params, log, env, duration=duration if i == 0 else None, report=report, nodes=nodes))
        graphs[0].wait(duration + timeout_extra)
    finally:
        codes = [g.stop(60.0) for g in graphs]
    results = [read_report(r) for r in reports]
    merged = None if any(r is None for r in results) else merge_reports(*results)
    return codes, merged, graphs[0]


class RecordProbe(Probe):
    """The probe of `record_demo`: the measured joints and camera frames, the instruction and
    trajectory publishers."""

    def __init__(self, emb, domain_id: int):
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        from eva_ros import names, qos

        super().__init__(domain_id, f"eva_demo_probe_{os.getpid()}")
        self.emb = emb
        self.camera_topic = names.camera_topic("cam_high")
        self.subscribe(names.JOINT_STATES, JointState, qos.STATE, keep=10)
        self.subscribe(self.camera_topic, Image, qos.IMAGE, keep=1)
        self.instruction = self.publisher(names.INSTRUCTION, String, qos.LATCHED)
        self.trajectory = self.publisher(names.PLAN_TRAJECTORY, JointTrajectory, qos.PLAN)

    def joints(self) -> list:
        from eva_ros import names

        return [np.array(m.position, float) for m in self.received(names.JOINT_STATES)]

    def frames(self) -> int:
        return self.count(self.camera_topic)


def scripted_trajectory(emb, task_name: str, seed: int, start: np.ndarray, rate_hz: float,
                        time_scale: float = 1.0, dwell: float = 0.0) -> tuple[np.ndarray, str]:
    """The task's IK plan from `seed` (planned on a twin of this process, placed as the graph's
    twin is) as actions at the control rate, starting from `start`; and the instruction.
    `time_scale` > 1 slows every segment: on a loaded CPU the graph's twin can run behind the
    wall clock (Twin.advance_to), and the arm must still reach the grasp before the gripper closes;
    `dwell` s of holding after every waypoint let a lagging arm arrive before the next one."""
    from dataclasses import replace

    from eva_core.sim.demos import action_stream
    from eva_core.sim.registry import make_task

    task = make_task(task_name, emb)
    twin = task.make_twin()
    try:
        task.reset(twin, seed)
        plan = task.plan(twin)
    finally:
        twin.close()
    plan = [w for wp in plan for w in (replace(wp, duration=wp.duration * time_scale), replace(wp, duration=dwell))
            if w.duration > 0]
    actions = np.stack(list(action_stream(plan, start, rate_hz)))
    return actions, task.instruction


def record_demo(probe: RecordProbe, overlay: Path, work: Path, task: str, seed: int, record_topics: list[str],
                camera: dict, env: dict, time_scale: float = 1.0, dwell: float = 0.0,
                controller: dict | None = None, timeout: float = 240.0) -> dict:
    """One scripted demonstration through the graph, recorded by eva-record into work/bags/<task>_<seed>."""
    from std_msgs.msg import String

    from eva_ros.conversions import trajectory_to_msg

    emb = probe.emb
    bags = work / "bags" / f"{task}_{seed}"
    params = write_params(work / "params" / f"record_{task}_{seed}.yaml", overlay, {
        "eva_bringup": {"nodes": ["camera", "controller"]},
        # the physics sim arm moves the twin: the camera must not also pose it from /joint_states
        "camera": {**camera, "pose_from_joint_states": False,
                   "source_options": {**camera.get("source_options", {}), "task": task}},
        "controller": {**(controller or {}), "arm_backend": "sim",
                       "arm": {"task": task, "seed": int(seed), "physics": True}},   # contacts: a real grasp
        "eva_record": {"out_dir": str(bags), "topics": record_topics, "episode_prefix": f"{task}_seed{seed}",
                       "segment_seconds": 2.0}})
    probe.reset()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = work / "reports" / f"record_{task}_{seed}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    graph = bringup(params, logs / f"record_{task}_{seed}.log", env, report=report)
    rec = None
    try:
        wait_for(lambda: probe.joints() and probe.frames() > 2, timeout, 0.1, "the camera+controller graph", graph)
        rec = Child([str(BIN / "eva-record"), "--ros-args", "--params-file", str(params)],
                    logs / f"eva_record_{task}_{seed}.log", env)
        cam = probe.camera_topic
        wait_for(lambda: probe.node.count_subscribers(cam) >= 2 and
                 probe.node.count_subscribers("joint_states") >= 2, timeout, 0.1, "eva-record subscriptions", rec)
        start = emb.joint_positions_to_action(probe.joints()[-1])
        rate = float((controller or {}).get("control_rate_hz", 200.0))
        actions, instruction = scripted_trajectory(emb, task, seed, start, rate, time_scale, dwell)
        probe.instruction.publish(String(data=instruction))
        wait_for(lambda: probe.trajectory.get_subscription_count() > 0, timeout, 0.1, "controller subscription", graph)
        time.sleep(1.0)   # a second of the arm at rest before it moves
        t0 = time.time() + 0.2
        probe.trajectory.publish(trajectory_to_msg(emb.joint_names, emb.action_to_joint_positions(actions),
                                                   1.0 / rate, t0, f"eva_traj:id={seed + 1}"))
        time.sleep(max(0.0, t0 + len(actions) / rate + 1.5 - time.time()))   # and the lifted/pushed result
    finally:
        rc_rec = rec.stop(60.0) if rec is not None else None
        graph.stop(60.0)
    episodes = sorted(p for p in bags.iterdir() if p.is_dir()) if bags.exists() else []
    return {"task": task, "seed": int(seed), "success": twin_task_success(read_report(report)), "bag": str(episodes[-1]) if episodes else None,
            "recorder_exit": rc_rec, "seconds": round(len(actions) / rate, 2)}


def sim_camera(cam: dict) -> dict:
    """The camera node's params for the twin's cam_high at a pipeline's {height, width, fps}."""
    return {"source": "sim", "fps": float(cam["fps"]),
            "source_options": {"camera": "cam_high", "height": int(cam["height"]), "width": int(cam["width"])}}


RETRY_TIME_SCALE = 1.5   # a failed demo is recorded once more, this much slower


def record_with_retry(record, work: Path, task: str, seed: int, time_scale: float, say=print) -> dict:
    """`record(work, task, seed, time_scale)` -> a record dict; a failed recording (the twin's task
    not done, or no bag: on a loaded machine the arm lags its plan) is retried once, RETRY_TIME_SCALE
    times slower, into work/retry (the first attempt's bag and logs stay for diagnosis). The record
    says whether it was retried (`retried`, `time_scale`, `first_attempt`)."""
    t = time.time()
    r = {**record(work, task, seed, time_scale), "retried": False, "time_scale": time_scale}
    if not (r["success"] and r["bag"]):
        slower = round(time_scale * RETRY_TIME_SCALE, 6)
        first = "failed" if not r["success"] else "recorded no bag"
        say(f"demo {task} seed {seed}: {first}; retrying once with demo_time_scale {slower}")
        r = {**record(work / "retry", task, seed, slower), "retried": True, "time_scale": slower,
             "first_attempt": {k: r[k] for k in ("success", "bag", "recorder_exit")}}
    again = f", retried at demo_time_scale {r['time_scale']}" if r["retried"] else ""
    say(f"demo {task} seed {seed}: success {r['success']} ({time.time() - t:.0f} s{again})")
    return r


def record_demos(tasks, seeds, work: Path, cam: dict, time_scale: float = 1.0, say=print, record=None) -> list[dict]:
    """`record_demo` for every task and seed (config/sim.yaml graphs, one at a time) into work/bags,
    each failed one retried once slower (`record_with_retry`). `record(work, task, seed, time_scale)`
    replaces the graph recording (a seam for tests)."""
    from eva_core.embodiment import load_embodiment
    from eva_core.paths import config_path

    probe = None
    if record is None:
        env = ros_env()
        probe = RecordProbe(load_embodiment(), int(env["ROS_DOMAIN_ID"]))   # joins the graphs' domain

        def record(where, task, seed, scale):
            return record_demo(probe, config_path("sim"), where, task, int(seed), RECORD_TOPICS, sim_camera(cam),
                               env, time_scale=scale)
    records = []
    try:
        for task in tasks:
            for seed in seeds:
                records.append(record_with_retry(record, work, task, int(seed), time_scale, say))
    finally:
        if probe is not None:
            probe.close()
    return records


def bags_to_episodes(records: list[dict], out: Path, log: Path) -> dict:
    """eva-bag-to-episodes on the successful records' bags into `out` (its output is in `log`);
    {(task, seed): episode file}. A failed conversion raises, naming the log."""
    ok = [r for r in records if r["success"] and r["bag"]]
    if not ok:
        return {}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        rc = subprocess.run([str(BIN / "eva-bag-to-episodes"), *(r["bag"] for r in ok), "--out", str(out)],
                            stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"eva-bag-to-episodes exited {rc}; see {log}")
    return {(r["task"], r["seed"]): out / f"{Path(r['bag']).name}.hdf5" for r in ok}


def episode_seed(path: Path) -> int:
    """The seed in a recorded episode's file name (eva-record's prefix <task>_seed<N>)."""
    m = EPISODE_SEED_RE.search(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: no _seed<N>_ in the file name (not a record_demo episode)")
    return int(m.group(1))


def closed_loop(overlay: Path, work: Path, name: str, overrides: dict, duration: float, env: dict,
                emb, camera_topic: str, timeout_extra: float = 240.0, layout: str = "composed") -> dict:
    """One closed-loop episode of the full graph for `duration` s; returns the bringup summary, the
    twin's success and what the recorder saw (frames, chunks, commands, scores, trajectory spans)."""
    from rclpy.executors import SingleThreadedExecutor

    from eva_ros.demo.recorder import RecorderNode

    params = write_params(work / "params" / f"{name}.yaml", overlay, overrides)
    rec = RecorderNode(emb, camera_topic=camera_topic, node_name=f"eva_recorder_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(rec)
    import threading

    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        codes, result, graph = run_graph(params, work, name, env, duration, layout, timeout_extra)
    finally:
        time.sleep(0.3)
        executor.shutdown(timeout_sec=2.0)
    rc = next((c for c in codes if c != 0), 0)
    summary = result["summary"] if result else None
    data = rec.snapshot()
    rec.destroy_node()
    return {"name": name, "exit": rc, "success": twin_task_success(result), "summary": summary, "recording": data,
            "log": str(graph.log)}
