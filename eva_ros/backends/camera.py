"""Camera sources: where camera_node gets its RGB frames.

`CameraSource` is the interface (connect / read / close). Concrete sources here:
- `PlaybackSource`: frames of a video file (imageio) or of an episode HDF5 read with
  eva_core.data (ALOHA/Cobot Magic `/observations/images/<cam>`, RoboTwin JPEG frames), or of
  one raw HDF5 dataset (`dataset=`).
- `SyntheticSource`: a generated moving scene, for tests and benchmarks without files.
`SimCameraSource` (sim_camera.py) renders the MuJoCo twin; `RealSenseSource` (realsense.py) reads
a RealSense camera or a recording of one. Frames are checked where they enter (the playback
reader here, camera_node for every source): eva_core.images.check_image accepts uint8 or float
in [0, 1]; anything else is a ValueError naming the file or topic.
"""

from __future__ import annotations

import abc
import time
from dataclasses import MISSING, dataclass
from pathlib import Path

import numpy as np

from eva_core.config import Section, param
from eva_core.images import check_image, decode_jpeg


@dataclass
class CameraFrame:
    image: np.ndarray      # (H, W, 3) RGB, uint8 (or float32 in [0, 1])
    stamp: float           # capture time, seconds (time.time() clock, as ROS system time)
    index: int             # running frame counter of this source


