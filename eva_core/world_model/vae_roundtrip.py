"""Episodes whose frames went through the world model's VAE: encode + decode, as the planner's frames do.

The IDM reads the world model's decoded frames in the closed loop, but learns from camera frames.
A small VAE changes the arm's pixels on the way (blur, shifted edges), and an IDM that never saw
that misreads the pose. Training it on both the camera frames and their VAE round trips closes the
gap (docs/toy_eva.md). Each episode is cut, at the world model's frame rate, into the clips the
world model decodes (`clip_frames` frames; every `step`-th camera frame, one pass per phase), so a
frame is round-tripped at the place in a clip where the planner would decode it.

    roundtrip_episodes(vae, src_dir, dst_dir, clip_frames=9, step=2)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from eva_core.data.video_clips import fit_frames
from eva_core.world_model.encoders import vae_decode, vae_encode, video_to_frames

IMAGES_GROUP = "observations/images"


def roundtrip_clip(vae, frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the same frames after the VAE's encode (posterior mode) and decode, the
    world model's own conversions (eva_core.world_model.encoders)."""
    h, w = frames.shape[1:3]
    return video_to_frames(vae_decode(vae, vae_encode(vae, fit_frames(frames, h, w)[None]))[0])


def roundtrip_frames(vae, frames: np.ndarray, clip_frames: int, step: int) -> np.ndarray:
    """Every frame of a (T, H, W, 3) video, round-tripped inside clips of `clip_frames` frames taken
    every `step` frames (a last short clip is padded with its last frame, as the VAE needs 1 + 4k)."""
    if clip_frames < 1 or (clip_frames - 1) % 4:
        raise ValueError(f"clip_frames must be 1 + 4k, got {clip_frames}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    out = np.empty_like(frames)
    for phase in range(min(step, len(frames))):
        idx = np.arange(phase, len(frames), step)
        for s in range(0, len(idx), clip_frames):
            w = idx[s:s + clip_frames]
            padded = np.concatenate([w, np.repeat(w[-1:], clip_frames - len(w))])
            out[w] = roundtrip_clip(vae, frames[padded])[:len(w)]
    return out


def roundtrip_episodes(vae, src: Path, dst: Path, clip_frames: int, fps: float, camera: str | None = None) -> list[Path]:
    """Copy every episode .hdf5 of `src` to `dst` (`<name>_vae.hdf5`) with its camera frames
    round-tripped; actions, joint states and attributes are the source's. The world model runs at
    `fps`; each copy is written beside its final name and renamed, with the source's path in its
    `derived_from` attribute. Returns the written files."""
    src, dst = Path(src), Path(dst)
    files = sorted(src.glob("*.hdf5"))
    if not files:
        raise ValueError(f"{src}: no episode .hdf5 files")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        target = dst / f"{f.stem}_vae.hdf5"
        if target.exists():
            raise FileExistsError(f"{target}: exists (round trips are never overwritten)")
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        shutil.copyfile(f, tmp)
        try:
            with h5py.File(tmp, "r+") as h:
                h.attrs["derived_from"] = str(f.resolve())   # the IDM's split keeps the two together
                group = h[IMAGES_GROUP]
                cams = [camera] if camera else list(group.keys())
                ep_fps = float(h.attrs.get("fps", fps))
                step = max(1, int(round(ep_fps / fps)))
                for cam in cams:
                    if cam not in group:
                        raise KeyError(f"{f}: {IMAGES_GROUP}/{cam}: missing")
                    d = group[cam]
                    if d.ndim != 4 or d.dtype != np.uint8 or d.shape[-1] != 3:
                        raise ValueError(f"{f}: {IMAGES_GROUP}/{cam}: needs raw (N, H, W, 3) uint8 frames, "
                                         f"got {d.shape} {d.dtype} (JPEG-compressed episodes are not supported)")
                    d[...] = roundtrip_frames(vae, d[()], clip_frames, step)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return written
