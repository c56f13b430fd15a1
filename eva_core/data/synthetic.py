"""A synthetic dataset whose frames are a known function of an embodiment's joint values.

Each arm of the embodiment's `arms:` table is drawn as a planar stick figure: link k points at
the cumulative angle of the arm's joints 1..k (measured from "up", relative to the middle of each
joint's range), and the gripper is two jaws whose opening is the gripper value. Arms stand side
by side, symmetric about the image centre, and an arm right of the centre is drawn mirrored: for
a two-arm robot, flipping a frame horizontally equals rendering the action permuted by
`Embodiment.mirror_permutation` (the IDM training flip relies on that). Joint trajectories are
smooth sums of sines within the limits.

    python -m eva_core.data.synthetic --out runs/synth --episodes 24 --frames 64 [--embodiment NAME]
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from eva_core.cli import add_debug_arg, check_writable, cli_main
from eva_core.data.episode import Episode
from eva_core.data.hdf5_io import write_episode
from eva_core.embodiment import DEFAULT_EMBODIMENT, Embodiment, load_embodiment

LINK_LENGTHS = (0.15, 0.12, 0.10, 0.08, 0.07, 0.06)  # fraction of the image side
LINK_COLORS = ((230, 80, 60), (240, 170, 40), (90, 200, 80), (60, 170, 230), (150, 90, 230), (230, 90, 190))
JAW_COLOR = (240, 240, 240)
BASE_Y = 0.80  # arm bases on this line, fraction of the side
BASE_SPACING = 0.40  # between neighbouring arm bases, fraction of the side (two arms: x = 0.3, 0.7)


def _centre(emb: Embodiment) -> np.ndarray:
    return (np.asarray(emb.pos_lower) + np.asarray(emb.pos_upper)) / 2.0


@functools.lru_cache(maxsize=8)
def _bases(n_arms: int) -> tuple[float, ...]:
    return tuple(0.5 + (i - (n_arms - 1) / 2.0) * BASE_SPACING for i in range(n_arms))


def render_frame(action, embodiment: Embodiment, size: int = 64, supersample: int = 4) -> np.ndarray:
    """(D,) action -> (size, size, 3) uint8 RGB; a deterministic function of the action."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (embodiment.dof,):
        raise ValueError(f"render_frame: action shape {a.shape}, embodiment {embodiment.name!r} has {embodiment.dof} dims")
    centre = _centre(embodiment)
    s = size * supersample
    img = np.full((s, s, 3), 28, np.uint8)
    cv2.line(img, (0, int(BASE_Y * s)), (s, int(BASE_Y * s)), (70, 70, 70), max(1, s // 64))
    width = max(1, int(0.03 * s))
    for arm, bx in zip(embodiment.arms, _bases(len(embodiment.arms))):
        q = a[list(arm.joint_dims)] - centre[list(arm.joint_dims)]
        grip = None if arm.gripper_dim is None else a[arm.gripper_dim]
        _draw_arm(img, q, grip, (bx, BASE_Y), s, width, mirror=bx > 0.5)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _draw_arm(img, q, grip, base, s, width, mirror: bool):
    sign = -1.0 if mirror else 1.0
    x, y = base[0] * s, base[1] * s
    ang = 0.0
    for k in range(len(q)):
        ang += q[k]
        length = LINK_LENGTHS[k % len(LINK_LENGTHS)]
        nx, ny = x + sign * length * s * np.sin(ang), y - length * s * np.cos(ang)
        cv2.line(img, (int(x), int(y)), (int(nx), int(ny)), LINK_COLORS[k % len(LINK_COLORS)], width, cv2.LINE_AA)
        cv2.circle(img, (int(x), int(y)), max(1, int(0.7 * width)), (200, 200, 200), -1, cv2.LINE_AA)
        x, y = nx, ny
    if grip is None:
        return
    # Gripper: two jaws perpendicular to the last link, opening with the gripper value.
    ux, uy = sign * np.sin(ang), -np.cos(ang)
    px, py = -uy, ux
    half = (0.012 + 0.05 * float(np.clip(grip, 0.0, 1.0))) * s
    jaw = 0.05 * s
    for side in (-1, 1):
        bx, by = x + side * half * px, y + side * half * py
        cv2.line(img, (int(bx), int(by)), (int(bx + jaw * ux), int(by + jaw * uy)), JAW_COLOR, width, cv2.LINE_AA)
    cv2.line(img, (int(x - half * px), int(y - half * py)), (int(x + half * px), int(y + half * py)), JAW_COLOR, width, cv2.LINE_AA)


def synthetic_trajectory(n_frames: int, fps: float, rng: np.random.Generator, embodiment: Embodiment,
                         amplitude: float = 0.6) -> np.ndarray:
    """(n_frames, D) smooth joint trajectories inside the embodiment limits (grippers in [0, 1])."""
    emb = embodiment
    lo, hi, centre = np.asarray(emb.pos_lower), np.asarray(emb.pos_upper), _centre(emb)
    t = np.arange(n_frames) / fps
    out = np.empty((n_frames, emb.dof))
    for d in range(emb.dof):
        freqs = rng.uniform(0.1, 0.6, size=3)  # Hz: amplitude * 2 pi f stays under the speed limits
        phases = rng.uniform(0, 2 * np.pi, size=3)
        amps = rng.uniform(0.2, 1.0, size=3)
        wave = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0) / amps.sum()
        if emb.is_gripper[d]:
            out[:, d] = 0.5 + 0.5 * wave
        else:
            offset = rng.uniform(-0.3, 0.3)
            out[:, d] = centre[d] + offset + amplitude * wave
    return np.clip(out, lo, hi)


def synthetic_episode(embodiment: Embodiment, n_frames: int = 64, size: int = 64, fps: float = 16.0,
                      seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    q = synthetic_trajectory(n_frames, fps, rng, embodiment)
    frames = np.stack([render_frame(a, embodiment, size=size) for a in q])
    return Episode(frames=frames, qpos=q, action=q.copy(), fps=fps, instruction="synthetic stick-figure arms",
                   camera="cam_high", source=f"synthetic:{seed}", meta={"sim": True, "seed": seed})


def make_synthetic_dataset(out_dir, episodes: int = 24, frames: int = 64, size: int = 64, fps: float = 16.0,
                           seed: int = 0, progress: bool = True, *, embodiment: Embodiment) -> list[Path]:
    """Write `episodes` files `episode_XXXX.hdf5` under out_dir (each atomically)."""
    out_dir = Path(out_dir)
    paths = []
    for i in tqdm(range(episodes), desc="synthetic episodes", disable=not progress):
        ep = synthetic_episode(embodiment, frames, size, fps, seed=seed * 100003 + i)
        paths.append(write_episode(ep, out_dir / f"episode_{i:04d}.hdf5"))
    return paths


def run(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m eva_core.data.synthetic",
                                description="Write a synthetic stick-figure dataset (frames = f(joint angles)).")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--embodiment", default=DEFAULT_EMBODIMENT, help="name under config/ or a YAML path")
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--frames", type=int, default=64, help="frames per episode")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--seed", type=int, default=0)
    add_debug_arg(p)
    a = p.parse_args(argv)
    check_writable(a.out, kind="dir")
    paths = make_synthetic_dataset(a.out, a.episodes, a.frames, a.size, a.fps, a.seed,
                                   embodiment=load_embodiment(a.embodiment))
    print(f"wrote {len(paths)} episodes to {a.out}")
    return 0


def main(argv=None) -> int:
    return cli_main("eva_core.data.synthetic", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
