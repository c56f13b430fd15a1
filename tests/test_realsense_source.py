"""RealSense source through the real pyrealsense2 pipeline: recordings made here with
`rs.software_device` + `rs.recorder`, played back with `enable_device_from_file`."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import rclpy  # noqa: E402,F401 - before pyrealsense2: the other order crashes the process at exit

rs = pytest.importorskip("pyrealsense2")

from eva_core.config import ConfigError  # noqa: E402
from eva_ros.backends.realsense import RealSenseSource  # noqa: E402
from eva_ros.testing import wait_for  # noqa: E402

pytestmark = pytest.mark.ros

W, H, FPS, N = 64, 48, 30, 12


def frame_image(i: int) -> np.ndarray:
    """Frame i: a gradient plus a per-frame value, so content and order are checkable."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([np.full((H, W), (i * 17) % 256), xx * 255 // (W - 1), yy * 255 // (H - 1)], axis=-1)
    return img.astype(np.uint8)


def record(path, n=N, period=0.005):
    """n frames into a .db3 recording. The recorder stamps frames as they arrive, so playback at
    real time lasts n * period (the frames' own 30 fps timestamps do not set it)."""
    dev = rs.software_device()
    sensor = dev.add_sensor("Color")
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy, intr.fx, intr.fy = W, H, W / 2, H / 2, 50.0, 50.0
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.color, 0, 0, W, H, FPS, 3
    vs.fmt, vs.intrinsics = rs.format.rgb8, intr
    profile = sensor.add_video_stream(vs)
    recorder = rs.recorder(str(path), dev)
    queue = rs.frame_queue(n + 1)
    sensor.open(profile)
    sensor.start(queue)
    for i in range(n):
        f = rs.software_video_frame()
        f.pixels, f.bpp, f.stride = frame_image(i), 3, W * 3
        f.timestamp, f.domain, f.frame_number = 1000.0 + i * 1000.0 / FPS, rs.timestamp_domain.hardware_clock, i
        f.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(f)
        time.sleep(period)
    sensor.stop()
    sensor.close()
    del recorder   # flushes and closes the file
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return record(tmp_path_factory.mktemp("rs") / "rec.db3")


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    # 150 frames at 30 fps, 5 s of real-time playback: outlasts a drop and a reconnect
    return record(tmp_path_factory.mktemp("rs") / "long.db3", n=150, period=1.0 / FPS)


def index_of(img) -> int:
    i = [k for k in range(N) if np.array_equal(img, frame_image(k))]
    assert len(i) == 1, "a frame that was not recorded"
    return i[0]


def test_recording_plays_through_the_pipeline_in_order(recording):
    src = RealSenseSource(None, {"path": str(recording), "realtime": False, "frame_timeout": 1.0})
    src.connect()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    src.close()
    assert [index_of(f.image) for f in frames] == list(range(N))
    assert [f.frame_number for f in frames] == list(range(N))
    np.testing.assert_allclose([f.device_stamp for f in frames], 1.0 + np.arange(N) / FPS, atol=1e-6)
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)


def test_stalled_stream_resets_and_reopens_with_events(long_recording):
    src = RealSenseSource(None, {"path": str(long_recording), "frame_timeout": 0.3, "name": "cam_high"})
    src.connect()
    assert src.read() is not None
    src.device.as_playback().pause()   # the device stops delivering frames (after those in flight)
    for _ in range(150):
        f = src.read()
        if src.drops:
            break
    assert f is not None and src.drops == 1 and src.reconnects == 1
    kinds = [(k, m) for k, m, _ in src.take_events()]
    assert [k for k, _ in kinds] == ["camera_dropped", "camera_reconnected"]
    assert all(m.startswith("cam_high: ") for _, m in kinds)
    assert src.read() is not None
    src.close()


def test_no_camera_is_a_one_line_error():
    src = RealSenseSource(None, {"serial": "000000000000", "name": "cam_left_wrist"})
    with pytest.raises(RuntimeError, match=r"cam_left_wrist: no RealSense with serial '000000000000'"):
        src.connect()


def test_options_are_typed(tmp_path):
    with pytest.raises(ConfigError, match="path"):
        RealSenseSource(None, {"path": str(tmp_path / "rec.bag")})
    with pytest.raises(ConfigError, match="fsp"):
        RealSenseSource.Options.from_dict({"fsp": 30})


# -- through camera_node -------------------------------------------------------------------------
def _camera_node(params):
    from eva_ros.nodes.camera_node import CameraNode
    from eva_ros.testing import InProcessGraph

    g = InProcessGraph(num_threads=2, probe_name="rs_probe", diagnostics=False)
    node = g.add(CameraNode, params)
    return node, g.probe, g.close


def _collect(probe, topic, msg_type, profile):
    got, lock = [], threading.Lock()

    def cb(m):
        with lock:
            got.append(m)
    probe.create_subscription(msg_type, topic, cb, profile)
    return got


def test_recording_plays_into_camera_node_in_order(recording):
    from sensor_msgs.msg import Image

    from eva_ros import qos

    node, probe, close = _camera_node({"camera_name": "cam_high", "source": "realsense", "fps": 30.0,
                                       "source_options.path": str(recording), "source_options.realtime": False})
    try:
        got = _collect(probe, node.topic, Image, qos.IMAGE)
        wait_for(lambda: node.ended and len(got) >= 3, 30, what="the recording through camera_node")
        time.sleep(0.3)
        idx = [index_of(np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width, 3)) for m in list(got)]
        assert all(m.encoding == "rgb8" for m in got)
        assert idx == sorted(set(idx)), idx          # in recorded order, no repeats
        assert node.published == N
    finally:
        close()


def test_camera_node_reports_drop_and_reconnect_in_diagnostics(long_recording):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from eva_ros import qos
    from eva_ros.testing import diagnostic_events

    node, probe, close = _camera_node({"camera_name": "cam_high", "source": "realsense", "fps": 30.0,
                                       "source_options.path": str(long_recording),
                                       "source_options.frame_timeout": 0.3})
    try:
        diags = _collect(probe, "/diagnostics", DiagnosticArray, qos.DIAGNOSTICS)
        images = _collect(probe, node.topic, Image, qos.IMAGE)
        wait_for(lambda: images, 30, what="frames")
        node.source.device.as_playback().pause()   # the device stops delivering frames
        wait_for(lambda: diagnostic_events(list(diags), "eva/camera/cam_high", "camera_reconnected"), 30,
                 what="a reconnect event")
        assert diagnostic_events(list(diags), "eva/camera/cam_high", "camera_dropped")
        n = len(images)
        wait_for(lambda: len(images) > n + 3, 30, what="frames after the reconnect")
    finally:
        close()
