"""RecorderNode: listens to a running loop and keeps what a rollout video and plots need.

It subscribes to the camera, the generated chunks, the controller's commands and the chunk scores,
keeps a bounded, downsampled copy of each, and writes `rollout.mp4`, `actions.png` and
`scores.png` (atomically) when asked. It takes the Embodiment of the graph it records (command
names and limits); a message it cannot convert is counted in `dropped` and skipped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32
from trajectory_msgs.msg import JointTrajectory

from eva_core.atomic_io import atomic_path
from eva_core.embodiment import Embodiment
from eva_core.images import to_uint8
from eva_ros import names, qos
from eva_ros.conversions import from_time_msg, joint_values_to_action, msg_to_chunk, msg_to_image


def _guarded(fn):
    """A callback that skips (and counts) a message it cannot convert instead of raising into the executor."""
    def cb(self, msg):
        try:
            fn(self, msg)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            with self._lock:
                self.dropped += 1
            self.get_logger().warning(f"recorder: skipped a message: {e}", throttle_duration_sec=5.0)
    return cb


class RecorderNode(Node):
    def __init__(self, embodiment: Embodiment, camera_topic: str, video_fps: float = 10.0,
                 max_seconds: float = 600.0, node_name: str = "eva_recorder"):
        super().__init__(node_name)
        self.emb = embodiment
        self.video_fps = float(video_fps)
        n = int(max_seconds * video_fps)
        self.camera = deque(maxlen=n)            # (stamp, image)
        self.chunks = deque(maxlen=n)            # (stamp, chunk id, frames)
        self.commands = deque(maxlen=int(max_seconds * 200))  # (stamp, action)
        self.scores = deque(maxlen=n)            # (receive time, score)
        self.trajectories = deque(maxlen=n)      # (start stamp, end stamp, frame_id)
        self._lock = threading.Lock()
        self._last_cam = 0.0
        self.dropped = 0
        self.create_subscription(Image, camera_topic, self._on_camera, qos.IMAGE)
        self.create_subscription(Image, names.PLAN_FRAMES, self._on_chunk, qos.PLAN)
        self.create_subscription(JointState, names.CONTROLLER_COMMAND, self._on_command, qos.STATE)
        self.create_subscription(Float32, names.PLAN_SCORE, self._on_score, qos.DIAGNOSTICS)
        self.create_subscription(JointTrajectory, names.PLAN_TRAJECTORY, self._on_trajectory, qos.PLAN)

    # -- callbacks: copy and return --------------------------------------------------------
    @_guarded
    def _on_camera(self, msg: Image) -> None:
        stamp = from_time_msg(msg.header.stamp)
        if stamp - self._last_cam < 1.0 / self.video_fps:
            return
        self._last_cam = stamp
        with self._lock:
            self.camera.append((stamp, msg_to_image(msg)))

    @_guarded
    def _on_chunk(self, msg: Image) -> None:
        frames, meta = msg_to_chunk(msg)
        frames = to_uint8(frames)  # round + clip, like the planner
        with self._lock:
            self.chunks.append((from_time_msg(msg.header.stamp), meta.chunk_id, frames))

    @_guarded
    def _on_command(self, msg: JointState) -> None:
        a = joint_values_to_action(self.emb, msg.name, msg.position, names.CONTROLLER_COMMAND)
        with self._lock:
            self.commands.append((from_time_msg(msg.header.stamp), a))

    @_guarded
    def _on_score(self, msg: Float32) -> None:
        with self._lock:
            self.scores.append((time.time(), float(msg.data)))

    @_guarded
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        start = from_time_msg(msg.header.stamp)
        end = start + from_time_msg(msg.points[-1].time_from_start)
        with self._lock:
            self.trajectories.append((start, end, msg.header.frame_id))

    # -- outputs ---------------------------------------------------------------------------
    def counts(self) -> dict:
        with self._lock:
            return {"camera_frames": len(self.camera), "chunks": len(self.chunks),
                    "commands": len(self.commands), "scores": len(self.scores), "dropped": self.dropped}

    def snapshot(self) -> dict:
        """Copies of everything kept (lists of tuples, as stored)."""
        with self._lock:
            return {"camera": list(self.camera), "chunks": list(self.chunks), "commands": list(self.commands),
                    "scores": list(self.scores), "trajectories": list(self.trajectories), "dropped": self.dropped}

    def write_video(self, path: Path, height: int = 240) -> Path | None:
        """Camera view (left) beside the newest generated chunk at that time, played back (right)."""
        import imageio.v3 as iio

        with self._lock:
            cams, chunks = list(self.camera), list(self.chunks)
        out = video_frames(cams, chunks, height)
        if not out:
            return None
        with atomic_path(path, suffix=".mp4") as tmp:
            iio.imwrite(tmp, np.stack(out), fps=self.video_fps, codec="libx264")
        return path

    def write_plots(self, actions_path: Path, scores_path: Path) -> list[Path]:
        return write_plots(self.emb, self.snapshot(), actions_path, scores_path)


def video_frames(cams: list, chunks: list, height: int = 240, label: str = "") -> list[np.ndarray]:
    """Camera view (left) beside the newest generated chunk at that time, played back (right);
    `label` (task, episode, success) written on the camera view."""
    import cv2

    out, k = [], -1
    # the chunk panel's width/height; without chunks the camera's (the world model renders its size), so that
    # every episode's frames have one shape
    ref = chunks[0][2][0] if chunks else cams[0][1] if cams else np.zeros((height, height, 3), np.uint8)
    panel_w = _width(ref.shape, height)
    cam_w = _width(cams[0][1].shape, height) if cams else panel_w
    for i, (stamp, img) in enumerate(cams):
        while k + 1 < len(chunks) and chunks[k + 1][0] <= stamp:
            k += 1
        left = cv2.resize(img, (cam_w, height))   # one size for the whole video, whatever a frame's
        if k >= 0:
            frames = chunks[k][2]
            f = frames[i % len(frames)]
            right = cv2.resize(f, (panel_w, height), interpolation=cv2.INTER_NEAREST)
            cv2.putText(right, f"plan {chunks[k][1]}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
        else:
            right = np.zeros((height, panel_w, 3), np.uint8)
        if label:
            cv2.putText(left, label, (4, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        frame = np.concatenate([left, right], axis=1)
        out.append(frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2])  # even size for H.264
    return out


def _width(shape: tuple, height: int) -> int:
    """Width of an (H, W, ...) image scaled to `height`, rounded once."""
    return max(1, round(shape[1] * height / shape[0]))


def write_plots(emb: Embodiment, snap: dict, actions_path: Path, scores_path: Path | None) -> list[Path]:
    """actions.png (the commanded action curves with their limits) and scores.png from a snapshot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eva_core.reward.plots import plot_action_curves

    written = []
    cmds, scores = snap["commands"], snap["scores"]
    if cmds:
        t = np.array([c[0] for c in cmds])
        a = np.stack([c[1] for c in cmds])
        rate = (len(t) - 1) / max(t[-1] - t[0], 1e-9)
        fig = plot_action_curves(a, actions_path, fps=rate, names=emb.joint_names,
                                 lower=emb.pos_lower, upper=emb.pos_upper,
                                 title="commanded actions (after the safety filter)")
        plt.close(fig)
        written.append(actions_path)
    if scores and scores_path is not None:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        t0 = scores[0][0]
        ax.plot([s[0] - t0 for s in scores], [s[1] for s in scores], "o-", ms=3)
        ax.set_xlabel("time [s]")
        ax.set_ylabel("executability reward")
        ax.set_ylim(0, 10.5)
        fig.tight_layout()
        with atomic_path(scores_path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        written.append(scores_path)
    return written
