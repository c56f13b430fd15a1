#!/usr/bin/env python3
"""Where camera-to-plan goes in the closed loop, per process layout and executor, side by side.

The closed loop of config/demo.yaml on the trained toy checkpoints (`make train-demo`'s
checkpoints/demo, GRPO variant, one task, as eva-demo runs it), or with `--untrained` the
plumbing loop of config/sim.yaml (tiny random models). Each variant is one `eva-bringup` run of
`--duration` s; the variants are interleaved `--repeats` times:

- layouts: `composed` (every node in one process, how eva-bringup and eva-demo run it today),
  `split` (planner + IDM in one process, camera + controller in another, as on the robot:
  `eva-bringup --nodes`, the two reports merged), `composed_mp` / `split_mp` (the same with
  planner.model_process: the world model in its own child process, eva_core.model_process),
  `robot_only` (camera + controller, no model: the controller's own baseline);
- executors (eva_bringup.executor): multi_threaded, single_per_node, events.

Before the graphs, the world model alone in a child process (`generate_alone_ms`: what the
graph would pass on if it added nothing). Per variant it prints camera-to-plan p50, the world
model's own generate p50 in the graph and the difference (what the graph adds), the breakdown of
eva_core.latency_breakdown (p50 ms per stage), the controller's 200 Hz period p99 (the
controller's own tick stamps), and the arm's idle fraction (trajectory spans seen on
/eva/plan/trajectory, as eva-demo's report). Ratios are to the first variant (composed/multi_threaded by default).

    python bench/graph_latency.py                       # trained checkpoints/demo, 30 s per variant
    python bench/graph_latency.py --untrained --duration 20 --executors multi_threaded
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LAYOUTS = ("composed", "composed_mp", "split", "split_mp", "robot_only")   # eva_ros.demo.runs.LAYOUTS (+ _mp)
MODEL_PROCESS = ("composed_mp", "split_mp")   # planner.model_process: the model in its own child process
EXECUTORS = ("multi_threaded", "single_per_node", "events")
STAGES = ("frame_age", "worker_wait", "generate", "executor", "generate_wait", "encode", "denoise", "decode",
          "transport", "idm", "reward", "safety", "idm_total")


# ---- the world model alone (child process) -------------------------------------------------
def role_generate(args) -> None:
    import yaml

    from eva_core.embodiment import load_embodiment
    from eva_core.world_model.build import build_world_model
    from eva_ros.node_config import PlannerNodeConfig

    from eva_ros.runtime import set_torch_threads

    planner = yaml.safe_load(Path(args.params).read_text())["planner"]["ros__parameters"]
    cfg = PlannerNodeConfig.from_dict(planner, source=args.params, section="planner")
    set_torch_threads(cfg.torch_threads)
    wm = build_world_model(cfg.world_model, load_embodiment(cfg.embodiment))
    img = np.random.default_rng(0).integers(0, 255, (wm.height, wm.width, 3), dtype=np.uint8)
    totals, walls = [], []
    for i in range(args.count + 2):
        t0 = time.perf_counter()
        wm.generate(img, "pick up the red block", seed=i)
        if i >= 2:   # warm-up
            walls.append(time.perf_counter() - t0)
            totals.append(wm.last_timing.get("total", walls[-1]))
    print(json.dumps({"total_s": totals, "wall_s": walls}))


def generate_alone(params: Path, count: int, env: dict) -> dict:
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--role", "generate", "--params", str(params), "--count",
                          str(count)], env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"the world model alone failed:\n{out.stderr[-3000:]}")
    x = np.asarray(json.loads(out.stdout.strip().splitlines()[-1])["total_s"]) * 1e3
    return {"count": int(x.size), "p50_ms": round(float(np.percentile(x, 50)), 2),
            "p90_ms": round(float(np.percentile(x, 90)), 2)}


# ---- params ----------------------------------------------------------------------------------
def write_variant_params(path: Path, untrained: bool, ckpt: Path, task: str, seed: int, executor: str,
                         model_process: bool = False, js_every: int = 1, variant: str = "deployed") -> Path:
    from eva_ros.testing import write_params

    over = {"eva_bringup": {"executor": executor}, "planner": {"model_process": model_process},
            "controller": {"joint_states_every": js_every}}
    if untrained:
        return write_params(path, "sim.yaml", over)
    from eva_core.embodiment import load_embodiment
    from eva_core.sim.registry import make_task
    from eva_ros.demo.evaluation import load_manifest, variants

    cfg = load_manifest(ckpt)["config"]
    cam = cfg["pipeline"]["camera"]
    found = variants(ckpt.resolve(), cfg["model"], True, 1)
    wm = found[next(iter(found)) if variant == "deployed" else variant]
    over.update({   # what eva-demo gives one episode of the variant (eva_ros/demo/evaluation.py)
        "camera": {"source_options": {"height": int(cam["height"]), "width": int(cam["width"]), "task": task}},
        "planner": {"instruction": make_task(task, load_embodiment()).instruction, "seed": seed, "world_model": wm,
                    "model_process": model_process},
        "idm_action": {"idm": {"checkpoint": str(ckpt.resolve() / "idm")}},
        "controller": {"arm": {"task": task, "seed": seed}, "joint_states_every": js_every}})
    return write_params(path, "demo.yaml", over)


# ---- one variant -----------------------------------------------------------------------------
class Spans:
    """Trajectory spans [header.stamp, last point] on /eva/plan/trajectory (the arm's busy time)."""

    def __init__(self, domain: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from trajectory_msgs.msg import JointTrajectory

        from eva_ros import names, qos

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(f"bench_spans_{os.getpid()}", context=self.context)
        self.spans, self._lock = [], threading.Lock()
        self.node.create_subscription(JointTrajectory, names.PLAN_TRAJECTORY, self._on, qos.PLAN)
        from eva_ros.runtime import SpinThread

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = SpinThread(self.executor, name="bench-spans").start()

    def _on(self, msg) -> None:
        from eva_ros.conversions import from_time_msg, trajectory_end

        if msg.points:
            with self._lock:
                self.spans.append((from_time_msg(msg.header.stamp), trajectory_end(msg), msg.header.frame_id))

    def close(self) -> list:
        self.spinner.stop()
        self.node.destroy_node()
        self.context.try_shutdown()
        with self._lock:
            return list(self.spans)


def run_variant(name: str, layout: str, params: Path, duration: float, work: Path, domain: int) -> dict:
    from eva_ros.demo.evaluation import idle_time
    from eva_ros.demo.runs import run_graph
    from eva_ros.testing import ros_env

    spans = Spans(domain)
    try:   # eva-demo's runner: the model's process runs `duration` s, the robot's until it has ended
        groups = [["camera", "controller"]] if layout == "robot_only" else layout.removesuffix("_mp")
        codes, merged, _ = run_graph(params, work, name, ros_env(domain), duration, groups, 600.0)
    finally:
        seen = spans.close()
    if merged is None:
        raise RuntimeError(f"{name}: a bringup wrote no report (exit {codes}); see {work}/logs/{name}*.log")
    s = merged["summary"]
    ctl = next(r for r in merged["nodes_report"].values() if r.get("kind") == "controller")
    cam_to_plan = s["latency_ms"]["camera_to_plan"]
    b = s["latency_breakdown"]
    gen = b.get("generate", {})
    out = {"variant": name, "exit": codes, "chunks": s["chunks_planned"], "trajectories": s["trajectories_executed"],
           "camera_to_plan_p50_ms": cam_to_plan.get("p50_ms"), "generate_p50_ms": gen.get("p50_ms"),
           "graph_adds_p50_ms": (round(cam_to_plan["p50_ms"] - gen["p50_ms"], 2)
                                 if cam_to_plan.get("count") and gen.get("count") else None),
           "breakdown_p50_ms": {k: b[k]["p50_ms"] for k in STAGES if k in b},
           "control_period_p99_ms": ctl["control_period"].get("p99_ms"),
           "control_period_max_ms": ctl["control_period"].get("max_ms"),
           "idle_fraction": idle_time(seen)["fraction"], "limit_violations": s["limit_violations"]}
    return out


def median_of(runs: list[dict]) -> dict:
    """Per numeric field, the median over repeats (nested breakdown too)."""
    def med(xs):
        xs = [x for x in xs if isinstance(x, (int, float))]
        return round(float(np.median(xs)), 3) if xs else None

    out = {k: med([r[k] for r in runs]) for k in runs[0] if k not in ("variant", "exit", "breakdown_p50_ms")}
    keys = sorted({k for r in runs for k in r["breakdown_p50_ms"]}, key=STAGES.index)
    out["breakdown_p50_ms"] = {k: med([r["breakdown_p50_ms"].get(k) for r in runs]) for k in keys}
    return out


def print_table(results: dict, alone: dict | None) -> None:
    if alone:
        print(f"world model alone: generate p50 {alone['p50_ms']} ms, p90 {alone['p90_ms']} ms ({alone['count']} chunks)")
    first = next(iter(results), "")   # the first variant run is the base of the ratios
    base_name = first
    base = results.get(first)
    head = ("variant", "cam->plan p50", "generate p50", "graph adds", "ctl p99", "ctl max", "idle", "chunks")
    rows = [head]
    for name, r in results.items():
        rows.append((name, str(r["camera_to_plan_p50_ms"]), str(r["generate_p50_ms"]), str(r["graph_adds_p50_ms"]),
                     str(r["control_period_p99_ms"]), str(r["control_period_max_ms"]), str(r["idle_fraction"]),
                     str(r["chunks"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nbreakdown, p50 ms per stage (camera_to_plan = frame_age + worker_wait + generate + executor):")
    stages = [k for k in STAGES if any(k in r["breakdown_p50_ms"] for r in results.values())]
    print("variant".ljust(28) + "".join(k[:13].rjust(14) for k in stages))
    for name, r in results.items():
        print(name.ljust(28) + "".join(str(r["breakdown_p50_ms"].get(k, "")).rjust(14) for k in stages))
    if base:
        print(f"\nratios to {base_name}:")
        for name, r in results.items():
            def ratio(k):
                return (f"{r[k] / base[k]:.2f}" if isinstance(r.get(k), (int, float)) and base.get(k) else "n/a")
            print(f"  {name:28s} cam->plan {ratio('camera_to_plan_p50_ms')}  generate {ratio('generate_p50_ms')}  "
                  f"ctl p99 {ratio('control_period_p99_ms')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--untrained", action="store_true", help="config/sim.yaml with the tiny random models")
    ap.add_argument("--checkpoints", type=Path, default=REPO / "checkpoints" / "demo")
    ap.add_argument("--task", default="pick_block_narrow")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per variant")
    ap.add_argument("--layouts", default="composed,composed_mp,split,split_mp,robot_only", help=f"of {list(LAYOUTS)}")
    ap.add_argument("--executors", default=",".join(EXECUTORS), help=f"of {list(EXECUTORS)}")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--joint-states-every", default="1",
                    help="controller.joint_states_every values to compare, e.g. 1,4 (/joint_states at 200 and 50 Hz)")
    ap.add_argument("--variant", default="deployed",
                    help="eva-demo variant whose world model runs: deployed (the student, else grpo), grpo, sft")
    ap.add_argument("--alone", type=int, default=20, help="chunks of the world model alone (0: skip)")
    ap.add_argument("--work", type=Path, default=None, help="params, logs and reports here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here (atomic)")
    ap.add_argument("--role", choices=["generate"], help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=20, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if args.role:
        role_generate(args)
        return 0
    layouts, executors = args.layouts.split(","), args.executors.split(",")
    for x, known, what in ((layouts, LAYOUTS, "--layouts"), (executors, EXECUTORS, "--executors")):
        bad = sorted(set(x) - set(known))
        if bad:
            ap.error(f"{what}: unknown {bad}; known: {list(known)}")
    import tempfile

    from eva_ros.testing import ros_env, unique_domain_id

    work = args.work or Path(tempfile.mkdtemp(prefix="graph_latency_"))
    work.mkdir(parents=True, exist_ok=True)
    js_values = [int(x) for x in args.joint_states_every.split(",")]
    params = {(ex, mp, js): write_variant_params(work / f"params_{ex}{'_mp' if mp else ''}_js{js}.yaml",
                                                 args.untrained, args.checkpoints, args.task, args.seed, ex, mp, js,
                                                 args.variant)
              for ex in executors for mp in (False, True) for js in js_values}
    domain = unique_domain_id()
    print(f"graph_latency: {'untrained config/sim.yaml' if args.untrained else f'config/demo.yaml on {args.checkpoints}'}"
          f", {args.duration:g} s per variant, {args.repeats} repeat(s); loadavg {os.getloadavg()}; work {work}",
          flush=True)
    alone = generate_alone(params[executors[0], False, js_values[0]], args.alone, ros_env(domain)) if args.alone > 0 else None
    runs: dict[str, list] = {}
    for rep in range(args.repeats):
        for ex, layout, js in itertools.product(executors, layouts, js_values):
            if layout == "robot_only" and ex != executors[0]:
                continue   # the controller's baseline once per repeat
            name = f"{layout}/{ex}" + (f"/js{js}" if len(js_values) > 1 else "")
            t = time.time()
            r = run_variant(f"{layout}_{ex}_js{js}_{rep}", layout, params[ex, layout in MODEL_PROCESS, js],
                            args.duration, work, domain)
            runs.setdefault(name, []).append(r)
            print(f"graph_latency: {name} ({time.time() - t:.0f} s): cam->plan p50 {r['camera_to_plan_p50_ms']} ms, "
                  f"generate p50 {r['generate_p50_ms']} ms, ctl p99 {r['control_period_p99_ms']} ms, "
                  f"idle {r['idle_fraction']}, loadavg {os.getloadavg()[0]:.2f}", flush=True)
    results = {name: median_of(rs) for name, rs in runs.items()}
    print()
    print_table(results, alone)
    if args.json:
        from eva_core.atomic_io import write_json

        write_json(args.json, {"loadavg_end": os.getloadavg(), "generate_alone_ms": alone, "variants": results,
                               "runs": runs, "args": {k: str(v) for k, v in vars(args).items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
