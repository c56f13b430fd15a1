"""`SimCameraSource`: renders a named camera of the MuJoCo twin at a fixed rate."""

from __future__ import annotations

import time

import numpy as np

from eva_core.sim import get_twin
from eva_ros.backends.camera import CameraFrame, CameraSource


class SimCameraSource(CameraSource):
    """Frames of the twin `twin` as seen by `camera` (a camera of the embodiment YAML); the
    camera node's capture thread sets the rate.

    In one process (eva-bringup) the twin is posed by `SimArm`; a camera node in its own process
    poses it from /joint_states through `set_joint_positions`.
    """

    def __init__(self, camera: str = "cam_high", height: int = 240, width: int = 320, fps: float = 15.0,
                 twin: str = "default", embodiment: str = "cobot_magic"):
        self.camera, self.height, self.width, self.fps = camera, int(height), int(width), float(fps)
        self._twin_name, self._embodiment = twin, embodiment
        self.twin = None
        self._count = 0
        self._connected = False

    def connect(self) -> None:
        self.twin = get_twin(self._twin_name, self._embodiment)
        if self.camera not in self.twin.cameras:
            raise ValueError(f"sim camera {self.camera!r} not in the twin; cameras: {self.twin.cameras}")
        self._connected = True

    def set_joint_positions(self, action: np.ndarray) -> None:
        """Pose the twin (action units) when no SimArm shares this process."""
        self.twin.set_action(action)

    def read(self) -> CameraFrame | None:
        if not self._connected:
            raise RuntimeError("SimCameraSource.read() before connect()")
        img = self.twin.render(self.camera, self.height, self.width)
        frame = CameraFrame(image=img, stamp=time.time(), index=self._count)
        self._count += 1
        return frame

    def close(self) -> None:
        self._connected = False
