#!/usr/bin/env python3
"""The Piper CAN path in one run: command rate per arm and feedback-to-command latency.

The control loop (eva_core.control.ControlLoop, ticked at --rate by a thread with absolute
deadlines, as controller_node does) drives the real Piper backend (piper_sdk on python-can
virtual) against the CAN emulator in this process, along a slow sinusoid on every joint.
Printed:
- command rate per arm: complete 0x155-0x157 triples the emulator received per second, and the
  ratio to the control rate; the p50/p99 interval between them;
- feedback-to-command latency, two ways:
  * on the bus: arrival of each joint command frame minus the newest joint feedback frame the
    emulator had sent (includes the phase between the two free-running 200 Hz loops, uniform
    0..5 ms, so its p50 is about half a period plus the processing);
  * in the backend: the age of the feedback state the loop acted on when its command was sent
    (command send time minus the CAN timestamp of the joint feedback it read).
Numbers move with the machine's load (the emulator, the SDK's reader and the loop are Python
threads); the ratios are what to compare.
"""

import argparse
import threading
import time

import numpy as np

from eva_core.control import State
from eva_core.embodiment import load_embodiment
from eva_core.piper.layout import piper_arms
from eva_core.sim.piper_emulator import PiperEmulator
from eva_core.trajectory import Trajectory
from eva_ros.backends.piper import PiperArm
from eva_ros.hardware_check import LoopDriver
from eva_ros.runtime import run_periodic


def pct(x, q):
    return float(np.percentile(np.asarray(x) * 1e3, q)) if len(x) else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0, help="control rate, Hz")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured run length")
    ap.add_argument("--feedback-timeout", type=float, default=0.25, help="loop and backend feedback timeout, s")
    args = ap.parse_args()
    emb = load_embodiment()
    dt = 1.0 / args.rate
    ch = {a.name: f"bench_{a.name}" for a in piper_arms(emb)}
    emu = PiperEmulator(emb, ch).start()
    arm = PiperArm(emb, {"can_interface": "virtual", "can_left": ch["left"], "can_right": ch["right"],
                         "feedback_timeout": args.feedback_timeout})
    arm.connect()
    driver = LoopDriver(emb, arm, dt, args.feedback_timeout)   # what controller_node does each tick
    loop, ages, errors = driver.loop, driver.ages, driver.errors

    stop = threading.Event()
    th = threading.Thread(target=run_periodic, args=(dt, stop, driver.tick, 5 * dt), daemon=True)
    th.start()
    ok, msg = loop.enable()
    if not ok:
        raise SystemExit(f"enable failed: {msg}")
    while loop.state is not State.RUNNING:
        time.sleep(0.01)
    q0 = arm.read_state().positions
    t = np.arange(0.0, args.seconds + 1.0, 0.05)
    amp = np.where(emb.is_gripper, 0.2, 0.15)
    pts = np.clip(q0 + amp * np.sin(2 * np.pi * 0.3 * t)[:, None], emb.pos_lower, emb.pos_upper)
    loop.replace(Trajectory(time.time() + 0.05, t, pts))
    time.sleep(0.5)
    for a in emu.arms.values():
        a.latencies.clear()
        a.command_times.clear()
    ages.clear()
    t0 = time.time()
    time.sleep(args.seconds)
    elapsed = time.time() - t0
    stop.set()
    th.join(5)
    state = loop.state
    arm.close()
    emu.stop()

    print(f"Piper backend vs emulator, control at {args.rate:g} Hz for {elapsed:.1f} s (loop {state.value}, "
          f"{len(errors)} send errors)")
    for name, a in emu.arms.items():
        starts = np.asarray(a.command_times, float)[::3]   # one triple per command
        rate = len(starts) / elapsed
        gaps = np.diff(starts)
        print(f"  {name}: {rate:.1f} commands/s = {rate / args.rate:.3f} x control rate; interval p50 "
              f"{pct(gaps, 50):.2f} ms p99 {pct(gaps, 99):.2f} ms")
        lat = list(a.latencies)
        print(f"  {name}: bus feedback->command p50 {pct(lat, 50):.2f} ms p99 {pct(lat, 99):.2f} ms "
              f"(p50/period {pct(lat, 50) / (dt * 1e3):.2f})")
    print(f"  backend: feedback age at command p50 {pct(ages, 50):.2f} ms p99 {pct(ages, 99):.2f} ms "
          f"max {pct(ages, 100):.2f} ms (p99/feedback_timeout {pct(ages, 99) / (args.feedback_timeout * 1e3):.3f})")


if __name__ == "__main__":
    main()
