"""Message <-> numpy conversions and the chunk encoding on /eva/plan/frames.

Images: `msg.data = arr.tobytes()` (never the ndarray itself: 0.2 ms vs 54 ms for 640x480).

Chunk encoding (one sensor_msgs/Image per generated chunk, standard messages only):
- the T frames (H, W, 3) are stacked along the height: `height = T*H`, `width = W`; frame i is
  rows [i*H, (i+1)*H). `encoding` is "rgb8" (uint8) or "32FC3" (float32 in [0, 1]).
- `header.stamp` = capture time of the observation the chunk was generated from; frame 0 of the
  chunk (and point 0 of the trajectory decoded from it) belongs to that instant.
- `header.frame_id` = "eva_chunk:" + ";"-separated key=value metadata:
  `id` (int chunk id), `frames` (2 <= T <= 1000), `fps` (frame rate of the chunk, (0, 1000]), `n_exec`
  (actions the planner asks to execute, 1..T-1, with n_exec/fps <= 30 s), `t_plan` (optional:
  publish time, s since epoch; for latency accounting). Unknown keys are ignored. The values are
  parsed into a typed `eva_core.chunk_decoding.ChunkMeta`; a bad one is a ValueError naming the
  topic and the field, e.g. "/eva/plan/frames: header.frame_id: fps: must be in (0, 1000], got 0.0".
JointTrajectory from idm_action_node: `header.stamp` = the chunk's observation time (time of
point 0), `header.frame_id` = "eva_traj:id=<chunk id>;t_traj=<publish time>;score=<reward>"
(`TrajectoryMeta`; every key optional, a frame_id without the prefix means no metadata).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from eva_core.chunk_decoding import ChunkMeta

CHUNK_PREFIX = "eva_chunk:"
TRAJ_PREFIX = "eva_traj:"

_ENCODINGS = {  # encoding -> (dtype, channels, RGB channel order?)
    "rgb8": (np.uint8, 3, True),
    "bgr8": (np.uint8, 3, False),
    "32FC3": (np.float32, 3, True),
}


# ---- time -----------------------------------------------------------------------------------
def _sec_nanosec(t: float) -> dict:
    """Seconds -> the sec/nanosec fields shared by Time and Duration."""
    sec = math.floor(t)
    return {"sec": int(sec), "nanosec": min(int(round((t - sec) * 1e9)), 999_999_999)}


def to_time_msg(t: float) -> Time:
    return Time(**_sec_nanosec(t))


def to_duration_msg(t: float) -> Duration:
    return Duration(**_sec_nanosec(t))


def from_time_msg(msg: Time | Duration) -> float:
    """Seconds of a Time or a Duration message."""
    return msg.sec + msg.nanosec * 1e-9


from_duration_msg = from_time_msg


# ---- images ---------------------------------------------------------------------------------
def image_to_msg(img: np.ndarray, stamp: float, frame_id: str = "") -> Image:
    """(H, W, 3) uint8 RGB -> rgb8 Image; float32 -> 32FC3."""
    img = np.ascontiguousarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image_to_msg: expected (H, W, 3), got {img.shape}")
    if img.dtype == np.uint8:
        encoding = "rgb8"
    elif img.dtype in (np.float32, np.float64):
        img, encoding = img.astype(np.float32, copy=False), "32FC3"
    else:
        raise ValueError(f"image_to_msg: unsupported dtype {img.dtype}")
    msg = Image()
    msg.header.stamp = to_time_msg(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = img.shape[0], img.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = img.shape[1] * img.strides[1]
    msg.data = img.tobytes()
    return msg


def msg_to_image(msg: Image, topic: str = "image") -> np.ndarray:
    """Image -> (H, W, 3) RGB array (uint8 or float32). Raises ValueError naming the topic."""
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f"{topic}: unsupported encoding {msg.encoding!r} (use {sorted(_ENCODINGS)})")
    dtype, ch, rgb = _ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    if msg.height == 0 or msg.width == 0:
        raise ValueError(f"{topic}: empty image ({msg.height}x{msg.width})")
    if msg.is_bigendian and itemsize > 1:
        raise ValueError(f"{topic}: is_bigendian: big-endian {msg.encoding} data unsupported")
    if msg.step != msg.width * ch * itemsize:
        raise ValueError(f"{topic}: step {msg.step} != width*{ch}*{itemsize} (padded rows unsupported)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != msg.height * msg.step:
        raise ValueError(f"{topic}: {data.size} data bytes, expected {msg.height * msg.step}")
    img = data.view(dtype).reshape(msg.height, msg.width, ch)
    return img if rgb else img[..., ::-1]


def bytes_per_pixel(encoding: str) -> int:
    """Bytes per pixel of a supported encoding (3 for an unsupported one: msg_to_image refuses it)."""
    dtype, ch, _ = _ENCODINGS.get(encoding, (np.uint8, 3, True))
    return np.dtype(dtype).itemsize * ch


def image_is_finite(img: np.ndarray) -> bool:
    return img.dtype == np.uint8 or bool(np.isfinite(img).all())


# ---- chunk of generated frames --------------------------------------------------------------
def encode_meta(prefix: str, meta: dict) -> str:
    return prefix + ";".join(f"{k}={v}" for k, v in meta.items())


def decode_meta(prefix: str, text: str) -> dict:
    if not text.startswith(prefix):
        raise ValueError(f"frame_id {text!r} does not start with {prefix!r}")
    out = {}
    for item in filter(None, text[len(prefix):].split(";")):
        key, _, value = item.partition("=")
        out[key] = value
    return out


def chunk_to_msg(frames: np.ndarray, stamp: float, chunk_id: int, fps: float, n_exec: int,
                 t_plan: float, anchor: str = "observation") -> Image:
    """(T, H, W, 3) frames -> one Image with the frames stacked along the height.
    The metadata is checked like a received chunk's (ValueError on a bad value)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"chunk_to_msg: expected (T, H, W, 3), got {frames.shape}")
    t, h, w, _ = frames.shape
    meta = ChunkMeta(chunk_id=int(chunk_id), frames=t, fps=float(fps), n_exec=int(n_exec), stamp=float(stamp),
                     t_plan=float(t_plan), anchor=anchor)
    return image_to_msg(frames.reshape(t * h, w, 3), stamp, encode_meta(CHUNK_PREFIX, meta.to_fields()))