class CameraSource(abc.ABC):
    """A source of RGB frames. `read()` returns the next frame or None when exhausted."""

    fps: float = 30.0

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the device or file. Raises with a clear message if it cannot."""

    @abc.abstractmethod
    def read(self) -> CameraFrame | None:
        """The next frame (blocking at most one frame period), or None at the end of a stream."""

    def close(self) -> None:
        """Release the device or file (idempotent)."""

    @property
    def is_connected(self) -> bool:
        return getattr(self, "_connected", False)

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()


def _to_rgb_uint8(frame: np.ndarray, where: str) -> np.ndarray:
    """(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA -> (H, W, 3) uint8 RGB, checked like every
    image that enters (eva_core.images.check_image: uint8 or float in [0, 1]; else ValueError)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim == 3 and frame.shape[-1] == 4:
        frame = frame[..., :3]
    if frame.ndim != 3:
        raise ValueError(f"{where}: expected one (H, W, 3) image, got shape {frame.shape}")
    return np.ascontiguousarray(check_image(frame, where))


class PlaybackSource(CameraSource):
    """Plays a video file or an episode HDF5 as a camera, looping by default."""

    VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif"}
    HDF5_SUFFIXES = {".hdf5", ".h5"}

    @dataclass
    class Options(Section):
        path: str = param(MISSING, "video file or episode HDF5 (relative: working directory, then share/config)")
        camera: str = param("cam_high", "camera of an episode file (default: the node's camera_name)")
        fps: float = param(30.0, "nominal frame rate (the node's fps paces the stream)", unit="Hz", gt=0)
        loop: bool = param(True, "start again at the end (false: the stream ends)")
        dataset: str | None = param(None, "a raw HDF5 dataset of frames instead of an episode's camera")

    def __init__(self, embodiment=None, options: "PlaybackSource.Options | dict | None" = None):
        o = self.options = options if isinstance(options, Section) else self.Options.from_dict(options)
        self.path = Path(o.path)
        self.camera = o.camera
        self.fps = o.fps
        self.loop = o.loop
        self.dataset = o.dataset  # a raw HDF5 dataset instead of an episode's camera
        self._frames: np.ndarray | list | None = None
        self._pos = 0
        self._count = 0
        self._connected = False

    def connect(self) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"playback file not found: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix in self.HDF5_SUFFIXES:
            self._frames = self._read_hdf5()
        elif suffix in self.VIDEO_SUFFIXES:
            import imageio.v3 as iio

            self._frames = [_to_rgb_uint8(f, f"{self.path}[{i}]") for i, f in enumerate(iio.imiter(self.path))]
        else:
            raise ValueError(f"{self.path}: unsupported playback file type {suffix!r} "
                             f"(video: {sorted(self.VIDEO_SUFFIXES)}, episode: {sorted(self.HDF5_SUFFIXES)})")
        if len(self._frames) == 0:
            raise ValueError(f"{self.path}: no frames")
        self._pos = 0
        self._connected = True

    def _read_hdf5(self):
        if self.dataset:
            return self._read_dataset(self.dataset)
        # episode files (ALOHA / Cobot Magic, our own, RoboTwin) through eva_core.data
        from eva_core.data import detect_layout, read_episode

        camera = self.camera
        if detect_layout(self.path) == "robotwin" and camera.startswith("cam_"):
            camera = "head_camera"  # RoboTwin's name for the head camera
        return list(read_episode(self.path, camera=camera, cameras=[]).frames)

    def _read_dataset(self, key: str):
        """Frames of one raw dataset: (N, H, W, 3) uint8, or encoded (JPEG/PNG) byte strings."""
        import h5py

        with h5py.File(self.path, "r") as f:
            if key not in f:
                raise KeyError(f"{self.path}: dataset {key!r} not found")
            data = f[key][()]
        if data.dtype.kind in "OSV" or data.ndim == 1:
            frames = []
            for i, buf in enumerate(data):
                try:
                    frames.append(decode_jpeg(buf, order="rgb"))
                except ValueError as exc:
                    raise ValueError(f"{self.path}:{key}[{i}]: {exc}") from None
            return frames
        if data.ndim != 4 or data.shape[-1] not in (3, 4):
            raise ValueError(f"{self.path}:{key}: expected (N,H,W,3) images, got {data.shape}")
        return [_to_rgb_uint8(f, f"{self.path}:{key}[{i}]") for i, f in enumerate(data)]

    def read(self) -> CameraFrame | None:
        if not self._connected:
            raise RuntimeError("PlaybackSource.read() before connect()")
        if self._pos >= len(self._frames):
            if not self.loop:
                return None
            self._pos = 0
        frame = self._frames[self._pos]
        self._pos += 1
        self._count += 1
        return CameraFrame(image=frame, stamp=time.time(), index=self._count - 1)

    def __len__(self) -> int:
        return 0 if self._frames is None else len(self._frames)

    def close(self) -> None:
        self._frames = None
        self._connected = False


class SyntheticSource(CameraSource):
    """A moving coloured square on a gradient: deterministic frames without a file."""

    @dataclass
    class Options(Section):
        height: int = param(480, "image height", unit="px", ge=1, le=8192)
        width: int = param(640, "image width", unit="px", ge=1, le=8192)
        fps: float = param(30.0, "nominal frame rate (the node's fps paces the stream)", unit="Hz", gt=0)
        seed: int = param(0, "varies the background colour")

    def __init__(self, embodiment=None, options: "SyntheticSource.Options | dict | None" = None):
        o = self.options = options if isinstance(options, Section) else self.Options.from_dict(options)
        self.height, self.width, self.fps = o.height, o.width, o.fps
        self.seed = o.seed
        self._count = 0
        self._connected = False
        self._background = None

    def connect(self) -> None:
        yy, xx = np.mgrid[0:self.height, 0:self.width]
        bg = np.stack([xx * 255 // max(self.width - 1, 1), yy * 255 // max(self.height - 1, 1),
                       np.full_like(xx, 64 + 32 * (self.seed % 4))], axis=-1)
        self._background = bg.astype(np.uint8)
        self._connected = True

    def render(self, i: int) -> np.ndarray:
        img = self._background.copy()
        side = max(self.height // 6, 2)
        cx = int((0.5 + 0.35 * np.sin(2 * np.pi * i / 60.0)) * (self.width - side))
        cy = int((0.5 + 0.35 * np.cos(2 * np.pi * i / 90.0)) * (self.height - side))
        img[cy:cy + side, cx:cx + side] = (230, 40, 40)
        return img

    def read(self) -> CameraFrame | None:
        if not self._connected:
            raise RuntimeError("SyntheticSource.read() before connect()")
        frame = CameraFrame(image=self.render(self._count), stamp=time.time(), index=self._count)
        self._count += 1
        return frame

    def close(self) -> None:
        self._connected = False


def write_demo_video(path: str | Path, num_frames: int = 48, height: int = 480, width: int = 640,
                     fps: float = 16.0) -> Path:
    """Write the synthetic scene as a video (for playback tests and config/loopback.yaml)."""
    import imageio.v3 as iio

    from eva_core.atomic_io import atomic_path

    src = SyntheticSource(None, {"height": height, "width": width, "fps": float(fps)})
    src.connect()
    frames = np.stack([src.render(i * 2) for i in range(num_frames)])
    with atomic_path(path, suffix=Path(path).suffix) as tmp:  # ffmpeg picks the format from the suffix
        iio.imwrite(tmp, frames, fps=fps)
    return Path(path)
