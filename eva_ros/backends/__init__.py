"""Hardware backends, chosen by name from the node YAML.

Two interfaces, LeRobot-style (an abstract base next to small concrete classes):
- `CameraSource` (camera.py): connect / read / close. Kinds: playback, synthetic, sim;
  realsense is registered for a later issue. A new source is a line in `CAMERA_SOURCES` (or
  a "package.module:Class" name).
- `ArmBackend` (arm.py): connect / read_state / send_positions / estop / enable / close.
  Kinds: loopback, sim; piper is registered for a later issue (`ARM_BACKENDS`).
"""

from __future__ import annotations

import importlib

from eva_ros.backends.arm import ArmBackend, ArmState, LoopbackArm, UnsafeCommandError
from eva_ros.backends.camera import CameraFrame, CameraSource, PlaybackSource, SyntheticSource

# name -> "module:Class"; imported lazily so optional hardware SDKs load only when used.
CAMERA_SOURCES = {
    "playback": "eva_ros.backends.camera:PlaybackSource",
    "synthetic": "eva_ros.backends.camera:SyntheticSource",
    "realsense": "eva_ros.backends.realsense:RealSenseSource",   # later issue
    "sim": "eva_ros.backends.sim_camera:SimCameraSource",
}
ARM_BACKENDS = {
    "loopback": "eva_ros.backends.arm:LoopbackArm",
    "piper": "eva_ros.backends.piper:PiperArm",                  # later issue
    "sim": "eva_ros.backends.sim_arm:SimArm",
}


def _resolve(kind: str, registry: dict, what: str):
    target = registry.get(kind, kind if ":" in kind else None)
    if target is None:
        raise ValueError(f"unknown {what} {kind!r}; known: {sorted(registry)} (or 'package.module:Class')")
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what} {kind!r} -> {target} is not available: {exc}") from exc


def make_camera(kind: str, **options) -> CameraSource:
    """Build a camera source by registry name, e.g. make_camera("playback", path="x.mp4")."""
    return _resolve(kind, CAMERA_SOURCES, "camera source")(**options)


def make_arm(kind: str, embodiment, **options) -> ArmBackend:
    """Build an arm backend by registry name, e.g. make_arm("loopback", emb)."""
    return _resolve(kind, ARM_BACKENDS, "arm backend")(embodiment, **options)


__all__ = [
    "ArmBackend", "ArmState", "LoopbackArm", "UnsafeCommandError", "CameraFrame", "CameraSource", "PlaybackSource",
    "SyntheticSource", "CAMERA_SOURCES", "ARM_BACKENDS", "make_camera", "make_arm",
]
