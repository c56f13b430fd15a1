"""Episode: one demonstration, the type every reader returns and every consumer takes.

    frames       (N, H, W, 3) uint8 RGB of the primary camera (== cameras[camera]), N >= 1
    qpos         (N, D) measured joint positions, the embodiment's action layout (rad; grippers in [0, 1])
    action       (N, D) commanded positions (ALOHA: master arms; RoboTwin: joint_action)
    fps          frames per second
    instruction  the language instruction ("" if unknown)
    cameras      {name: (N, H, W, 3) uint8} every camera, including the primary one
"""

from __future__ import annotations

from dataclasses import dataclass, field

import math

import numpy as np
import torch

from eva_core.images import check_image


@dataclass
class Episode:
    frames: np.ndarray
    qpos: np.ndarray
    action: np.ndarray
    fps: float
    instruction: str = ""
    camera: str = "cam_high"
    cameras: dict = field(default_factory=dict)
    qvel: np.ndarray | None = None
    effort: np.ndarray | None = None
    source: str = ""  # file it came from (for error messages)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        where = self.source or "Episode"
        self.frames = np.asarray(self.frames)
        self.qpos = np.asarray(self.qpos, dtype=np.float64)
        self.action = np.asarray(self.action, dtype=np.float64)
        if not self.cameras:
            self.cameras = {self.camera: self.frames}
        elif self.camera not in self.cameras:
            raise ValueError(f"{where}: primary camera {self.camera!r} not in cameras {list(self.cameras)}")
        else:
            self.cameras[self.camera] = self.frames
        n = len(self.frames)
        if n == 0:
            raise ValueError(f"{where}: episode has no frames")
        for name, img in self.cameras.items():
            img = np.asarray(img)
            if img.ndim != 4:
                raise ValueError(f"{where}: camera {name!r} must be (N, H, W, 3), got shape {img.shape}")
            self.cameras[name] = img = check_image(img, f"{where}: camera {name!r}")
            if name == self.camera:
                self.frames = img
            if len(img) != n:
                raise ValueError(f"{where}: camera {name!r} has {len(img)} frames, primary has {n}")
        for key in ("qpos", "action", "qvel", "effort"):
            arr = getattr(self, key)
            if arr is None:
                continue
            if arr.ndim != 2 or len(arr) != n:
                raise ValueError(f"{where}: {key} must be (N={n}, D), got {arr.shape}")
        if self.qpos.shape != self.action.shape:
            raise ValueError(f"{where}: qpos {self.qpos.shape} and action {self.action.shape} differ")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"{where}: fps must be > 0, got {self.fps}")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self.cameras)

    def video_tensor(self, camera: str | None = None) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1], the IDM's input format."""
        img = self.cameras[camera or self.camera]
        return torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float().div_(255.0)


def limits_problem(episode: Episode, embodiment, tolerance: float) -> str:
    """"" if `qpos` and `action` lie within the embodiment's position limits widened by
    `tolerance` (rad; grippers in normalised units), else one line naming the dataset, the frame,
    the joint and the value (a robot-side loader checks data against the URDF limits: one episode
    with 1e9 rad would set the normalisation and the loss)."""
    lo, hi = embodiment.pos_lower - tolerance, embodiment.pos_upper + tolerance
    for key in ("qpos", "action"):
        a = getattr(episode, key)
        if a.shape[1] != embodiment.dof:
            continue   # a dims mismatch is reported by the caller
        bad = ~((a >= lo) & (a <= hi))
        if bad.any():
            t, j = np.argwhere(bad)[0]
            return (f"'{key}' frame {t}, {embodiment.joint_names[j]} = {a[t, j]:.6g} lies outside the limits "
                    f"[{embodiment.pos_lower[j]:.6g}, {embodiment.pos_upper[j]:.6g}] of embodiment "
                    f"{embodiment.name!r} by more than {tolerance:g} ({int(bad.any(axis=1).sum())} frames)")
    return ""
