"""`SimCameraSource`: renders a named camera of the MuJoCo twin at a fixed rate."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from eva_core.config import Section, param
from eva_core.sim.registry import get_twin, unknown_task
from eva_ros.backends.camera import CameraFrame, CameraSource


class SimCameraSource(CameraSource):
    """Frames of the twin `twin` as seen by `camera` (a camera of the embodiment YAML); the
    camera node's capture thread sets the rate.

    In one process (eva-bringup) the twin is posed by `SimArm`; a camera node in its own process
    poses it from /joint_states through `set_joint_positions`.
    """

    @dataclass
    class Options(Section):
        camera: str = param("cam_high", "camera of the embodiment (default: the node's camera_name)")
        height: int = param(240, "image height", unit="px", ge=1, le=4096)
        width: int = param(320, "image width", unit="px", ge=1, le=4096)
        fps: float = param(15.0, "nominal frame rate (the node's fps paces the stream)", unit="Hz", gt=0)
        twin: str = param("default", "name of the process-wide twin to render")
        task: str = param("", "twin task whose objects the twin holds ('' for none; as the sim arm's)")
        render_process: bool = param(False, "render in a child process (eva_core.sim.render_process), so a "
                                            "render never holds this process's GIL: a controller in the "
                                            "same process keeps its 200 Hz period")

        def validate(self):
            if self.task and (problem := unknown_task(self.task)):
                self.error("task", problem)

    def __init__(self, embodiment, options: "SimCameraSource.Options | dict | None" = None):
        o = self.options = options if isinstance(options, Section) else self.Options.from_dict(options)
        self.camera, self.height, self.width, self.fps = o.camera, o.height, o.width, o.fps
        self._twin_name, self._embodiment, self._task = o.twin, embodiment, o.task
        self.twin = None
        self._count = 0
        self._connected = False

    def connect(self) -> None:
        self.twin = get_twin(self._twin_name, self._embodiment, task=self._task or None)
        if self.camera not in self.twin.cameras:
            raise ValueError(f"sim camera {self.camera!r} not in the twin; cameras: {self.twin.cameras}")
        if self.options.render_process:
            self.twin.render_in_child_process()
        self._connected = True

    def set_joint_positions(self, action: np.ndarray) -> None:
        """Pose the twin (action units) from /joint_states, unless an arm backend of this process
        drives its physics (a teleport would reset the simulated joints' velocities)."""
        if not getattr(self.twin, "driven", False):
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
