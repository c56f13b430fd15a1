#!/usr/bin/env python3
"""Control loop cost per tick, as a fraction of the 200 Hz budget (5 ms).

Times, interleaved and on the same trajectory, (a) the bare per-tick pipeline the controller
needs, TrajectoryFollower.step + the final SafetyFilter.step, and (b) eva_core.control's
ControlLoop.tick, which adds the states, watchdogs, lock and Decision. Prints medians and the
ratio b/a: what the state machine costs on top of the filters.
"""

import argparse
import time

import numpy as np

from eva_core.control import ControlLoop, Kind
from eva_core.embodiment import load_embodiment
from eva_core.safety import SafetyFilter
from eva_core.trajectory import Trajectory, TrajectoryFollower


class _Arm:   # enable/estop only: the loop never sends positions itself
    def enable(self):
        pass

    def estop(self):
        pass


class _State:
    def __init__(self, positions, dof):
        self.positions, self.velocities, self.stamp = positions, np.zeros(dof), 0.0
        self.enabled, self.error = True, ""


def bare(emb, dt, traj, t0, n):
    f, fin = TrajectoryFollower(emb, dt), SafetyFilter(emb, dt)
    f.reset(traj.positions[0])
    fin.reset(traj.positions[0])
    f.replace(traj, t0)
    start = time.perf_counter()
    for k in range(n):
        target, _ = f.step(t0 + k * dt)
        fin.step(target)
    return (time.perf_counter() - start) / n


def loop(emb, dt, traj, t0, n):
    clock = [t0]
    cl = ControlLoop(emb, dt, _Arm(), clock=lambda: clock[0])
    cl.enable()
    state = _State(traj.positions[0], emb.dof)
    state.stamp = t0
    cl.tick(state, t0)
    cl.replace(traj, now=t0)
    start = time.perf_counter()
    for k in range(n):
        now = t0 + k * dt
        state.stamp = now
        d = cl.tick(state, now)
    elapsed = (time.perf_counter() - start) / n
    assert d.kind is Kind.COMMAND
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--ticks", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--embodiment", default=None, help="embodiment name or YAML path (default: the default robot)")
    args = ap.parse_args()
    emb = load_embodiment(args.embodiment) if args.embodiment else load_embodiment()
    dt, n = 1.0 / args.rate, args.ticks
    home = (emb.pos_lower + emb.pos_upper) / 2
    q = np.tile(home, (n, 1))
    q[:, 0] += 0.3 * np.sin(np.linspace(0, 6, n))
    traj = Trajectory(1000.0, np.arange(n) * dt, q)
    a, b = [], []
    for _ in range(args.repeats):   # interleaved
        a.append(bare(emb, dt, traj, 1000.0, n))
        b.append(loop(emb, dt, traj, 1000.0, n))
    ma, mb = float(np.median(a)), float(np.median(b))
    print(f"follower + final filter: {ma * 1e6:.1f} us/tick; ControlLoop.tick: {mb * 1e6:.1f} us/tick "
          f"(median of {args.repeats} x {n}); ratio loop/bare = {mb / ma:.3f}; "
          f"loop tick/period = {mb / dt:.4f}")


if __name__ == "__main__":
    main()
