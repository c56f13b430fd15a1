"""camera_node: publishes sensor_msgs/Image rgb8 from a `CameraSource` backend.

Parameters (YAML section `camera`): camera_name, topic (default from the embodiment's camera
table), frame_id, source (registry name: playback | synthetic | realsense | sim), fps,
connect_timeout (s; a source that does not connect in time fails start-up),
source_options.* (passed to the source, e.g. path, loop), embodiment, pose_from_joint_states
(sources with `set_joint_positions`, e.g. the sim twin, follow /joint_states).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from eva_core.embodiment import load_embodiment
from eva_core.paths import share_dir
from eva_ros import qos
from eva_ros.backends import make_camera
from eva_ros.conversions import image_is_finite, image_to_msg, joint_values_to_action
from eva_ros.diagnostics import ERROR, OK, DiagnosticsReporter, RateCounter
from eva_ros.params import NODE_KWARGS, declare_defaults, options_with_prefix
from eva_ros.runtime import run_node, run_periodic, stop_thread

DEFAULTS = {"embodiment": "cobot_magic", "camera_name": "cam_high", "topic": "", "frame_id": "",
            "source": "playback", "fps": 30.0, "connect_timeout": 30.0, "pose_from_joint_states": True}


def camera_topic(emb, camera_name: str, topic: str = "") -> str:
    """The image topic: `topic` if set, else the embodiment's camera table, else the ROS default."""
    return topic or emb.cameras.get(camera_name, {}).get("topic") or f"/{camera_name}/color/image_raw"


def resolve_data_path(path: str) -> Path:
    """A file path from a config: as given (absolute or cwd-relative), else under share/config/."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    q = share_dir() / "config" / p
    return q if q.exists() else p


class CameraNode(Node):
    def __init__(self, node_name: str = "camera", source=None, **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        p = declare_defaults(self, DEFAULTS)
        emb = load_embodiment(p["embodiment"])
        self.topic = camera_topic(emb, p["camera_name"], p["topic"])
        self.frame_id = p["frame_id"] or emb.cameras.get(p["camera_name"], {}).get("link", p["camera_name"])
        if source is None:
            options = options_with_prefix(self, "source_options")
            options.setdefault("fps", p["fps"])
            if "path" in options:
                options["path"] = str(resolve_data_path(options["path"]))
            if p["source"] == "playback":
                options.setdefault("camera", p["camera_name"])
            source = make_camera(p["source"], emb, options)
        self.source = source
        self.period = 1.0 / p["fps"]
        self.pub = self.create_publisher(Image, self.topic, qos.IMAGE)
        # a rendered camera (the sim twin) shows the arm where /joint_states says it is
        if p["pose_from_joint_states"] and hasattr(self.source, "set_joint_positions"):
            self.emb = emb
            self.sub_joints = self.create_subscription(JointState, "/joint_states", self._on_joints, qos.STATE)
        self.published = 0
        self.rejected = 0
        self.ended = False
        self.rate = RateCounter()
        self.diag = DiagnosticsReporter(self, f"eva/camera/{p['camera_name']}", self.diagnostic_values)
        # One capture thread owns the source from connect() to close(): some backends are bound
        # to the thread that opened them (an EGL context of the rendered sim camera, device
        # handles). Connection errors are raised here, at start-up.
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._connect_error: BaseException | None = None
        self._thread = threading.Thread(target=self._capture_loop, name="eva-camera-capture", daemon=True)
        self._thread.start()
        if not self._connected.wait(p["connect_timeout"]):
            self._stop.set()
            raise TimeoutError(f"camera {p['camera_name']!r}: source {p['source']!r} did not connect within "
                               f"connect_timeout = {p['connect_timeout']} s")
        if self._connect_error is not None:
            raise self._connect_error
        self.get_logger().info(f"publishing {p['source']} frames on {self.topic} at {p['fps']} Hz")

    def _capture_loop(self) -> None:
        try:
            self.source.connect()
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor
            self._connect_error = exc
            self._connected.set()
            return
        self._connected.set()
        try:  # fallen a frame behind: skip frames rather than burst
            run_periodic(self.period, self._stop, self._tick, max_lag=self.period)
        finally:
            self.source.close()

    def _on_joints(self, msg: JointState) -> None:
        try:
            action = joint_values_to_action(self.emb, msg.name, msg.position, "/joint_states")
        except ValueError as exc:
            self.diag.event("bad_joint_state", str(exc))
            return
        self.source.set_joint_positions(action)

    def _tick(self) -> None:
        if self.ended:
            return
        try:
            frame = self.source.read()
        except Exception as exc:  # noqa: BLE001 - a backend failure is reported, not fatal
            self.diag.set_level(ERROR, f"camera read failed: {exc}")
            self.diag.event("read_error", str(exc), ERROR)
            return
        if frame is None:
            self.ended = True
            self.diag.set_level(ERROR, "camera stream ended")
            return
        if not image_is_finite(frame.image):
            self.rejected += 1
            self.diag.event("nonfinite_frame", f"frame {frame.index} has NaN/inf pixels; not published")
            return
        self.pub.publish(image_to_msg(frame.image, frame.stamp, self.frame_id))
        self.published += 1
        self.rate.tick(time.time())
        self.diag.set_level(OK, "ok")

    def diagnostic_values(self) -> dict:
        return {"topic": self.topic, "published": self.published, "rejected": self.rejected,
                "rate_hz": round(self.rate.rate(time.time()), 2)}

    def report(self) -> dict:
        return {"frames_published": self.published, "frames_rejected": self.rejected}

    def close(self) -> None:
        self.ended = True
        stop_thread(self._stop, self._thread, 10.0)


def main(args=None):
    run_node(CameraNode, args)


if __name__ == "__main__":
    main()
