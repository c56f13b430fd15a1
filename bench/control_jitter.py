#!/usr/bin/env python3
"""What delays a 200 Hz control thread that shares its process with the twin camera and the
trajectory subscription: the period of a control-like thread (physics step per tick) while another
thread renders the twin at 10 Hz in this process, renders it through a child process
(`render_process`, eva_core.sim.render_process), or reads JointTrajectory messages as rclpy does
(in C, with the GIL held). Rows interleaved, printed side by side in one run.

    MUJOCO_GL=egl python bench/control_jitter.py [--seconds 8] [--repeats 2] [--points 320]
"""

import argparse
import sys
import threading
import time

import numpy as np

from eva_core.embodiment import load_embodiment
from eva_core.sim.registry import make_task
from eva_ros.runtime import GIL_SWITCH_INTERVAL


def control_periods(twin, seconds: float, disturb, rate: float = 200.0) -> np.ndarray:
    stop = threading.Event()
    worker = threading.Thread(target=disturb, args=(stop,), daemon=True) if disturb else None
    if worker:
        worker.start()
    periods, dt, last = [], 1.0 / rate, None
    nxt = end = time.monotonic()
    end += seconds
    while time.monotonic() < end:
        nxt += dt
        if (d := nxt - time.monotonic()) > 0:
            time.sleep(d)
        now = time.monotonic()
        if last is not None:
            periods.append(now - last)
        last = now
        twin.advance_to(time.time())
    stop.set()
    if worker:
        worker.join()
    return np.array(periods) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--points", type=int, default=320, help="points per trajectory (a 1.6 s chunk at 200 Hz)")
    args = ap.parse_args()
    from rclpy.serialization import deserialize_message, serialize_message
    from trajectory_msgs.msg import JointTrajectory

    from eva_ros.conversions import trajectory_to_msg

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)   # as in every node process (eva_ros.runtime)
    emb = load_embodiment()
    task = make_task("push_block_narrow", emb)
    local, child = task.make_twin(), task.make_twin()
    for t in (local, child):
        task.reset(t, 1000)
    child.render_in_child_process()
    home = (emb.pos_lower + emb.pos_upper) / 2
    traj = serialize_message(trajectory_to_msg(emb.joint_names, emb.action_to_joint_positions(
        np.tile(home, (args.points, 1))), 0.005, time.time(), "bench"))
    deser = []

    def renders(twin):
        def run(stop):
            while not stop.is_set():
                twin.render("cam_high", 48, 64)
                stop.wait(0.1)
        return run

    def trajectories(read, times):
        def run(stop):   # one chunk per 0.4 s: 4x make demo's rate, to see the tail in seconds
            while not stop.is_set():
                t0 = time.perf_counter()
                read()
                times.append(time.perf_counter() - t0)
                stop.wait(0.4)
        return run

    rows = {"idle": None, "render in process": renders(local), "render_process": renders(child),
            "trajectories (rclpy)": trajectories(lambda: deserialize_message(traj, JointTrajectory), deser)}
    out = {k: [] for k in rows}
    for _ in range(args.repeats):
        for name, disturb in rows.items():
            out[name].append(control_periods(local, args.seconds, disturb))
    child.close()
    local.close()
    base = np.percentile(np.concatenate(out["idle"]), 99)
    print(f"{'disturbance':30s} {'p50 ms':>7s} {'p99 ms':>7s} {'max ms':>7s} {'p99 / idle':>10s}")
    for name, runs in out.items():
        p = np.concatenate(runs)
        print(f"{name:30s} {np.percentile(p, 50):7.2f} {np.percentile(p, 99):7.2f} {p.max():7.1f} "
              f"{np.percentile(p, 99) / base:10.2f}")
    print(f"JointTrajectory of {args.points} points read by rclpy in p50 {np.median(deser) * 1e3:.2f} ms "
          f"(in C, GIL held)")


if __name__ == "__main__":
    main()
