"""eva-demo: the toy EVA closed loop in the physics twin, recorded and scored (`make demo`).

    eva-demo [--episodes 3] [--tasks pick_block push_block] [--out outputs/demo] [--no-compare]

With the checkpoints of `make train-demo` in checkpoints/demo/ (manifest.json), every episode is
one `eva-bringup` of config/demo.yaml (base.yaml + overlay): the twin's cam_high -> planner (the
tiny Wan2.1 I2V world model, receding horizon: the deployed variant is the distilled student of
the GRPO model where the export has one, world_model_student.yaml, else GRPO) -> idm_action (the trained IDM, reward,
safety filter) -> controller -> the physics sim arm, which moves the twin the camera renders
(`--config demo_piper`: the robot's Piper backend over virtual CAN to the Piper emulator instead). The
twin task is placed from a fixed seed per episode; its success check is read at the end. With
--compare (default) the same seeds also run the teacher (GRPO), the SFT-only model at N = 1 and SFT
best-of-N; --no-compare runs the deployed variant only.
Before the closed loop, idm_replay_success: scripted demos on the held-out seeds, recorded through
the graph and eva-record as the IDM's training demos were, are decoded by the IDM and the actions
executed in the twin (their recorded commands too, as the control). Outputs in --out:
  report.json    per variant and task: success, mean executability reward of executed chunks,
                 limit violations, latency percentiles, arm idle time between chunks; idm_replay
  rollout.mp4    the deployed variant's episodes: camera view beside the current generated chunk, labelled
                 task/episode/success
  actions.png    the commanded actions of the first deployed-variant episode, with the limits
and a summary table on stdout. Exit 1 if any command was clipped by the final safety filter.

Without those checkpoints (or with --duration), it runs the untrained plumbing demo instead and
says so: config/sim.yaml for --duration s with the tiny random models (report.json = the bringup
report, rollout.mp4, actions.png, scores.png); exit 1 if no command reached the arm or any was
clipped. Bad --config / --out: one line, exit 2 (--debug for the traceback), before ROS starts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from eva_core.cli import add_debug_arg, check_writable, cli_main
from eva_core.paths import config_path


def run(argv) -> int:
    ap = argparse.ArgumentParser(prog="eva-demo", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=None,
                    help="untrained plumbing demo on --config for this many seconds (default without checkpoints: 30)")
    ap.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory (default outputs/demo)")
    ap.add_argument("--config", default=None, help="bringup params file (default config/demo.yaml; untrained: sim)")
    ap.add_argument("--checkpoints", type=Path, default=None, help="default: checkpoints/demo of the repository")
    ap.add_argument("--episodes", type=int, default=3, help="episodes per task and variant (default 3)")
    ap.add_argument("--tasks", nargs="*", default=None, help="twin tasks (default: those trained)")
    ap.add_argument("--seed", type=int, default=1000, help="first episode seed (default 1000, never a training seed)")
    ap.add_argument("--episode-seconds", type=float, default=16.0, help="closed loop per episode (default 16 s)")
    ap.add_argument("--best-of", type=int, default=4, help="N of the SFT best-of-N baseline (default 4)")
    ap.add_argument("--no-compare", action="store_true", help="only the deployed variant (the student, else GRPO; no teacher / SFT / best-of-N runs)")
    ap.add_argument("--no-replay", action="store_true", help="skip idm_replay_success")
    ap.add_argument("--layout", choices=("composed", "split"), default="split",
                    help="trained closed loop: split as on the robot (default): planner + idm_action in one "
                         "process, camera + controller in another, so the 200 Hz controller never waits on the "
                         "model's GIL; or composed: every node in one process")
    add_debug_arg(ap)
    args = ap.parse_args(argv)
    if args.duration is not None and not (args.duration > 0 and args.duration < float("inf")):
        ap.error(f"--duration must be a positive number of seconds, got {args.duration}")
    if args.episodes < 1 or not (0 < args.episode_seconds < 600) or args.best_of < 1:
        ap.error("--episodes and --best-of must be >= 1, --episode-seconds in (0, 600)")
    ckpt = args.checkpoints or _repo_checkpoints()
    if args.duration is None and (ckpt / "manifest.json").is_file():
        from eva_ros.demo.evaluation import run_trained

        return run_trained(args, ckpt)
    if args.duration is None:
        print(f"eva-demo: no trained checkpoints at {ckpt} (manifest.json missing; `make train-demo` writes them): "
              "running the UNTRAINED plumbing demo (random tiny models: the motion means nothing)")
        args.duration = 30.0
    return run_untrained(args)


def _repo_checkpoints() -> Path:
    """checkpoints/demo beside config/ (the source tree), else under the current directory."""
    here = Path(__file__).resolve().parents[2] / "checkpoints" / "demo"
    return here if here.exists() else Path("checkpoints/demo")


def run_untrained(args) -> int:
    # everything that can be wrong with the inputs fails here, before ROS starts
    cfg = config_path(args.config or "sim")
    emb, camera_topic = _camera(cfg)
    check_writable(args.out, kind="dir")
    from eva_ros.runtime import configure_transport
    from eva_ros.testing import use_domain

    use_domain()   # LOCALHOST discovery (never multicast off this machine), the recorder joins the graph's domain

    configure_transport()
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "report.json"

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from eva_ros.demo.recorder import RecorderNode

    rclpy.init()
    recorder = RecorderNode(emb, camera_topic=camera_topic)
    executor = SingleThreadedExecutor()
    executor.add_node(recorder)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print(f"eva-demo: closed loop for {args.duration:.0f} s on {cfg} (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']})")
    cmd = [sys.executable, "-m", "eva_ros.bringup", "--config", str(cfg), "--duration", str(args.duration),
           "--report", str(report_path)]
    t0 = time.time()
    try:
        rc = subprocess.run(cmd).returncode
    finally:
        time.sleep(0.5)  # the last messages in flight
        executor.shutdown(timeout_sec=2.0)
    counts = recorder.counts()
    written = [p for p in (recorder.write_video(args.out / "rollout.mp4"),
                           *recorder.write_plots(args.out / "actions.png", args.out / "scores.png")) if p]
    recorder.destroy_node()
    rclpy.shutdown()
    if rc != 0 or not report_path.exists():
        print(f"eva-demo: eva-bringup failed (exit {rc})", file=sys.stderr)
        return 1
    s = json.loads(report_path.read_text())["summary"]
    print(f"eva-demo: {time.time() - t0:.0f} s: {s['chunks_planned']} chunks planned, "
          f"{s['trajectories_executed']} trajectories executed, {s['commands_sent']} commands sent, "
          f"{s['limit_violations']} limit violations, {s['watchdog_events']} watchdog events")
    lat = s["latency_ms"]
    print("eva-demo: latency p50 ms: camera->plan {}, plan->trajectory {}, trajectory->first command {}".format(
        *(lat[k].get("p50_ms", "n/a") for k in ("camera_to_plan", "plan_to_trajectory", "trajectory_to_first_command"))))
    print(f"eva-demo: recorded {counts}")
    for p in [report_path, *written]:
        print(f"eva-demo: wrote {p}")
    if s["commands_sent"] <= 0 or s["limit_violations"] != 0:
        print("eva-demo: FAILED: no commands reached the arm, or the final safety filter had to clip", file=sys.stderr)
        return 1
    return 0


def _camera(cfg: Path):
    """The config's embodiment and the topic its camera node publishes on (resolved as the node does)."""
    from eva_core.embodiment import load_embodiment
    from eva_ros.nodes.camera_node import camera_topic
    from eva_ros.params import check_params_files, params_layers

    cam = check_params_files(params_layers(cfg))["camera"]   # typed, base.yaml + cfg
    emb = load_embodiment(cam.embodiment)
    return emb, camera_topic(emb, cam.camera_name, cam.topic)


def main(argv=None) -> int:
    return cli_main("eva-demo", run, argv)


if __name__ == "__main__":
    sys.exit(main())
