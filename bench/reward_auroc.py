"""Does the executability reward separate clean from corrupted motion? AUROC per corruption type.

    python bench/reward_auroc.py                                  # synthetic action sequences
    python bench/reward_auroc.py --idm runs/idm_synth/idm         # sequences decoded by an IDM

Clean sequences are smooth synthetic trajectories inside the limits (49 frames at 16 fps, EVA's
chunk). With --idm the clean trajectories are rendered (eva_core.data.synthetic) and decoded by
the IDM; frame drops / duplicates are then applied to the VIDEO before decoding. Corruptions:
    jitter          Gaussian noise on every joint (sigma rad; grippers sigma/2)
    frame_drop      a fraction of the frames removed (time jumps)
    frame_dup       a fraction of the frames repeated (stalls, then catch-up)
    velocity_limit  a 12-frame stretch of one joint sped up (x speed)
    position_limit  one joint offset by a constant so it ends up to 0.2 rad past its limit
                    (no change of any derivative: EVA's reward cannot see it, our extension can)
Two strengths: strong (sigma 0.02, 20% drop/dup, 4x) and mild (sigma 0.005, 5%, 2x).
AUROC = P(score(clean) > score(corrupted)) from ranks (ties count 1/2); 1.0 = perfect, 0.5 = chance.
Printed for EVA's reward and for our position-limit extension.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from eva_core.data.synthetic import render_frame, synthetic_trajectory
from eva_core.embodiment import load_embodiment
from eva_core.reward import RewardConfig, executability_reward

FPS = 16.0


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Rank-based AUROC (Mann-Whitney U / (n_pos n_neg)) with average ranks for ties."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for v in np.unique(scores):  # average ranks of ties
        tie = scores == v
        ranks[tie] = ranks[tie].mean()
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def frame_drop(n: int, rng, frac: float = 0.2) -> np.ndarray:
    keep = np.sort(rng.choice(n, size=n - int(frac * n), replace=False))
    return keep


def frame_dup(n: int, rng, frac: float = 0.2) -> np.ndarray:
    dup = set(rng.choice(np.arange(1, n), size=int(frac * n), replace=False).tolist())
    idx = []
    for i in range(n):
        idx += [i, i] if i in dup else [i]
    return np.array(idx[:n])  # same length: the tail is cut as the clip would be


def velocity_violation(a: np.ndarray, rng, speed: float) -> np.ndarray:
    a = a.copy()
    d = rng.choice(load_embodiment().arm_indices)
    s = rng.integers(5, len(a) - 17)
    seg = a[s:s + 12, d].copy()
    a[s:s + 12, d] = seg[0] + speed * (seg - seg[0])  # faster over the stretch
    a[s + 12:, d] += a[s + 11, d] - seg[-1]  # continue from where it got to
    return a


def position_violation(a: np.ndarray, rng, emb, over: float = 0.2) -> np.ndarray:
    a = a.copy()
    d = rng.choice(emb.arm_indices)
    a[:, d] += emb.pos_upper[d] + over - a[:, d].max()  # constant shift: same v, a, j
    return a


LEVELS = {"strong": dict(jitter=0.02, drop=0.2, dup=0.2, speed=4.0),
          "mild": dict(jitter=0.005, drop=0.05, dup=0.05, speed=2.0)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="clean sequences (each corruption makes as many)")
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--idm", default=None, help="decode rendered videos with this IDM checkpoint")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    emb = load_embodiment()
    idm = None
    if a.idm:
        from eva_core.idm import load_idm

        torch.set_num_threads(1)
        idm = load_idm(a.idm)
        size = idm.config.image_size

    def decode(traj, idx=None):
        """Actions of a trajectory: itself, or the IDM's reading of its rendered (re-indexed) video."""
        if idm is None:
            return traj if idx is None else traj[idx]
        frames = np.stack([render_frame(q, emb, size=size) for q in traj])
        if idx is not None:
            frames = frames[idx]
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        return idm.predict(video).double().numpy()

    clean_traj = [synthetic_trajectory(a.frames, FPS, rng, emb) for _ in range(a.n)]
    clean = [decode(t) for t in clean_traj]
    configs = {"EVA": RewardConfig.from_embodiment(emb),
               "EVA+pos": RewardConfig.from_embodiment(emb, position_limit=True)}
    score = lambda seqs, cfg: np.asarray(executability_reward(np.stack(seqs), fps=FPS, config=cfg).score, dtype=float)  # noqa: E731
    clean_scores = {n: score(clean, cfg) for n, cfg in configs.items()}
    src = f"IDM-decoded ({a.idm})" if idm is not None else "synthetic actions"
    print(f"{src}: {a.n} clean sequences of {a.frames} frames at {FPS:g} fps; "
          f"mean EVA score of clean: {clean_scores['EVA'].mean():.3f}")
    results = {}
    for level, lv in LEVELS.items():
        sigma = np.where(emb.is_gripper, lv["jitter"] / 2, lv["jitter"])
        seqs = {
            "jitter": [c + rng.normal(0, 1, c.shape) * sigma for c in clean],
            "frame_drop": [decode(t, frame_drop(a.frames, rng, lv["drop"])) for t in clean_traj],
            "frame_dup": [decode(t, frame_dup(a.frames, rng, lv["dup"])) for t in clean_traj],
            "velocity_limit": [velocity_violation(c, rng, lv["speed"]) for c in clean],
            "position_limit": [position_violation(c, rng, emb) for c in clean],
        }
        print(f"\n[{level}: {lv}]")
        print(f"{'corruption':<16}" + "".join(f"{'AUROC ' + n:>16}" for n in configs) + f"{'mean EVA score':>16}")
        for k, v in seqs.items():
            sc = {n: score(v, cfg) for n, cfg in configs.items()}
            results[(level, k)] = {n: auroc(clean_scores[n], sc[n]) for n in configs}
            print(f"{k:<16}" + "".join(f"{results[(level, k)][n]:>16.3f}" for n in configs) + f"{sc['EVA'].mean():>16.3f}")
    return results


if __name__ == "__main__":
    main()
