"""Video clips for world-model training: N frames at a target fps and resolution.

Sources: episode files (HDF5: ours, ALOHA/Cobot Magic, RoboTwin) and LeRobot v3.0 roots (through
`eva_core.data.load_episodes`'s `find_episodes`/`read_ref`) and
EVA's data CSV (`video_path, caption, height, width, fps, n_frames`; paths relative to the CSV).
A clip is resampled to `spec.fps` by nearest source frame, centre-cropped to the target aspect
and resized (bicubic, antialiased) to `spec.height x spec.width`, as the world model's input is.

    spec = ClipSpec(num_frames=49, fps=16, height=480, width=640)
    refs = clips_from_sources(["/data/episodes", "eva_data.csv"], spec, stride_s=1.0)
    ds = VideoClipDataset(refs, spec)
    item = ds[0]        # {"video": (3, T, H, W) float in [-1, 1], "caption": str, "key": str}

`FeatureCache` stores what the SFT and GRPO loops need per clip (VAE latents, CLIP features) and
per caption (UMT5 prompt embeddings) as safetensors. The file name is a SHA-256 of the encoder
fingerprint, the preprocessing (ClipSpec) and the source identity (path, size, mtime, start), so
a changed encoder, resolution, fps or source file misses the cache instead of reusing stale data.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

EVA_CSV_COLUMNS = ("video_path", "caption", "height", "width", "fps", "n_frames")


@dataclass(frozen=True)
class ClipSpec:
    num_frames: int = 49
    fps: float = 16.0
    height: int = 480
    width: int = 640
    camera: str | None = None  # episode camera (default: the file's primary)

    def __post_init__(self):
        if self.num_frames < 1 or not self.fps > 0 or self.height < 1 or self.width < 1:
            raise ValueError(f"ClipSpec: bad values {dataclasses.asdict(self)}")


@dataclass(frozen=True)
class ClipRef:
    source: str  # episode .hdf5 or video file
    start: int  # first source frame
    src_fps: float
    caption: str
    kind: str  # "episode" | "video"


def fit_frames(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, height, width) float in [-1, 1]: centre crop to aspect, resize."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    h, w = x.shape[-2:]
    target = width / height
    if w / h > target:
        nw = max(1, round(h * target))
        x = x[..., (w - nw) // 2:(w - nw) // 2 + nw]
    elif w / h < target:
        nh = max(1, round(w / target))
        x = x[..., (h - nh) // 2:(h - nh) // 2 + nh, :]
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
    return x.permute(1, 0, 2, 3).contiguous()


def resample_indices(n_src: int, src_fps: float, spec: ClipSpec, start: int = 0) -> np.ndarray | None:
    """Source frame indices of a clip at spec.fps starting at `start`, or None if it runs past the end."""
    idx = start + np.round(np.arange(spec.num_frames) * (src_fps / spec.fps)).astype(int)
    return idx if idx[-1] < n_src else None


def clip_starts(n_src: int, src_fps: float, spec: ClipSpec, stride_s: float) -> list[int]:
    step = max(1, round(stride_s * src_fps))
    return [s for s in range(0, n_src, step) if resample_indices(n_src, src_fps, spec, s) is not None]


def read_eva_csv(path) -> list[dict]:
    """Rows of EVA's data CSV, validated; `video_path` resolved relative to the CSV."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in EVA_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {list(EVA_CSV_COLUMNS)}")
        rows = []
        for i, row in enumerate(reader, start=2):
            try:
                fps, n = float(row["fps"]), int(row["n_frames"])
            except ValueError as e:
                raise ValueError(f"{path}: line {i}: fps/n_frames: {e}") from None
            if not fps > 0 or n < 1:
                raise ValueError(f"{path}: line {i}: fps must be > 0 and n_frames >= 1, got {fps}, {n}")
            vp = Path(row["video_path"])
            rows.append({"video_path": str(vp if vp.is_absolute() else path.parent / vp),
                         "caption": row["caption"], "fps": fps, "n_frames": n})
    return rows


def clips_from_sources(sources, spec: ClipSpec, stride_s: float = 1.0, instruction: str | None = None) -> list[ClipRef]:
    """Every clip of `spec` in the given episode files/directories and EVA CSVs."""
    from eva_core.data.load import find_episodes, read_ref

    refs: list[ClipRef] = []
    csvs = [Path(s) for s in sources if str(s).endswith(".csv")]
    others = [s for s in sources if not str(s).endswith(".csv")]
    for f in (find_episodes(*others) if others else []):
        ep = read_ref(f, **_read_kw(spec))
        text = instruction if instruction is not None else ep.instruction
        refs += [ClipRef(str(f), s, ep.fps, text, "episode") for s in clip_starts(len(ep), ep.fps, spec, stride_s)]
    for c in csvs:
        for row in read_eva_csv(c):
            text = instruction if instruction is not None else row["caption"]
            refs += [ClipRef(row["video_path"], s, row["fps"], text, "video")
                     for s in clip_starts(row["n_frames"], row["fps"], spec, stride_s)]
    return refs


