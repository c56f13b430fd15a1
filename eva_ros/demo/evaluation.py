"""eva-demo on trained checkpoints: idm_replay_success, then closed-loop episodes per variant and
task through the full node graph, scored and written to report.json / rollout.mp4 / actions.png.
See eva_ros/demo/cli.py for the command line and docs/toy_eva.md for what the numbers mean."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from eva_core.atomic_io import write_json
from eva_core.cli import UserError, check_writable
from eva_core.paths import config_path

BIN = Path(sys.executable).parent


def load_manifest(ckpt: Path) -> dict:
    try:
        m = json.loads((ckpt / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{ckpt / 'manifest.json'}: unreadable ({e})") from e
    for key in ("config", "files"):
        if key not in m:
            raise UserError(f"{ckpt / 'manifest.json'}: missing key {key!r}")
    for name in ("idm", "vae", "transformer", "lora"):
        if not (ckpt / name).is_dir():
            raise UserError(f"{ckpt / name}: missing checkpoint directory")
    return m


STUDENT_YAML = "world_model_student.yaml"


def student_model(ckpt: Path) -> dict | None:
    """The export's distilled student (world_model_student.yaml, paths relative to `ckpt`), or None."""
    path = ckpt / STUDENT_YAML
    if not path.is_file():
        return None
    import yaml

    try:
        wm = dict(yaml.safe_load(path.read_text())["world_model"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: unreadable world_model section ({e})") from e
    for key in ("transformer_dir", "vae_dir", "lora", "light_decoder"):
        v = wm.get(key)
        if isinstance(v, str):
            wm[key] = str(ckpt / v)
        elif isinstance(v, list):
            wm[key] = [str(ckpt / x) for x in v]
    return wm


def variants(ckpt: Path, model: dict, compare: bool, best_of: int) -> dict:
    """The planner's world_model section of each variant (absolute paths), the deployed one first:
    the distilled student where the export has one (N = 1), else GRPO. With `compare`, also the
    teacher (GRPO), SFT and SFT best-of-N on the same seeds."""
    base = {**model, "transformer_dir": str(ckpt / "transformer"), "vae_dir": str(ckpt / "vae")}
    grpo = {**base, "lora": str(ckpt / "lora"), "merge_lora": True}
    student = student_model(ckpt)
    out = {"student": student} if student is not None else {"grpo": grpo}
    if compare:
        out["grpo"] = grpo
        out["sft"] = dict(base)
        out[f"sft_best_of_{best_of}"] = {**base, "best_of": int(best_of), "reward_idm": str(ckpt / "idm")}
    return out


def idle_time(spans: list, end: float | None = None) -> dict:
    """Seconds without a trajectory to follow, from the first trajectory's start to the last's end
    (or `end`): the union of the [start, end] spans subtracted from that window."""
    if not spans:
        return {"seconds": None, "fraction": None, "gaps": 0}
    s = sorted((a, b) for a, b, _ in spans)
    t0, t1 = s[0][0], max(b for _, b in s) if end is None else end
    covered, cur_a, cur_b, gaps = 0.0, s[0][0], s[0][1], 0
    for a, b in s[1:]:
        if a > cur_b:
            covered += cur_b - cur_a
            gaps += 1
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    covered += cur_b - cur_a
    total = max(t1 - t0, 1e-9)
    idle = max(0.0, total - covered)
    return {"seconds": round(idle, 3), "fraction": round(idle / total, 4), "gaps": gaps}


def demo_outcomes(records: list, task: str) -> tuple[dict, dict]:
    """({seed: why its held-out demo could be excluded}, {seed: demo_time_scale of its retry}) of
    `task`'s recorded demos (runs.record_with_retry): a demo that failed at first was recorded
    again, slower, and a reason says when even that failed."""
    why = {str(x["seed"]): ("its scripted demo failed through the graph" if not x["success"] else
                            "no bag recorded" if not x["bag"] else "its bag did not convert")
           + (f", also when retried at demo_time_scale {x['time_scale']}" if x.get("retried") else "")
           for x in records if x["task"] == task}
    retried = {str(x["seed"]): x["time_scale"] for x in records if x["task"] == task and x.get("retried")}
    return why, retried


def replay_all(ckpt: Path, cfg: dict, tasks: list, work: Path) -> dict:
    """idm_replay_success per task on the manifest's held-out replay seeds: the scripted demos run
    through the ROS graph and eva-record, as the IDM's training demos did; the IDM decodes their
    videos; the twin executes the decoded actions (and, as the control, the recorded commands)."""
    from eva_core.data.hdf5_io import read_aloha_hdf5
    from eva_core.embodiment import load_embodiment
    from eva_core.idm import load_idm
    from eva_core.sim.idm_replay import excluded_seeds, replay_demos, replay_text
    from eva_ros.demo.runs import bags_to_episodes, record_demos

    p = cfg["pipeline"]
    seeds = [int(s) for s in p["replay_seeds"]]
    emb = load_embodiment()
    idm = load_idm(ckpt / "idm")
    graph = work / "heldout_graph"
    if graph.exists():
        shutil.rmtree(graph)   # this tool's scratch from an earlier run: the demos are recorded anew
    records = record_demos(tasks, seeds, graph, p["camera"], float(p.get("demo_time_scale", 1.0)),
                           say=lambda line: print(f"eva-demo: held-out {line}", flush=True))
    out = {}
    for task in tasks:
        files = bags_to_episodes([r for r in records if r["task"] == task], graph / "episodes" / task,
                                 graph / "logs" / f"bag_to_episodes_{task}.log")
        demos = [(seed, read_aloha_hdf5(f)) for (_, seed), f in sorted(files.items())]
        out[task] = r = {**replay_demos(idm, task, emb, demos, len(seeds)), "route": "ros_graph"}
        why, r["retried"] = demo_outcomes(records, task)
        r["excluded"] = excluded_seeds(seeds, r["seeds"], why)
        r["text"] = replay_text(r)
        retried = f"; retried slower: seeds {sorted(r['retried'])}" if r["retried"] else ""
        print(f"eva-demo: idm_replay_success {task}: {r['text']} (their recorded commands replayed: "
              f"{r['gt_replay_success']}; action MAE {r['action_mae']}{retried})", flush=True)
    return out


def run_trained(args, ckpt: Path) -> int:
    # inputs first, before ROS starts
    overlay = config_path(args.config or "demo")
    check_writable(args.out, kind="dir")
    manifest = load_manifest(ckpt)
    cfg = manifest["config"]
    tasks = args.tasks or list(cfg["pipeline"]["tasks"])
    from eva_core.embodiment import load_embodiment
    from eva_core.sim.registry import TASKS, make_task

    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise UserError(f"--tasks: unknown {unknown}; the twin has {sorted(TASKS)}")
    emb = load_embodiment()
    ckpt = ckpt.resolve()
    from eva_ros.runtime import configure_transport
    from eva_ros.testing import use_domain

    use_domain()   # LOCALHOST discovery; the graphs' domain id

    configure_transport()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    t_start = time.time()
    print(f"eva-demo: trained toy EVA from {ckpt} on {overlay} (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}); "
          f"tasks {tasks}, {args.episodes} episode(s) each, seeds from {args.seed}", flush=True)
    replays = {} if args.no_replay else replay_all(ckpt, cfg, tasks, work)

    import rclpy

    from eva_ros import names
    from eva_ros.demo.runs import closed_loop, ros_env
    from eva_ros.demo.recorder import video_frames, write_plots

    rclpy.init()
    env = ros_env()
    cam = cfg["pipeline"]["camera"]
    camera_topic = names.camera_topic("cam_high")
    episodes, frames, first_deployed = [], [], None
    table = variants(ckpt, cfg["model"], not args.no_compare, args.best_of)
    deployed = next(iter(table))
    print(f"eva-demo: deployed variant {deployed}; compared: {', '.join(list(table)[1:]) or 'none (--no-compare)'}",
          flush=True)
    try:
        for variant, wm in table.items():
            for task in tasks:
                instruction = make_task(task, emb).instruction
                for k in range(args.episodes):
                    seed = args.seed + k
                    name = f"{variant}_{task}_{seed}"
                    overrides = {
                        "camera": {"source_options": {"height": int(cam["height"]), "width": int(cam["width"]),
                                                      "task": task}},
                        "planner": {"instruction": instruction, "seed": seed, "world_model": wm},
                        "idm_action": {"idm": {"checkpoint": str(ckpt / "idm")}},
                        "controller": {"arm": {"task": task, "seed": seed}}}
                    t = time.time()
                    r = closed_loop(overlay, work, name, overrides, args.episode_seconds, env, emb, camera_topic,
                                    layout=args.layout)
                    ep = score_episode(variant, task, seed, r)
                    episodes.append(ep)
                    print(f"eva-demo: {variant:>14} {task:<11} seed {seed}: success {ep['success']}, "
                          f"reward {ep['mean_reward']}, chunks {ep['chunks_executed']} (expired {ep['chunks_expired']}), "
                          f"limit violations {ep['limit_violations']} ({time.time() - t:.0f} s)", flush=True)
                    if variant == deployed:   # the video and the action plot show the deployed model
                        rec = r["recording"]
                        label = f"{task} ep {k + 1} seed {seed}: {'SUCCESS' if ep['success'] else 'fail'} ({variant})"
                        frames += video_frames(rec["camera"], rec["chunks"], 240, label)
                        if first_deployed is None and rec["commands"]:
                            first_deployed = rec
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    report = build_report(manifest, ckpt, args, tasks, replays, episodes, time.time() - t_start)
    report["deployed"] = deployed
    report["variants"] = {v: variant_label(v, wm, v == deployed) for v, wm in table.items()}
    write_json(out / "report.json", report)   # first: a failing video or plot cannot lose the episodes
    written = [out / "report.json"]
    if frames:
        import imageio.v3 as iio

        from eva_core.atomic_io import atomic_path

        with atomic_path(out / "rollout.mp4", suffix=".mp4") as tmp:
            iio.imwrite(tmp, np.stack(frames), fps=10.0, codec="libx264")
        written.append(out / "rollout.mp4")
    if first_deployed is not None:
        written += write_plots(emb, first_deployed, out / "actions.png", None)
    print_table(report)
    for p in written:
        print(f"eva-demo: wrote {p}")
    if report["limit_violations"] != 0:
        print("eva-demo: FAILED: the final safety filter had to clip commands", file=sys.stderr)
        return 1
    if not any(e["commands_sent"] for e in episodes):
        print("eva-demo: FAILED: no command reached the arm", file=sys.stderr)
        return 1
    return 0


def score_episode(variant: str, task: str, seed: int, r: dict) -> dict:
    s = r["summary"] or {}
    rec = r["recording"]
    scores = [v for _, v in rec["scores"]]
    traj = rec["trajectories"]
    return {"variant": variant, "task": task, "seed": seed, "success": bool(r["success"]),
            "success_reported": r["success"] is not None, "exit": r["exit"],
            "chunks_planned": s.get("chunks_planned", 0), "chunks_executed": s.get("trajectories_executed", 0),
            "chunks_expired": s.get("trajectories_expired", 0),   # ended before they reached the arm
            "commands_sent": s.get("commands_sent", 0), "limit_violations": s.get("limit_violations", 0),
            "watchdog_events": s.get("watchdog_events", 0),
            "mean_reward": round(float(np.mean(scores)), 4) if scores else None, "rewards": [round(v, 4) for v in scores],
            "latency_ms": s.get("latency_ms", {}), "generate_ms": generate_ms(s),
            "control_period_ms": {k: (s.get("control_period") or {}).get(k) for k in ("p50_ms", "p99_ms", "max_ms")},
            "latency_breakdown": s.get("latency_breakdown", {}), "idle": idle_time(traj), "log": r["log"]}


def generate_ms(summary: dict) -> dict:
    """The world model's own time per chunk (its last_timing total), p50/p90 in ms, from a
    bringup summary; {} when the model reported none."""
    total = (summary.get("world_model_stages") or {}).get("total_s") or {}
    if not total.get("count"):
        return {}
    return {"count": total["count"], "p50_ms": round(total["p50"] * 1e3, 3), "p90_ms": round(total["p90"] * 1e3, 3)}


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return round(float(np.mean(xs)), 4) if xs else None


def _max(xs):
    xs = [x for x in xs if x is not None]
    return round(float(max(xs)), 4) if xs else None


def _graph_added(lat: list, eps: list):
    """camera-to-plan p50 minus the model's own generate p50, mean over the episodes that have both."""
    return _mean([x.get("p50_ms") - e["generate_ms"]["p50_ms"] for x, e in zip(lat, eps)
                   if x.get("p50_ms") is not None and e.get("generate_ms", {}).get("p50_ms") is not None])


def _breakdown_p50(eps) -> dict:
    """Per stage of eva_core.latency_breakdown: the mean over episodes of each episode's p50 (ms)."""
    stages = sorted({k for e in eps for k in e.get("latency_breakdown", {})})
    return {k: _mean([e["latency_breakdown"].get(k, {}).get("p50_ms") for e in eps]) for k in stages}


def _replay_note(replays: dict, cam: dict) -> str:
    low = [t for t, r in replays.items() if r["idm_replay_success"] is not None and r["idm_replay_success"] < 0.9]
    if not low:
        return ""
    truth = [t for t in low if (replays[t].get("gt_replay_success") or 0) < 0.9]
    why = (f"on {truth} the demos' own recorded commands fail the replay too (the twin, not the IDM); " if truth else "")
    return (f"idm_replay_success below 0.9 on {low}: {why}the toy IDM sees {cam['height']}x{cam['width']} frames; "
            "its per-frame action error (action_mae, rad, all dimensions) adds up over an open-loop replay of the "
            "whole demonstration to more than the task tolerates (a push that stops short, a grasp beside the "
            "block: docs/toy_eva.md)")


def build_report(manifest, ckpt, args, tasks, replays, episodes, seconds) -> dict:
    by = {}
    for e in episodes:
        by.setdefault(e["variant"], {}).setdefault(e["task"], []).append(e)
    summary = {}
    for variant, per_task in by.items():
        gens = args.best_of if variant.startswith("sft_best_of") else 1
        summary[variant] = {}
        for task, eps in per_task.items():
            lat = [e["latency_ms"].get("camera_to_plan", {}) for e in eps]
            to_traj = [e["latency_ms"].get("camera_to_trajectory", {}) for e in eps]
            wins, failed = sum(e["success"] for e in eps), sum(not e["success_reported"] for e in eps)
            summary[variant][task] = {
                "episodes": len(eps), "success_rate": wins / len(eps), "successes": wins, "failed_to_run": failed,
                "success_text": f"{wins / len(eps):.2f} ({wins}/{len(eps)}" + (f"; {failed} failed to run" if failed else "")
                                + ")",
                "mean_reward": _mean([e["mean_reward"] for e in eps]),
                "chunks_executed": sum(e["chunks_executed"] for e in eps),
                "chunks_expired": sum(e["chunks_expired"] for e in eps),
                "generations_per_chunk": gens,
                "generated_chunks": sum(e["chunks_planned"] for e in eps) * gens,
                "limit_violations": sum(e["limit_violations"] for e in eps),
                "latency_camera_to_plan_ms": {k: _mean([x.get(k) for x in lat]) for k in ("p50_ms", "p90_ms", "p99_ms")},
                "latency_camera_to_trajectory_ms": {k: _mean([x.get(k) for x in to_traj])
                                                    for k in ("p50_ms", "p90_ms", "p99_ms")},
                # the world model's own share of it (same runs): camera_to_plan p50 - generate p50 is the graph's
                "generate_ms": {k: _mean([e.get("generate_ms", {}).get(k) for e in eps]) for k in ("p50_ms", "p90_ms")},
                "latency_breakdown_p50_ms": _breakdown_p50(eps),
                # issue #22's acceptance: what the graph adds at p50, the controller's p99 period
                "graph_added_ms": _graph_added(lat, eps),
                "control_period_p99_ms": {"mean": _mean([e.get("control_period_ms", {}).get("p99_ms") for e in eps]),
                                          "max": _max([e.get("control_period_ms", {}).get("p99_ms") for e in eps])},
                "idle_seconds_mean": _mean([e["idle"]["seconds"] for e in eps]),
                "idle_fraction_mean": _mean([e["idle"]["fraction"] for e in eps])}
    notes = [f"{variant} {task}: {s['failed_to_run']} of {s['episodes']} episodes failed to run (no success check)"
             for variant, per_task in summary.items() for task, s in per_task.items() if s["failed_to_run"]]
    notes += [f"idm_replay {task}: {r['text']}" for task, r in replays.items() if r.get("excluded")]
    return {"degraded": bool(notes), "degraded_notes": notes, "checkpoints": str(ckpt), "manifest_sha256": {k: v["sha256"] for k, v in manifest["files"].items()},
            "command": "eva-demo " + " ".join(sys.argv[1:]), "layout": args.layout, "seeds": list(range(args.seed, args.seed + args.episodes)),
            "tasks": tasks, "episode_seconds": args.episode_seconds, "seconds": round(seconds, 1),
            "limit_violations": sum(e["limit_violations"] for e in episodes),
            "idm_replay": replays, "idm_replay_note": _replay_note(replays, manifest["config"]["pipeline"]["camera"]), "summary": summary, "episodes": episodes,
            "training_metrics": manifest.get("metrics", {}), "training_stage_seconds": manifest.get("stage_seconds", {})}


def _cell(value) -> str:
    """A table cell; a value that was not measured reads "n/a", never "None"."""
    return "n/a" if value is None else str(value)


def variant_label(name: str, wm: dict, deployed: bool) -> str:
    """What a variant is, for the report and the table."""
    if wm.get("sampler") == "student":
        what = f"distilled student, {wm.get('student_steps')} transformer calls per chunk"
    elif wm.get("best_of"):
        what = f"SFT, best of {wm['best_of']} by the IDM reward"
    elif wm.get("lora"):
        what = f"GRPO ({wm.get('scheduler')} x {wm.get('num_steps')})" + (", the aligned model the student is distilled from" if not deployed else "")
    else:
        what = f"SFT ({wm.get('scheduler')} x {wm.get('num_steps')})"
    return what + (", deployed" if deployed else "")


def print_table(report: dict) -> None:
    for v, label in report.get("variants", {}).items():
        print(f"eva-demo: {v}: {label}")
    rows = [("variant", "task", "success", "reward", "chunks", "gen/chunk", "limit viol", "plan p50 ms", "traj p50 ms",
             "gen p50 ms", "graph ms", "idle s", "idle frac", "ctl p99 ms")]
    for variant, per_task in report["summary"].items():
        for task, s in per_task.items():
            rows.append((variant, task, s["success_text"], *map(_cell, (
                s["mean_reward"], s["chunks_executed"], s["generations_per_chunk"], s["limit_violations"],
                s["latency_camera_to_plan_ms"]["p50_ms"], s.get("latency_camera_to_trajectory_ms", {}).get("p50_ms"),
                s["generate_ms"]["p50_ms"], s.get("graph_added_ms"),
                s["idle_seconds_mean"], s["idle_fraction_mean"], s.get("control_period_p99_ms", {}).get("mean")))))
    for task, r in report["idm_replay"].items():
        rows.append(("idm_replay", task, r.get("text", str(r["idm_replay_success"])), *[""] * (len(rows[0]) - 3)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("eva-demo: " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("eva-demo: " + "  ".join("-" * w for w in widths))
    print(f"eva-demo: {report['seconds']:.0f} s in all, {report['limit_violations']} limit violations"
          + ("; DEGRADED: " + "; ".join(report["degraded_notes"]) if report.get("degraded") else ""))
