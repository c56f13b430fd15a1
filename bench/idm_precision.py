"""IDM decoding in bf16 vs fp32: what the faster precision costs, on a trained model.

    python bench/idm_precision.py                                         # trains a tiny IDM first (~1 min)
    python bench/idm_precision.py --idm runs/idm_synth_late/idm           # fresh held-out synthetic clips
    python bench/idm_precision.py --idm runs/idm/idm --data /data/episodes --n 20

For each clip (the first --frames frames of an episode) both precisions decode the same frames;
printed: their difference in action units (rad for joints), each one's MAE against the recorded
actions, and the executability score of each decoded sequence (the reward differentiates three
times, so rounding noise shows up there first).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from eva_core.data import find_episode_files, make_synthetic_dataset, read_episode
from eva_core.embodiment import DEFAULT_EMBODIMENT, load_embodiment
from eva_core.idm import load_idm
from eva_core.reward import executability_reward

EMB = load_embodiment(DEFAULT_EMBODIMENT)  # the synthetic clips and the reward limits


def train_tiny(out: Path) -> str:
    from training.train_idm import run

    print(f"no --idm: training a tiny late-fusion IDM in {out} (600 steps on 256 synthetic episodes)")
    run(["--synthetic", "256", "--synthetic-frames", "16", "--variant", "tiny", "--fusion", "late", "--flip", "0.5",
         "--max-steps", "600", "--eval-every", "600", "--save-every", "600", "--no-progress", "--out", str(out)])
    return str(out / "idm")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--idm", default=None,
                   help="trained IDM checkpoint (our dir or EVA .pt); default: train a tiny late-fusion one now")
    p.add_argument("--data", default=None, help="episode files/dir (default: fresh synthetic clips)")
    p.add_argument("--n", type=int, default=30, help="clips")
    p.add_argument("--frames", type=int, default=49, help="frames per clip (EVA chunk: 49)")
    p.add_argument("--seed", type=int, default=777, help="synthetic clips: a seed the training never saw")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if a.idm is None:
            a.idm = train_tiny(Path(tmp) / "idm_run")
        idm = load_idm(a.idm).eval()
        if a.data:
            files = find_episode_files(a.data)[: a.n]
        else:
            files = make_synthetic_dataset(Path(tmp) / "clips", a.n, a.frames, idm.config.image_size, seed=a.seed,
                                           progress=False, embodiment=EMB)
        if not files:
            raise SystemExit(f"no episodes under {a.data}")
        rows = []
        for f in files:
            ep = read_episode(f)
            video = torch.from_numpy(ep.frames[: a.frames]).permute(0, 3, 1, 2).float() / 255.0
            truth = torch.as_tensor(ep.action[: a.frames], dtype=torch.float32)
            hi = idm.predict(video)
            lo = idm.predict(video, precision="bfloat16")
            score = lambda x: float(executability_reward(x, fps=ep.fps, config=EMB).score)  # noqa: E731
            rows.append([float((lo - hi).abs().mean()), float((lo - hi).abs().max()),
                         float((hi - truth).abs().mean()), float((lo - truth).abs().mean()),
                         score(hi), score(lo), score(truth)])
    r = np.array(rows)
    names = ["mean |bf16-fp32|", "max |bf16-fp32|", "MAE fp32", "MAE bf16", "score fp32", "score bf16", "score truth"]
    print(f"IDM {a.idm} ({idm.config.variant}, {idm.config.fusion} fusion), {len(rows)} clips x {a.frames} frames")
    for i, n in enumerate(names):
        print(f"{n:18s} mean {r[:, i].mean():8.4f}   min {r[:, i].min():8.4f}   max {r[:, i].max():8.4f}")
    d = r[:, 5] - r[:, 4]
    print(f"score bf16 - fp32  mean {d.mean():+.4f}   max |.| {np.abs(d).max():.4f}")
    return {n: float(r[:, i].mean()) for i, n in enumerate(names)} | {"score_diff_max": float(np.abs(d).max())}


if __name__ == "__main__":
    main()
