"""RealSense cameras through pyrealsense2: the real robot's `CameraSource`, and recording playback.

- A camera is selected by `serial` (Cobot Magic: one camera node each for cam_high,
  cam_left_wrist and cam_right_wrist; list the serials with `eva-check-hardware` or
  `rs-enumerate-devices`); the colour stream is `width` x `height` rgb8 at `fps`.
- Frames carry the device timestamp (`RealSenseFrame.device_stamp`, s); with the global time
  domain (enabled on live cameras) it is on the host clock and becomes `stamp` too.
- Watchdog: librealsense only logs "Frames didn't arrive within 5 seconds" and never recovers
  by itself. When no frame arrives for `frame_timeout`, this source resets the device
  (`hardware_reset`), waits up to `reconnect_timeout` for it to come back and restarts the
  pipeline; it raises (the node reports it and keeps running) while the camera is away. Each
  drop and reconnect is queued as an event (`take_events()`) for /diagnostics.
- `path`: play a RealSense recording through the real pipeline (`enable_device_from_file`;
  pyrealsense 2.59 needs a rosbag2 `.db3` file), for offline replay and tests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_core.config import Section, param
from eva_ros.backends.camera import CameraFrame, CameraSource

OK, WARN, ERROR = 0, 1, 2   # diagnostic_msgs/DiagnosticStatus levels of the queued events


@dataclass
class RealSenseFrame(CameraFrame):
    device_stamp: float = 0.0   # the device's frame timestamp, s (its own clock unless global time)
    frame_number: int = -1      # the device's frame counter


def _rs():
    try:   # rclpy before pyrealsense2: the other order crashes the process at exit (seen with 2.59 + Jazzy)
        import rclpy  # noqa: F401
    except ImportError:
        pass
    try:
        import pyrealsense2 as rs
    except ImportError as exc:   # most often libusb-1.0-0 missing
        raise RuntimeError(f"pyrealsense2 cannot be imported ({exc}); pip install pyrealsense2 and "
                           "apt install libusb-1.0-0") from exc
    return rs


def list_devices() -> list[dict]:
    """Connected RealSense devices: name, serial, USB type, firmware."""
    rs = _rs()
    out = []
    for dev in rs.context().query_devices():
        info = {}
        for key, field in (("name", rs.camera_info.name), ("serial", rs.camera_info.serial_number),
                           ("usb", rs.camera_info.usb_type_descriptor), ("firmware", rs.camera_info.firmware_version)):
            info[key] = dev.get_info(field) if dev.supports(field) else ""
        out.append(info)
    return out


class RealSenseSource(CameraSource):
    @dataclass
    class Options(Section):
        serial: str = param("", "serial number of the camera; empty: the only connected one")
        width: int = param(640, "colour stream width", unit="px", ge=1, le=4096)
        height: int = param(480, "colour stream height", unit="px", ge=1, le=4096)
        fps: float = param(30.0, "colour stream rate (a rate the camera offers: 6, 15, 30, 60)", unit="Hz", gt=0)
        path: str = param("", "play this RealSense recording (.db3) through the pipeline instead of a camera")
        realtime: bool = param(True, "playback at the recorded speed (false: one recorded frame per read)")
        loop: bool = param(False, "playback: start again at the end (false: the stream ends)")
        frame_timeout: float = param(2.0, "no frame for this long: reset the camera and reopen", unit="s", gt=0,
                                      le=30)
        reconnect_timeout: float = param(10.0, "wait this long for a reset camera to come back", unit="s", gt=0,
                                          le=120)
        name: str = param("", "camera name used in messages (e.g. cam_high)")

    def __init__(self, embodiment=None, options: "RealSenseSource.Options | dict | None" = None):
        o = self.options = options if isinstance(options, Section) else self.Options.from_dict(options)
        self.fps = o.fps
        self.label = o.name or (f"RealSense {o.serial}" if o.serial else "RealSense")
        if o.path and Path(o.path).suffix != ".db3":
            o.error("path", f"{o.path}: pyrealsense2 2.59 plays rosbag2 .db3 recordings only")
        self._pipe = self._profile = None
        self._connected = False
        self._count = 0
        self._last_frame = 0.0
        self._events: list[tuple[str, str, int]] = []
        self._events_lock = threading.Lock()
        self.drops = 0
        self.reconnects = 0

    # -- events for /diagnostics ------------------------------------------------------------------
    def _event(self, kind: str, message: str, level: int = WARN) -> None:
        with self._events_lock:
            self._events.append((kind, f"{self.label}: {message}", level))

    def take_events(self) -> list[tuple[str, str, int]]:
        """(kind, one-line message, level 0 OK / 1 WARN / 2 ERROR) queued since the last call."""
        with self._events_lock:
            out, self._events = self._events, []
        return out

    # -- open / close -----------------------------------------------------------------------------
    def connect(self) -> None:
        self._open()
        self._connected = True

    def _config(self):
        rs, o = _rs(), self.options
        cfg = rs.config()
        if o.path:
            if not Path(o.path).is_file():
                raise FileNotFoundError(f"{self.label}: recording not found: {o.path}")
            cfg.enable_device_from_file(str(o.path), repeat_playback=o.loop)
            return cfg
        serials = [d["serial"] for d in list_devices()]
        if o.serial and o.serial not in serials:
            raise RuntimeError(f"{self.label}: no RealSense with serial {o.serial!r} connected; found {serials or 'none'}")
        if not o.serial and len(serials) != 1:
            raise RuntimeError(f"{self.label}: " + ("no RealSense camera connected" if not serials else
                               f"{len(serials)} RealSense cameras connected ({serials}); set source_options.serial"))
        cfg.enable_device(o.serial or serials[0])
        cfg.enable_stream(rs.stream.color, o.width, o.height, rs.format.rgb8, int(round(o.fps)))
        return cfg

    def _open(self) -> None:
        rs = _rs()
        pipe = rs.pipeline()
        cfg = self._config()
        try:
            if self.options.path:
                # the playback mode is set before streaming starts (start() reuses the resolved device):
                # set after start(), a non-real-time playback dropped its first frames in real time
                cfg.resolve(rs.pipeline_wrapper(pipe)).get_device().as_playback().set_real_time(self.options.realtime)
            profile = pipe.start(cfg)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.label}: cannot start the colour stream "
                               f"({self.options.width}x{self.options.height} @ {self.options.fps:g} Hz): {exc}") from exc
        dev = profile.get_device()
        if self.options.path:
            if dev.as_playback().is_real_time() != self.options.realtime:
                pipe.stop()
                raise RuntimeError(f"{self.label}: the playback of {self.options.path} did not keep realtime={self.options.realtime}")
        else:
            for sensor in dev.query_sensors():   # device timestamps on the host clock
                if sensor.supports(rs.option.global_time_enabled):
                    sensor.set_option(rs.option.global_time_enabled, 1)
        self._pipe, self._profile = pipe, profile
        self._last_frame = time.monotonic()

    def close(self) -> None:
        pipe, profile, self._pipe, self._profile = self._pipe, self._profile, None, None
        if pipe is not None:
            try:
                if self.options.path:   # stopping a paused playback can crash librealsense: resume first
                    profile.get_device().as_playback().resume()
                pipe.stop()
            except RuntimeError:
                pass
        self._connected = False

    @property
    def device(self):
        """The pipeline's device (a playback device when `path` is set), or None."""
        return None if self._profile is None else self._profile.get_device()

    # -- frames -----------------------------------------------------------------------------------
    def read(self) -> RealSenseFrame | None:
        if not self._connected:
            raise RuntimeError(f"{self.label}: read() before connect()")
        if self._pipe is None:   # a previous reconnect failed: try again
            self._recover("still no camera")
        rs = _rs()
        ok, frames = self._pipe.try_wait_for_frames(int(self.options.frame_timeout * 1000))
        color = frames.get_color_frame() if ok else None
        if not color:
            if self.options.path and not self.options.loop and self._playback_stopped(rs):
                return None   # the recording ended
            self.drops += 1
            self._event("camera_dropped", f"no frames for {self.options.frame_timeout:g} s (drop {self.drops}); "
                        "resetting and reopening", ERROR)
            self._recover(f"no frames for {self.options.frame_timeout:g} s")
            return self._read_after_reconnect()
        return self._frame(rs, color)

    def _read_after_reconnect(self):
        # a reopened stream may take longer than frame_timeout to deliver its first frame (start-up)
        wait = max(self.options.frame_timeout, self.options.reconnect_timeout)
        ok, frames = self._pipe.try_wait_for_frames(int(wait * 1000))
        color = frames.get_color_frame() if ok else None
        if not color:
            raise RuntimeError(f"{self.label}: reopened, but still no frames")
        return self._frame(_rs(), color)

    def _frame(self, rs, color) -> RealSenseFrame:
        image = np.array(np.asanyarray(color.get_data()))   # own the pixels: the SDK recycles its buffer
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        device_stamp = color.get_timestamp() / 1000.0
        domain = color.get_frame_timestamp_domain()
        stamp = device_stamp if domain == rs.timestamp_domain.global_time and not self.options.path else time.time()
        self._last_frame = time.monotonic()
        self._count += 1
        return RealSenseFrame(image=image, stamp=stamp, index=self._count - 1, device_stamp=device_stamp,
                              frame_number=int(color.get_frame_number()))

    def _playback_stopped(self, rs) -> bool:
        dev = self.device
        return dev is not None and dev.as_playback().current_status() == rs.playback_status.stopped

    def _recover(self, why: str) -> None:
        """Hardware reset (live cameras), wait for the device, reopen; raise if it is not back."""
        rs = _rs()
        serial = self.options.serial or (self.device.get_info(rs.camera_info.serial_number)
                                         if self.device is not None and not self.options.path else "")
        self.close()
        self._connected = True   # still "connected" for the node: reads keep trying
        if not self.options.path and serial:
            for dev in rs.context().query_devices():
                if dev.get_info(rs.camera_info.serial_number) == serial:
                    try:
                        dev.hardware_reset()
                    except RuntimeError:
                        pass
            time.sleep(1.0)   # the camera re-enumerates on USB
            self.options = type(self.options).from_dict({**self.options.to_dict(), "serial": serial})
        deadline = time.monotonic() + self.options.reconnect_timeout
        while True:
            try:
                self._open()
                break
            except (RuntimeError, FileNotFoundError) as exc:
                if time.monotonic() > deadline:
                    self._event("camera_reconnect_failed", f"{why}; reopen failed: {exc}", ERROR)
                    raise RuntimeError(f"{self.label}: {why}; reopen failed: {exc}") from exc
                time.sleep(0.5)
        self.reconnects += 1
        self._event("camera_reconnected", f"reopened after {why} (reconnect {self.reconnects})", OK)
