"""eva-demo: the closed loop in simulation, recorded.

    eva-demo [--duration 30] [--out artifacts/demo] [--config sim]

Runs `eva-bringup` on config/sim.yaml (MuJoCo twin camera -> tiny world model -> tiny IDM ->
safety filter -> controller -> sim arm, which poses the twin the camera renders) in a child
process, records the loop over DDS (loopback only) from this process, and writes:
  report.json    the bringup report (chunks, commands, limit violations, watchdog, latencies)
  rollout.mp4    camera view beside the newest generated chunk
  actions.png    the 14 commanded action curves with their limits
  scores.png     the executability reward of every decoded chunk
The models are tiny and untrained, so the motion means nothing: the demo shows the plumbing,
timing and safety of the loop. Exit code 1 if no command reached the arm or any was clipped; 2
(one line, --debug for the traceback) for a bad --config or an --out that cannot be written.
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
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of closed loop (default 30)")
    ap.add_argument("--out", type=Path, default=Path("artifacts/demo"), help="output directory")
    ap.add_argument("--config", default="sim", help="bringup params file (default config/sim.yaml)")
    add_debug_arg(ap)
    args = ap.parse_args(argv)
    if not (args.duration > 0 and args.duration < float("inf")):
        ap.error(f"--duration must be a positive number of seconds, got {args.duration}")

    # everything that can be wrong with the inputs fails here, before ROS starts
    cfg = config_path(args.config)
    emb, camera_topic = _camera(cfg)
    check_writable(args.out, kind="dir")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # never multicast off this machine
    os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 80))
    from eva_ros.runtime import configure_transport

    configure_transport()
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "report.json"

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from eva_ros.recorder import RecorderNode

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
