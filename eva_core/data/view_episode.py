"""eva-view-episode: an mp4 of an episode's cameras beside its joint curves, to look at data before
training on it.

    eva-view-episode data/sim/pick_block/episode_0.hdf5 [--out view.mp4] [--height 240]
    eva-view-episode datasets/my_lerobot_v3 --episode 3 [--camera cam_high]

Left: every camera of the file side by side (resized to --height). Right: one panel per arm with
the measured joints (qpos, solid) and the action (dashed) over the whole episode, and a cursor
at the current frame. Any episode eva_core reads (ALOHA / Cobot Magic, ours, RoboTwin, an episode
of a LeRobot v3.0 dataset root). The video is written atomically (default: the episode's path
with .mp4; for a LeRobot episode <root>_episode_N.mp4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from eva_core.cli import UserError, add_debug_arg, add_overwrite_arg, check_writable, cli_main


def _arm_groups(dof: int, embodiment) -> list[tuple[str, list[int], list[str]]]:
    if embodiment is not None and embodiment.dof == dof and embodiment.arms:
        return [(a.name, list(a.dims), [embodiment.joint_names[d] for d in a.dims]) for a in embodiment.arms]
    return [("dims", list(range(dof)), [str(d) for d in range(dof)])]


def curves_panel(qpos: np.ndarray, action: np.ndarray, fps: float, height: int, embodiment=None):
    """(RGB image of the curves, function time -> cursor x pixel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _arm_groups(qpos.shape[1], embodiment)
    t = np.arange(len(qpos)) / fps
    dpi = 100
    fig, axes = plt.subplots(len(groups), 1, figsize=(6.4, max(height, 120 * len(groups)) / dpi), dpi=dpi,
                             sharex=True, squeeze=False)
    for ax, (name, dims, labels) in zip(axes[:, 0], groups):
        for k, (d, label) in enumerate(zip(dims, labels)):
            color = plt.cm.tab10(k % 10)
            ax.plot(t, qpos[:, d], color=color, lw=1.0, label=label)
            ax.plot(t, action[:, d], color=color, lw=0.8, ls="--")
        ax.set_ylabel(name, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("time [s] (solid: qpos, dashed: action)", fontsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    ax0 = axes[0, 0]

    def x_of(ts: float) -> int:
        return int(round(ax0.transData.transform((ts, 0.0))[0]))

    plt.close(fig)
    return img, x_of


def render_frames(episode, height: int = 240, embodiment=None):
    """Yield the video frames (H, W, 3) uint8."""
    import cv2

    panel, x_of = curves_panel(episode.qpos, episode.action, episode.fps, height, embodiment)
    scale = height / panel.shape[0]
    panel = cv2.resize(panel, (int(panel.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
    for i in range(len(episode)):
        views = []
        for cam, imgs in episode.cameras.items():
            im = imgs[i]
            im = cv2.resize(im, (max(2, int(im.shape[1] * height / im.shape[0])), height))
            cv2.putText(im, cam, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
            views.append(im)
        right = panel.copy()
        x = int(x_of(i / episode.fps) * scale)
        cv2.line(right, (x, 0), (x, height - 1), (220, 30, 30), 1)
        frame = np.concatenate([*views, right], axis=1)
        yield np.ascontiguousarray(frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2])  # even for H.264


def write_view(episode, out: Path, height: int = 240, embodiment=None) -> Path:
    import imageio.v3 as iio
    from tqdm import tqdm

    from eva_core.atomic_io import atomic_path

    frames = list(tqdm(render_frames(episode, height, embodiment), total=len(episode), desc="frames", unit="f"))
    with atomic_path(out, suffix=".mp4") as tmp:
        iio.imwrite(tmp, np.stack(frames), fps=episode.fps, codec="libx264")
    return out


def run(argv) -> int:
    ap = argparse.ArgumentParser(prog="eva-view-episode", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("episode", type=Path, help="episode HDF5 file, or a LeRobot v3.0 dataset root")
    ap.add_argument("--episode", dest="index", type=int, default=0,
                    help="episode of a LeRobot dataset (position in its episodes table, default 0)")
    ap.add_argument("--camera", default=None, help="primary camera, a name or a LeRobot key (default: the file's)")
    ap.add_argument("--out", type=Path, default=None, help="mp4 to write (default: the episode path with .mp4)")
    ap.add_argument("--height", type=int, default=240, help="video height in pixels (default 240)")
    ap.add_argument("--embodiment", default=None, help="for the joint names (default: the default one)")
    add_overwrite_arg(ap)
    add_debug_arg(ap)
    args = ap.parse_args(argv)
    if not 32 <= args.height <= 2160:
        raise ValueError(f"--height must be in [32, 2160], got {args.height}")
    from eva_core.data.lerobot_format import is_lerobot_root
    from eva_core.data.load import EpisodeRef, lerobot_dataset, read_ref
    from eva_core.embodiment import load_embodiment

    emb = load_embodiment(args.embodiment) if args.embodiment else load_embodiment()
    if is_lerobot_root(args.episode):
        n = len(lerobot_dataset(args.episode, emb))
        if not 0 <= args.index < n:
            raise UserError(f"{args.episode}: --episode {args.index} is not in [0, {n})")
        ref = EpisodeRef(args.episode, args.index)
        default_out = Path(f"{args.episode}_episode_{args.index}.mp4")
    elif args.episode.is_file():
        ref, default_out = EpisodeRef(args.episode), args.episode.with_suffix(".mp4")
    else:
        raise UserError(f"{args.episode}: no such episode file")
    out = args.out or default_out
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out}: exists; pass --overwrite to replace it")
    check_writable(out)
    episode = read_ref(ref, camera=args.camera, embodiment=emb)
    write_view(episode, out, args.height, emb)
    print(f"eva-view-episode: wrote {out} ({len(episode)} frames at {episode.fps:.1f} fps)")
    return 0


def main(argv=None) -> int:
    return cli_main("eva-view-episode", run, argv)


if __name__ == "__main__":
    sys.exit(main())
