#!/usr/bin/env python3
"""Safety filter cost per control tick, as a fraction of the 200 Hz budget (5 ms).

Prints the median per-tick time of SafetyFilter.step and the ratio to the control period, so
the controller's headroom is known. Measured in one run: tick cost vs period.
"""

import argparse
import time

import numpy as np

from eva_core.embodiment import load_embodiment
from eva_core.safety import SafetyFilter


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--ticks", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    emb = load_embodiment()
    dt = 1.0 / args.rate
    rng = np.random.default_rng(0)
    targets = rng.uniform(emb.pos_lower, emb.pos_upper, size=(args.ticks, emb.dof))
    per_tick = []
    for _ in range(args.repeats):
        f = SafetyFilter(emb, dt)
        f.reset((emb.pos_lower + emb.pos_upper) / 2)
        t0 = time.perf_counter()
        for q in targets:
            f.step(q)
        per_tick.append((time.perf_counter() - t0) / args.ticks)
    med = float(np.median(per_tick))
    print(f"safety filter: {med * 1e6:.1f} us/tick (median of {args.repeats}); "
          f"control period {dt * 1e3:.1f} ms; tick/period ratio = {med / dt:.4f}")
    # the IDM node filters a whole chunk at once (plan -> trajectory): 1.6 s of motion at the rate
    chunk = targets[: int(1.6 * args.rate)]
    per_chunk = []
    for _ in range(args.repeats):
        f = SafetyFilter(emb, dt)
        t0 = time.perf_counter()
        f.filter_chunk(chunk, (emb.pos_lower + emb.pos_upper) / 2)
        per_chunk.append(time.perf_counter() - t0)
    c = float(np.median(per_chunk))
    print(f"filter_chunk of {len(chunk)} points: {c * 1e3:.2f} ms ({c / len(chunk) * 1e6:.1f} us/point; "
          f"per-point / per-tick ratio = {c / len(chunk) / med:.2f})")


if __name__ == "__main__":
    main()
