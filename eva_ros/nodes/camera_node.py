"""camera_node: publishes sensor_msgs/Image rgb8 from a `CameraSource` backend.

A capture thread reads the source at `fps` and publishes each frame on the camera topic
(`topic`, else the embodiment's camera table, else <camera_name>/color/image_raw), stamped
with its capture time. Frames are checked before publishing (eva_core.images.check_image: uint8,
or float in [0, 1]; NaN/inf or another dtype is an event, not a message). A rendered source
(the sim twin, `set_joint_positions`) follows joint_states when `pose_from_joint_states`.

Parameters: section `camera`, CameraConfig (eva_ros/node_config.py; docs/ros_interface.md):
fps in (0, 1000] (a zero or negative rate is a start-up error), source + source_options
(validated by the source's Options class), connect_timeout, camera_name, topic, frame_id.
A source that cannot connect (no camera) fails start-up: one line, exit 2.
"""

from __future__ import annotations

import threading
import time

from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from eva_core.embodiment import load_embodiment
from eva_core.images import check_image
from eva_core.paths import share_file
from eva_ros import names, qos
from eva_ros.backends import make_camera
from eva_ros.conversions import image_is_finite, image_to_msg, joint_values_to_action
from eva_ros.diagnostics import ERROR, OK, DiagnosticsReporter, Event, RateCounter
from eva_ros.node_config import CameraConfig
from eva_ros.params import NODE_KWARGS, load_node_config
from eva_ros.runtime import run_node, run_periodic, stop_thread


def camera_topic(emb, camera_name: str, topic: str = "") -> str:
    """The image topic: `topic` if set, else the embodiment's camera table (relative to the node's
    namespace), else names.camera_topic."""
    return topic or (emb.cameras.get(camera_name, {}).get("topic") or names.camera_topic(camera_name)).lstrip("/")


def resolve_data_path(path: str) -> str:
    """A data file named in a config: as given if it exists, else under share/config/ (as given
    if neither exists, so the source's error names the path the user wrote)."""
    try:
        return str(share_file("config", path))
    except FileNotFoundError:
        return path


class CameraNode(Node):
    def __init__(self, node_name: str = "camera", source=None, **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)  # context=, parameter_overrides=
        p = self.cfg = load_node_config(self, CameraConfig)   # fps in (0, 1000]: ConfigError otherwise
        emb = load_embodiment(p.embodiment)
        self.topic = camera_topic(emb, p.camera_name, p.topic)
        self.frame_id = p.frame_id or emb.cameras.get(p.camera_name, {}).get("link", p.camera_name)
        if source is None:
            options = dict(p.source_options)
            options.setdefault("fps", p.fps)
            if "path" in options:
                options["path"] = resolve_data_path(str(options["path"]))
            if p.source == "playback":
                options.setdefault("camera", p.camera_name)
            source = make_camera(p.source, emb, options)
        self.source = source
        self.period = 1.0 / p.fps
        self.pub = self.create_publisher(Image, self.topic, qos.IMAGE)
        # a rendered camera (the sim twin) shows the arm where /joint_states says it is
        if p.pose_from_joint_states and hasattr(self.source, "set_joint_positions"):
            self.emb = emb
            self.sub_joints = self.create_subscription(JointState, names.JOINT_STATES, self._on_joints, qos.STATE)
        self.published = 0
        self.rejected = 0
        self.ended = False
        self.rate = RateCounter()
        self.diag = DiagnosticsReporter(self, f"eva/camera/{p.camera_name}", self.diagnostic_values)
        # One capture thread owns the source from connect() to close(): some backends are bound
        # to the thread that opened them (an EGL context of the rendered sim camera, device
        # handles). Connection errors are raised here, at start-up.
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._connect_error: BaseException | None = None
        self._thread = threading.Thread(target=self._capture_loop, name="eva-camera-capture", daemon=True)
        self._thread.start()
        if not self._connected.wait(p.connect_timeout):
            self._stop.set()
            raise TimeoutError(f"camera {p.camera_name!r}: source {p.source!r} did not connect within "
                               f"connect_timeout = {p.connect_timeout} s")
        exc = self._connect_error
        if isinstance(exc, Exception) and not isinstance(exc, (ValueError, OSError, KeyError)):
            # e.g. no RealSense connected (a RuntimeError of the SDK): a start-up error, one line
            # and exit 2 from main, as the controller's CanBusError
            raise ConnectionError(f"camera {p.camera_name!r}: source {p.source!r} did not connect: {exc}") from exc
        if exc is not None:
            raise exc
        self.get_logger().info(f"publishing {p.source} frames on {self.topic} at {p.fps} Hz")

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
        self.diag.guard(self.sub_joints.topic_name, self._pose, msg, Event.BAD_JOINT_STATE)

    def _pose(self, msg: JointState) -> None:
        self.source.set_joint_positions(joint_values_to_action(self.emb, msg.name, msg.position,
                                                               self.sub_joints.topic_name))

    def _tick(self) -> None:
        """One capture: never raises (an exception would end the capture thread)."""
        if self.ended:
            return
        try:
            self._capture()
        except Exception as exc:  # noqa: BLE001 - a backend failure or a bad frame is reported, not fatal
            self.rejected += isinstance(exc, ValueError)
            self.diag.set_level(ERROR, f"camera read failed: {exc}")
            self.diag.event(Event.READ_ERROR, str(exc), ERROR)
        finally:   # events a source queues itself (the RealSense watchdog's drops and reconnects)
            for kind, message, level in getattr(self.source, "take_events", list)():
                self.diag.event(kind, message, bytes([level]))   # 0/1/2 -> DiagnosticStatus level

    def _capture(self) -> None:
        frame = self.source.read()
        if frame is None:
            self.ended = True
            self.diag.set_level(ERROR, "camera stream ended")
            return
        if not image_is_finite(frame.image):
            self.rejected += 1
            self.diag.event(Event.NONFINITE_FRAME, f"frame {frame.index} has NaN/inf pixels; not published")
            return
        image = check_image(frame.image, f"{self.topic}: frame {frame.index}")  # uint8, or float [0, 1] -> uint8
        self.pub.publish(image_to_msg(image, frame.stamp, self.frame_id))
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