def msg_to_chunk(msg: Image, topic: str = "/eva/plan/frames") -> tuple[np.ndarray, ChunkMeta]:
    """Image -> ((T, H, W, 3) frames, typed ChunkMeta). ValueError naming the topic and field."""
    try:
        meta = ChunkMeta.from_fields(decode_meta(CHUNK_PREFIX, msg.header.frame_id), from_time_msg(msg.header.stamp))
    except ValueError as exc:
        raise ValueError(f"{topic}: header.frame_id: {exc}") from None
    img = msg_to_image(msg, topic)
    t = meta.frames
    if img.shape[0] % t:
        raise ValueError(f"{topic}: height {img.shape[0]} is not a multiple of frames={t}")
    return img.reshape(t, img.shape[0] // t, img.shape[1], 3), meta


@dataclass(frozen=True)
class TrajectoryMeta:
    """Typed `eva_traj:` metadata of a JointTrajectory (defaults: not given)."""
    chunk_id: int = -1
    t_traj: float | None = None   # publish time of the trajectory
    score: float | None = None    # executability reward of its chunk

    def to_frame_id(self) -> str:
        fields = {"id": self.chunk_id}
        if self.t_traj is not None:
            fields["t_traj"] = f"{self.t_traj:.6f}"
        if self.score is not None:
            fields["score"] = f"{self.score:.4f}"
        return encode_meta(TRAJ_PREFIX, fields)


def trajectory_meta(msg: JointTrajectory, topic: str = "/eva/plan/trajectory") -> TrajectoryMeta:
    """The typed metadata of a trajectory; ValueError naming the topic and field on a bad value."""
    text = msg.header.frame_id
    if not text.startswith(TRAJ_PREFIX):
        return TrajectoryMeta()
    raw = decode_meta(TRAJ_PREFIX, text)
    out = {}
    for key, field, conv in (("id", "chunk_id", int), ("t_traj", "t_traj", float), ("score", "score", float)):
        if key not in raw:
            continue
        try:
            value = conv(raw[key])
        except ValueError:
            raise ValueError(f"{topic}: header.frame_id: {key}: not a{'n integer' if conv is int else ' number'}: "
                             f"{raw[key]!r}") from None
        if conv is float and not math.isfinite(value):
            raise ValueError(f"{topic}: header.frame_id: {key}: must be finite, got {raw[key]!r}")
        out[field] = value
    return TrajectoryMeta(**out)


# ---- joint states and trajectories ----------------------------------------------------------
def joint_state_msg(names, positions, velocities, stamp: float) -> JointState:
    msg = JointState()
    msg.header.stamp = to_time_msg(stamp)
    msg.name = list(names)
    msg.position = [float(x) for x in positions]
    msg.velocity = [float(x) for x in velocities]
    return msg


def ordered(names_in, values, names_out, topic: str, field: str = "values") -> np.ndarray:
    """Reorder `values` given for `names_in` into `names_out` order. A missing, unknown or
    duplicated name is a ValueError naming the topic and the joint (as ros2_controllers' JTC
    rejects joints it does not own; with a duplicate, which value wins would be undefined)."""
    index = {n: i for i, n in enumerate(names_in)}
    if len(index) != len(names_in):
        twice = sorted({n for n in names_in if list(names_in).count(n) > 1})
        raise ValueError(f"{topic}: joints listed twice: {twice}")
    missing = [n for n in names_out if n not in index]
    if missing:
        raise ValueError(f"{topic}: missing joints {missing}")
    unknown = [n for n in names_in if n not in set(names_out)]
    if unknown:
        raise ValueError(f"{topic}: unknown joints {unknown} (known: {list(names_out)})")
    values = np.asarray(values, dtype=float)
    if values.ndim == 0 or values.shape[-1] != len(names_in):
        raise ValueError(f"{topic}: {field}: {values.shape[-1] if values.ndim else 0} values for "
                         f"{len(names_in)} names")
    return values[..., [index[n] for n in names_out]]


def joint_values_to_action(emb, names, values, topic: str, field: str = "position") -> np.ndarray:
    """JointState-style values (any name order, /joint_states units) -> `emb`'s action vector.
    ValueError naming the topic and field for missing joints, a length mismatch or NaN/inf."""
    a = ordered(names, values, emb.joint_names, topic, field)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{topic}: {field}: NaN/inf values")
    return emb.joint_positions_to_action(a)


def trajectory_to_msg(names, positions: np.ndarray, dt: float, stamp: float, frame_id: str,
                      velocities: np.ndarray | None = None) -> JointTrajectory:
    """(N, dof) positions at spacing dt (point i at i*dt after `stamp`) -> JointTrajectory."""
    msg = JointTrajectory()
    msg.header.stamp = to_time_msg(stamp)
    msg.header.frame_id = frame_id
    msg.joint_names = list(names)
    for i, q in enumerate(np.asarray(positions, dtype=float)):
        p = JointTrajectoryPoint()
        p.positions = q.tolist()
        if velocities is not None:
            p.velocities = np.asarray(velocities[i], dtype=float).tolist()
        p.time_from_start = to_duration_msg(i * dt)
        msg.points.append(p)
    return msg


def trajectory_end(msg: JointTrajectory, topic: str = "/eva/plan/trajectory") -> float:
    """When the trajectory's last point runs: header.stamp + its time_from_start (s)."""
    if not msg.points:
        raise ValueError(f"{topic}: trajectory has no points")
    return from_time_msg(msg.header.stamp) + from_duration_msg(msg.points[-1].time_from_start)


def msg_to_trajectory(msg: JointTrajectory, names, topic: str = "/eva/plan/trajectory"):
    """JointTrajectory -> (stamp, times (N,), positions (N, dof) in `names` order)."""
    if not msg.points:
        raise ValueError(f"{topic}: trajectory has no points")
    n = len(msg.joint_names)
    for k, p in enumerate(msg.points):
        if len(p.positions) != n:
            raise ValueError(f"{topic}: points[{k}].positions: {len(p.positions)} values for {n} joint_names")
    times = np.array([from_duration_msg(p.time_from_start) for p in msg.points])
    pos = np.array([list(p.positions) for p in msg.points], dtype=float).reshape(len(msg.points), n)
    if np.any(np.diff(times) <= 0):
        raise ValueError(f"{topic}: points[].time_from_start must increase strictly")
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        raise ValueError(f"{topic}: points[{bad[0]}].positions: NaN/inf ({bad.size} points)")
    return from_time_msg(msg.header.stamp), times, ordered(msg.joint_names, pos, names, topic, "positions")
