"""Hardware backends, chosen by name from the node YAML.

Two interfaces, LeRobot-style (an abstract base next to small concrete classes):
- `CameraSource` (camera.py): connect / read / close. Kinds: playback, synthetic, sim,
  realsense (`CAMERA_SOURCES`, or a "package.module:Class" name).
- `ArmBackend` (arm.py): connect / read_state / send_positions / estop / enable / close.
  Kinds: loopback, sim, piper (`ARM_BACKENDS`).
Every class has a nested `Options(Section)` dataclass (eva_core.config) and is built as
`Cls(embodiment, options)`; `make_arm` / `make_camera` validate the node's options dict with it,
so a misspelled or out-of-range backend option is a one-line ConfigError naming the key.
Classes are imported lazily, so an optional hardware SDK loads only when its backend is used.
"""

from __future__ import annotations

import importlib

from eva_core.config import ConfigError
from eva_ros.backends.arm import ArmBackend, ArmState, LoopbackArm, UnsafeCommandError
from eva_ros.backends.camera import CameraFrame, CameraSource, PlaybackSource, SyntheticSource

# name -> "module:Class"; imported lazily so optional hardware SDKs load only when used.
CAMERA_SOURCES = {
    "playback": "eva_ros.backends.camera:PlaybackSource",
    "synthetic": "eva_ros.backends.camera:SyntheticSource",
    "realsense": "eva_ros.backends.realsense:RealSenseSource",
    "sim": "eva_ros.backends.sim_camera:SimCameraSource",
}
ARM_BACKENDS = {
    "loopback": "eva_ros.backends.arm:LoopbackArm",
    "piper": "eva_ros.backends.piper:PiperArm",
    "twin_piper": "eva_ros.backends.twin_piper:TwinPiperArm",   # PiperArm + emulator on the physics twin
    "sim": "eva_ros.backends.sim_arm:SimArm",
}


def _resolve(kind: str, registry: dict, what: str, source: str = "", section: str = "", key: str = ""):
    target = registry.get(kind, kind if ":" in kind else None)
    if target is None:
        raise ConfigError(source, section, key, f"unknown {what} {kind!r}; known: {', '.join(sorted(registry))} "
                                               "(or 'package.module:Class')")
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what} {kind!r} -> {target} is not available: {exc}") from exc


def options_class(kind: str, registry: dict, what: str = "backend"):
    """The `Options` dataclass of a registered backend (imports its module)."""
    return _resolve(kind, registry, what).Options


def make_camera(kind: str, embodiment=None, options: dict | None = None, source: str = "", **runtime) -> CameraSource:
    """A camera source by registry name, its options checked by `Cls.Options` (section
    "camera.source_options"), e.g. make_camera("playback", emb, {"path": "x.mp4"})."""
    cls = _resolve(kind, CAMERA_SOURCES, "camera source", source, "camera", "source")
    opts = cls.Options.from_dict(options or {}, source=source or "<dict>", section="camera.source_options")
    return cls(embodiment, opts, **runtime)


def make_arm(kind: str, embodiment, options: dict | None = None, source: str = "", **runtime) -> ArmBackend:
    """An arm backend by registry name, its options checked by `Cls.Options` (section
    "controller.arm"), e.g. make_arm("loopback", emb, {}). `runtime` (e.g. clock=) goes to the
    constructor unchecked: objects for tests, not configuration."""
    cls = _resolve(kind, ARM_BACKENDS, "arm backend", source, "controller", "arm_backend")
    opts = cls.Options.from_dict(options or {}, source=source or "<dict>", section="controller.arm")
    return cls(embodiment, opts, **runtime)


__all__ = [
    "ArmBackend", "ArmState", "LoopbackArm", "UnsafeCommandError", "CameraFrame", "CameraSource", "PlaybackSource",
    "SyntheticSource", "CAMERA_SOURCES", "ARM_BACKENDS", "make_camera", "make_arm", "options_class",
]