def _read_kw(spec: ClipSpec) -> dict:
    return {"camera": spec.camera, "cameras": []}   # only the clip's camera is decoded


def read_video(path) -> tuple[np.ndarray, float | None]:
    """(T, H, W, 3) uint8 frames of a video file and its fps (imageio + ffmpeg)."""
    import imageio.v3 as iio

    frames = iio.imread(path, plugin="pyav") if _has_pyav() else iio.imread(path)
    try:
        fps = float(iio.immeta(path).get("fps", 0)) or None
    except Exception:  # noqa: BLE001 - fps is optional metadata; the CSV carries it anyway
        fps = None
    return np.asarray(frames)[..., :3], fps


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class VideoClipDataset(torch.utils.data.Dataset):
    """Decoded, resampled, resized clips of `refs` (the last source read is kept in memory)."""

    def __init__(self, refs: list[ClipRef], spec: ClipSpec):
        self.refs, self.spec = list(refs), spec
        self._last: tuple[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.refs)

    def _frames(self, ref: ClipRef) -> np.ndarray:
        if self._last is None or self._last[0] != ref.source:
            if ref.kind == "episode":
                from eva_core.data.load import parse_ref, read_ref

                frames = read_ref(parse_ref(ref.source), **_read_kw(self.spec)).frames
            else:
                frames = read_video(ref.source)[0]
            self._last = (ref.source, frames)
        return self._last[1]

    def __getitem__(self, i: int) -> dict:
        ref = self.refs[i]
        frames = self._frames(ref)
        idx = resample_indices(len(frames), ref.src_fps, self.spec, ref.start)
        if idx is None:
            raise ValueError(f"{ref.source}: clip at frame {ref.start} runs past the end ({len(frames)} frames)")
        return {"video": fit_frames(frames[idx], self.spec.height, self.spec.width), "caption": ref.caption,
                "first_frame": frames[idx[0]], "key": clip_key(ref, self.spec)}


def source_identity(path: str) -> dict:
    """A source's path, size and mtime (a LeRobot episode: its dataset's meta/info.json)."""
    from eva_core.data.lerobot_format import INFO_PATH
    from eva_core.data.load import parse_ref

    ref = parse_ref(path)
    st = os.stat(ref.path / INFO_PATH if ref.is_lerobot else ref.path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def clip_key(ref: ClipRef, spec: ClipSpec) -> str:
    return _sha({"src": source_identity(ref.source), "start": ref.start, "src_fps": ref.src_fps,
                 "spec": dataclasses.asdict(spec)})


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def module_fingerprint(module: torch.nn.Module) -> str:
    """Class, config, parameter count and a checksum of the first/last parameter tensors.

    Cheap on a 14B model (no full-weight hash), and it changes with a different checkpoint or
    architecture; document-level guarantee: change the encoder -> new cache keys."""
    params = list(module.parameters())
    cfg = getattr(module, "config", None)
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg) if isinstance(cfg, dict) else repr(cfg)
    sums = [float(p.detach().float().sum()) for p in (params[:1] + params[-1:])] if params else []
    return _sha({"cls": type(module).__name__, "config": cfg, "n": sum(p.numel() for p in params), "sums": sums})


class FeatureCache:
    """safetensors files under `root`: clips/<key>.safetensors and prompts/<key>.safetensors.

    `encoder_key` is a fingerprint of the encoders (see `module_fingerprint`); it enters every
    file key, so a different encoder never reads another encoder's features."""

    def __init__(self, root, encoder_key: str):
        self.root, self.encoder_key = Path(root), encoder_key
        self.hits = self.misses = 0

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{_sha({'enc': self.encoder_key, 'key': key})}.safetensors"

    def get_or_compute(self, kind: str, key: str, compute) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file, save_file

        from eva_core.atomic_io import atomic_path

        path = self._path(kind, key)
        if path.is_file():
            try:
                out = load_file(str(path))
                self.hits += 1
                return out
            except Exception:  # noqa: BLE001 - a torn/corrupt cache file is recomputed, not fatal
                pass
        self.misses += 1
        out = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(out, str(tmp))
        return out
