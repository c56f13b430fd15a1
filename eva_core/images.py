"""Image helpers shared by the data readers, the cameras, the planner, the IDM and the recorder.

One rule each:
- JPEG bytes hold true colours (what any viewer shows). OpenCV decodes to BGR, so
  `decode_jpeg` converts to the order asked for ("rgb" by default); `encode_jpeg` takes RGB.
- `to_uint8`: float [0, 1] -> uint8 by rounding and clipping (never truncation).
- `check_image`: the dtype/range/shape check where images enter (uint8, or finite float in
  [0, 1]; anything else, such as uint16 or float 0..255, is an error naming where it came from).
- `normalize_imagenet`: the one ImageNet pixel normalisation (torchvision's mean/std).
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ORDERS = ("rgb", "bgr")


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"colour order must be one of {ORDERS}, got {order!r}")


def decode_jpeg(data, order: str = "rgb") -> np.ndarray:
    """JPEG (or PNG) bytes / np.bytes_ / uint8 array (trailing zero padding allowed) -> (H, W, 3) uint8.

    Raises ValueError if the bytes do not decode; callers add the file and key.
    """
    import cv2

    _check_order(order)
    if isinstance(data, np.ndarray) and data.dtype != object:
        raw = np.ascontiguousarray(data).view(np.uint8).ravel()
    else:
        raw = np.frombuffer(bytes(data), dtype=np.uint8)
    img = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    if img is None:
        raise ValueError("not a decodable JPEG/PNG image")
    return img if order == "bgr" else np.ascontiguousarray(img[..., ::-1])


def encode_jpeg(img: np.ndarray, quality: int = 95, order: str = "rgb") -> bytes:
    """(H, W, 3) uint8 in `order` -> standard JPEG bytes (true colours)."""
    import cv2

    _check_order(order)
    a = check_image(img, "encode_jpeg")
    if a.ndim != 3:
        raise ValueError(f"encode_jpeg: one (H, W, 3) image expected, got {a.shape}")
    bgr = a if order == "bgr" else a[..., ::-1]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def to_uint8(img) -> np.ndarray:
    """Float image(s) in [0, 1] -> uint8 by round(x * 255), clipped to [0, 255]; uint8 unchanged.

    NaN becomes 0. Works on numpy arrays and torch tensors (returns the same kind).
    """
    try:
        import torch

        if isinstance(img, torch.Tensor):
            if img.dtype == torch.uint8:
                return img
            return torch.nan_to_num(img.float() * 255.0, nan=0.0).round_().clamp_(0, 255).to(torch.uint8)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.rint(np.nan_to_num(a.astype(np.float64) * 255.0, nan=0.0)), 0, 255).astype(np.uint8)


def check_image(arr, where: str, *, channels: int = 3) -> np.ndarray:
    """Validate one image (H, W, C) or a stack (N, H, W, C) and return it as uint8.

    Accepted: uint8, or a finite float array in [0, 1] (converted with `to_uint8`). Refused with
    a ValueError naming `where`: other dtypes (uint16 would wrap, bool, int), float values
    outside [0, 1] (a 0..255 float image would saturate), NaN/inf, a wrong rank or channel
    count, an empty image.
    """
    a = np.asarray(arr)
    if a.ndim not in (3, 4) or a.shape[-1] != channels:
        raise ValueError(f"{where}: images must be (H, W, {channels}) or (N, H, W, {channels}), got shape {a.shape}")
    if a.shape[-2] == 0 or a.shape[-3] == 0:
        raise ValueError(f"{where}: empty image (shape {a.shape})")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind != "f":
        raise ValueError(f"{where}: image dtype {a.dtype} not supported; expected uint8 or float in [0, 1]")
    if a.size:
        if not np.isfinite(a).all():
            raise ValueError(f"{where}: float image holds NaN or inf")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{where}: float image values span [{lo:g}, {hi:g}]; expected [0, 1]")
    return to_uint8(a)


def normalize_imagenet(x):
    """(..., 3, H, W) torch tensor in [0, 1] -> ImageNet-normalised float (same device)."""
    import torch

    x = x.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(3, 1, 1)
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"normalize_imagenet: expected (..., 3, H, W), got {tuple(x.shape)}")
    return (x - mean) / std


class FrameGate:
    """Checks a camera frame's header before any copy or resize (as a subscriber checks frames
    against CameraInfo): the size in bytes against `max_bytes`, and the resolution against the
    expected `width` x `height`; 0 takes the first accepted frame's size and holds it from then
    on. `check_bytes` and `check_size` return "" or the reason; `accept` records the size of a
    frame that was used.
    `report(reason, now)` rate-limits the events: one line per reason and `report_period` s."""

    def __init__(self, width: int = 0, height: int = 0, max_bytes: int = 32 << 20, report_period: float = 1.0):
        if min(width, height, max_bytes) < 0 or (width == 0) != (height == 0) or max_bytes == 0:
            raise ValueError(f"frame gate: width and height both 0 or both > 0, max_bytes > 0; got "
                             f"{width}x{height}, {max_bytes}")
        self.size = (int(width), int(height)) if width else None
        self.max_bytes, self.report_period = int(max_bytes), float(report_period)
        self.rejected = 0
        self._reports: dict[str, tuple[float, int]] = {}   # reason -> (last report, suppressed)

    def check_bytes(self, width: int, height: int, bytes_per_pixel: int, data_bytes: int) -> str:
        """"" or why a frame is too large (from its header and data length: nothing decoded)."""
        size = max(int(width) * int(height) * int(bytes_per_pixel), int(data_bytes))
        if size <= self.max_bytes:
            return ""
        self.rejected += 1
        return f"{width}x{height} frame of {size} bytes exceeds max_frame_bytes {self.max_bytes}"

    def check_size(self, width: int, height: int) -> str:
        """"" or why a frame's resolution is not the camera's."""
        if self.size is None or (int(width), int(height)) == self.size:
            return ""
        self.rejected += 1
        return f"{width}x{height} frame, the camera's frames are {self.size[0]}x{self.size[1]}"

    def accept(self, width: int, height: int) -> None:
        if self.size is None:
            self.size = (int(width), int(height))

    def report(self, reason: str, now: float) -> str:
        """The event line for a rejected frame, or "" while that reason is rate-limited (counted,
        then summed into its next line). Each distinct reason is limited on its own."""
        last, more = self._reports.get(reason, (-float("inf"), 0))
        if now - last < self.report_period:
            self._reports[reason] = (last, more + 1)
            return ""
        if len(self._reports) >= 64:   # bounded: an attacker varying sizes cannot grow it
            self._reports.clear()
        self._reports[reason] = (now, 0)
        return reason + "; frame dropped" + (f" ({more} more since the last report)" if more else "")
