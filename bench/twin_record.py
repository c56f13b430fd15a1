"""Scripted twin demonstrations recorded through the live ROS graph, timed per episode.

    .venv/bin/python bench/twin_record.py [--task pick_block] [--episodes 3] [--seed 0] [--out DIR]

Per seed: eva-bringup (sim camera + controller with the physics sim arm, the task's objects
placed from the seed) and eva-record in their own processes; this process plans the task with
IK on an identical twin (same embodiment, task and seed: the same initial state), publishes
the plan as one JointTrajectory to the controller, and stops both when it has run. Then
eva-bag-to-episodes converts the bag. Prints the task success the sim arm reports, the frames
per episode and the seconds per episode (recording, conversion, total incl. start-up).
Loopback DDS only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a private ROS_DOMAIN_ID).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="pick_block")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/eva_twin_record"))
    ap.add_argument("--fps", type=float, default=10.0, help="camera rate")
    ap.add_argument("--slow", type=float, default=2.0,
                    help="stretch the plan's durations by this (the controller's follower limits acceleration)")
    args = ap.parse_args()

    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(30 + os.getpid() % 60),
                      MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    import rclpy
    from trajectory_msgs.msg import JointTrajectory

    from eva_core.data.rosbag_episodes import ConvertOptions, convert_bag
    from eva_core.embodiment import load_embodiment
    from eva_core.sim.demos import action_stream
    from eva_core.sim.registry import make_task
    from eva_ros import qos
    from eva_ros.conversions import trajectory_to_msg
    from eva_ros.params import merged_sections, params_layers

    emb = load_embodiment()
    args.out.mkdir(parents=True, exist_ok=True)
    rclpy.init()
    node = rclpy.create_node("eva_twin_record_bench")
    pub = node.create_publisher(JointTrajectory, "/eva/plan/trajectory", qos.PLAN)
    rows = []
    for seed in range(args.seed, args.seed + args.episodes):
        t_start = time.monotonic()
        params = merged_sections(params_layers("sim"))
        params["camera"]["ros__parameters"].update(fps=args.fps)
        params["camera"]["ros__parameters"]["source_options"].update(task=args.task)
        params["controller"]["ros__parameters"]["arm"] = {"task": args.task, "seed": seed, "physics": True}
        params["eva_record"] = {"ros__parameters": {"out_dir": str(args.out / f"seed_{seed}"), "segment_seconds": 2.0,
                                                    "topics": ["joint_states", "cam_high/color/image_raw",
                                                               "eva/controller/command"]}}
        pfile = args.out / f"params_{seed}.yaml"
        pfile.write_text(yaml.safe_dump(params))
        logs = [open(args.out / f"{n}_{seed}.log", "w") for n in ("bringup", "record")]
        bringup = subprocess.Popen([str(BIN / "eva-bringup"), "--quiet", "--config", str(pfile), "--nodes",
                                    "camera,controller"], stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True)
        rec = subprocess.Popen([str(BIN / "eva-record"), "--ros-args", "--params-file", str(pfile)],
                               stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)
        # the same plan as the remote twin will need: identical twin, same seed
        task = make_task(args.task, emb)
        twin = task.make_twin()
        task.reset(twin, seed)
        plan = [dataclasses.replace(w, duration=w.duration * args.slow) for w in task.plan(twin)]
        twin.close()
        actions = np.stack(list(action_stream(plan, twin.home, 200.0)))
        deadline = time.monotonic() + 120
        while (pub.get_subscription_count() == 0 or node.count_publishers("/joint_states") == 0 or
               node.count_subscribers("/cam_high/color/image_raw") == 0):
            rclpy.spin_once(node, timeout_sec=0.1)
            if time.monotonic() > deadline:
                raise SystemExit(f"seed {seed}: graph did not come up; see {args.out}")
        time.sleep(2.0)   # the recorder's subscriptions settle
        t_rec = time.monotonic()
        pub.publish(trajectory_to_msg(emb.joint_names, emb.action_to_joint_positions(actions), 0.005,
                                      time.time() + 0.2, f"eva_traj:id={seed + 1}"))
        time.sleep(len(actions) * 0.005 + 4.0)   # the follower (velocity/acceleration scaled) lags the plan
        rec_s = time.monotonic() - t_rec
        for p in (rec, bringup):
            os.killpg(p.pid, signal.SIGINT)
            p.wait(timeout=60)
        for f in logs:
            f.close()
        t_conv = time.monotonic()
        (episode_dir,) = sorted((args.out / f"seed_{seed}").iterdir())
        path, report, info = convert_bag(episode_dir, emb, ConvertOptions(max_skew=0.05),
                                         args.out / f"episode_{seed}.hdf5")
        conv_s = time.monotonic() - t_conv
        log = (args.out / f"bringup_{seed}.log").read_text()
        ok = "success True" in log
        rows.append((seed, ok, info.get("frames", 0), rec_s, conv_s, time.monotonic() - t_start, report.errors))
        print(f"seed {seed}: success {ok}, {info.get('frames', 0)} frames, record {rec_s:.1f} s, "
              f"convert {conv_s:.1f} s, total {rows[-1][5]:.1f} s {report.errors or ''}", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    n = len(rows)
    print(f"{args.task}: {sum(r[1] for r in rows)}/{n} successful through the graph; per episode: "
          f"record {np.mean([r[3] for r in rows]):.1f} s, convert {np.mean([r[4] for r in rows]):.2f} s, "
          f"total with start-up {np.mean([r[5] for r in rows]):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
