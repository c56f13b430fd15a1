"""A synthetic bimanual dataset whose frames are a known function of the 14 joint values.

Each arm is drawn as a planar 6-link stick figure: link k points at the cumulative angle of
joints 1..k (measured from "up", relative to the middle of each joint's range), and the gripper
is two jaws whose opening is the gripper value. The right arm is the mirror image of the left, so
flipping a frame horizontally equals rendering the action with the arms swapped (the IDM
training flip relies on that). Joint trajectories are smooth sums of sines within the limits.

    python -m eva_core.data.synthetic --out runs/synth --episodes 24 --frames 64
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from eva_core.data.episode import Episode
from eva_core.data.hdf5_io import write_episode
from eva_core.embodiment import load_embodiment

LINK_LENGTHS = (0.15, 0.12, 0.10, 0.08, 0.07, 0.06)  # fraction of the image side
LINK_COLORS = ((230, 80, 60), (240, 170, 40), (90, 200, 80), (60, 170, 230), (150, 90, 230), (230, 90, 190))
JAW_COLOR = (240, 240, 240)
BASES = ((0.30, 0.80), (0.70, 0.80))  # (x, y) of the left and right arm base, fraction of the side


@functools.lru_cache(maxsize=1)
def _embodiment():
    """The default embodiment, parsed once (YAML + URDF cost ~20x the drawing of a frame)."""
    return load_embodiment()


def _centre(emb) -> np.ndarray:
    return (np.asarray(emb.pos_lower) + np.asarray(emb.pos_upper)) / 2.0


def render_frame(action, size: int = 64, supersample: int = 4, centre=None) -> np.ndarray:
    """(14,) action -> (size, size, 3) uint8 RGB; a deterministic function of the action."""
    a = np.asarray(action, dtype=np.float64)
    centre = _centre(_embodiment()) if centre is None else centre
    s = size * supersample
    img = np.full((s, s, 3), 28, np.uint8)
    cv2.line(img, (0, int(0.8 * s)), (s, int(0.8 * s)), (70, 70, 70), max(1, s // 64))
    width = max(1, int(0.03 * s))
    _draw_arm(img, a[:7] - np.append(centre[:6], 0.0), a[6], BASES[0], s, width, mirror=False)
    _draw_arm(img, a[7:] - np.append(centre[7:13], 0.0), a[13], BASES[1], s, width, mirror=True)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _draw_arm(img, q, grip, base, s, width, mirror: bool):
    sign = -1.0 if mirror else 1.0
    x, y = base[0] * s, base[1] * s
    ang = 0.0
    for k in range(6):
        ang += q[k]
        nx, ny = x + sign * LINK_LENGTHS[k] * s * np.sin(ang), y - LINK_LENGTHS[k] * s * np.cos(ang)
        cv2.line(img, (int(x), int(y)), (int(nx), int(ny)), LINK_COLORS[k], width, cv2.LINE_AA)
        cv2.circle(img, (int(x), int(y)), max(1, int(0.7 * width)), (200, 200, 200), -1, cv2.LINE_AA)
        x, y = nx, ny
    # Gripper: two jaws perpendicular to the last link, opening with the gripper value.
    ux, uy = sign * np.sin(ang), -np.cos(ang)
    px, py = -uy, ux
    half = (0.012 + 0.05 * float(np.clip(grip, 0.0, 1.0))) * s
    jaw = 0.05 * s
    for side in (-1, 1):
        bx, by = x + side * half * px, y + side * half * py
        cv2.line(img, (int(bx), int(by)), (int(bx + jaw * ux), int(by + jaw * uy)), JAW_COLOR, width, cv2.LINE_AA)
    cv2.line(img, (int(x - half * px), int(y - half * py)), (int(x + half * px), int(y + half * py)), JAW_COLOR, width, cv2.LINE_AA)


def synthetic_trajectory(n_frames: int, fps: float, rng: np.random.Generator, amplitude: float = 0.6) -> np.ndarray:
    """(n_frames, 14) smooth joint trajectories inside the embodiment limits (grippers in [0, 1])."""
    emb = _embodiment()
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


def synthetic_episode(n_frames: int = 64, size: int = 64, fps: float = 16.0, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    q = synthetic_trajectory(n_frames, fps, rng)
    frames = np.stack([render_frame(a, size=size) for a in q])
    return Episode(frames=frames, qpos=q, action=q.copy(), fps=fps, instruction="synthetic stick-figure arms",
                   camera="cam_high", source=f"synthetic:{seed}", meta={"sim": True, "seed": seed})


def make_synthetic_dataset(out_dir, episodes: int = 24, frames: int = 64, size: int = 64, fps: float = 16.0,
                           seed: int = 0, progress: bool = True) -> list[Path]:
    """Write `episodes` files `episode_XXXX.hdf5` under out_dir (each atomically)."""
    out_dir = Path(out_dir)
    paths = []
    for i in tqdm(range(episodes), desc="synthetic episodes", disable=not progress):
        ep = synthetic_episode(frames, size, fps, seed=seed * 100003 + i)
        paths.append(write_episode(ep, out_dir / f"episode_{i:04d}.hdf5"))
    return paths


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Write a synthetic stick-figure dataset (frames = f(joint angles)).")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--frames", type=int, default=64, help="frames per episode")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    paths = make_synthetic_dataset(a.out, a.episodes, a.frames, a.size, a.fps, a.seed)
    print(f"wrote {len(paths)} episodes to {a.out}")


if __name__ == "__main__":
    main()
