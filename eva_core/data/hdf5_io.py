"""Episode HDF5 files: ALOHA / Cobot Magic layout, RoboTwin layout, and our own (ALOHA + attrs).

ALOHA / Cobot Magic (the layout of the ALOHA and Cobot Magic recording scripts):
    attrs sim, compress
    /observations/images/<cam>   (N, H, W, 3) uint8, or (N, L) uint8 padded JPEG rows if compress
    /observations/qpos, /qvel, /effort   (N, 14);  /action (N, 14);  optional /base_action (N, 2)
RoboTwin (as EVA's IDM loader reads it):
    /joint_action/vector            (N, 14)
    /observation/<cam>/rgb          (N,) one JPEG byte string per frame
Ours = the ALOHA layout plus attrs fps, instruction, camera, format="eva_ros.episode".

JPEG bytes hold true colours (a standard JPEG, as OpenCV-based writers store a BGR frame and as
EVA's/Vidar's RoboTwin loader decodes them: imdecode then BGR->RGB); eva_core.images decodes them
to RGB. Images are checked where they are read (uint8, or float in [0, 1]; uint16 and the like are
errors), an episode needs at least one frame, and qpos/action must be finite. Any malformed file
raises EpisodeFormatError naming the file and the key.
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import h5py
import numpy as np

from eva_core.atomic_io import atomic_path
from eva_core.data.episode import Episode
from eva_core.images import check_image, decode_jpeg, encode_jpeg  # noqa: F401  (encode_jpeg: writers)

OUR_FORMAT = "eva_ros.episode"
ALOHA_DEFAULT_FPS = 30.0  # Cobot Magic collects at 30 Hz (AgileX Cobot Magic docs)
ROBOTWIN_DEFAULT_FPS = 30.0  # RoboTwin files carry no rate; pass fps= when you know it


class EpisodeFormatError(ValueError):
    """An episode file that does not have the expected layout (names file and key)."""


def _open(path) -> h5py.File:
    try:
        return h5py.File(str(path), "r")
    except OSError as e:
        raise EpisodeFormatError(f"{path}: not a readable HDF5 file: {e}") from e


def _need(f: h5py.File, key: str, path) -> h5py.Dataset:
    if key not in f:
        raise EpisodeFormatError(f"{path}: missing key {key!r}")
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise EpisodeFormatError(f"{path}: key {key!r} is a group, expected a dataset")
    return obj


def _matrix(f, key, path, n: int | None = None, width: int | None = None, finite: bool = True) -> np.ndarray:
    ds = _need(f, key, path)
    try:
        arr = np.asarray(ds[()], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise EpisodeFormatError(f"{path}: key {key!r} is not numeric ({ds.dtype})") from e
    if arr.ndim != 2 or (width is not None and arr.shape[1] != width) or (n is not None and len(arr) != n):
        want = f"({n if n is not None else 'N'}, {width if width is not None else 'D'})"
        raise EpisodeFormatError(f"{path}: key {key!r} has shape {arr.shape}, expected {want}")
    if finite and not np.isfinite(arr).all():
        rows, cols = np.nonzero(~np.isfinite(arr))
        raise EpisodeFormatError(f"{path}: key {key!r} holds NaN/inf (first at frame {rows[0]}, dim {cols[0]}; "
                                 f"{len(rows)} values)")
    return arr


def _decode_frame(buf, path, key: str, index: int) -> np.ndarray:
    try:
        return decode_jpeg(buf)
    except ValueError as e:
        raise EpisodeFormatError(f"{path}: key {key!r} frame {index}: {e}") from None


def _images(ds: h5py.Dataset, path, key: str) -> np.ndarray:
    """Raw (N, H, W, 3) images (checked: uint8 or float [0, 1]), or decoded (N, L) padded JPEG
    rows / (N,) byte strings. At least one frame."""
    if ds.shape[:1] == (0,):
        raise EpisodeFormatError(f"{path}: key {key!r} has no frames")
    if ds.ndim == 4:
        try:
            return check_image(ds[()], f"{path}: key {key!r}")
        except ValueError as e:
            raise EpisodeFormatError(str(e)) from None
    if ds.ndim in (1, 2):
        frames = [_decode_frame(row, path, key, i) for i, row in enumerate(ds[()])]
        if len({f.shape for f in frames}) != 1:
            raise EpisodeFormatError(f"{path}: key {key!r}: frames have different sizes")
        return np.stack(frames)
    raise EpisodeFormatError(f"{path}: key {key!r} has shape {ds.shape}, expected (N, H, W, 3) or JPEG rows")


def _attr_str(f, name, default=""):
    v = f.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


# ---- ALOHA / Cobot Magic (and ours) ---------------------------------------------------------
def _grippers_to_norm(arr: np.ndarray, embodiment, path, key: str) -> np.ndarray:
    """Gripper strokes in metres -> normalised [0, 1], with the embodiment's gripper dims and strokes."""
    if arr.shape[1] != embodiment.dof:
        raise EpisodeFormatError(f"{path}: key {key!r} has {arr.shape[1]} dims, embodiment "
                                 f"{embodiment.name!r} has {embodiment.dof}")
    out = arr.copy()
    g = list(embodiment.gripper_dims)
    out[:, g] /= embodiment.gripper_stroke_max_m[g]
    return out


def read_aloha_hdf5(path, camera: str | None = None, cameras="all", fps: float | None = None,
                    instruction: str | None = None, grippers_in_metres=None) -> Episode:
    """Read an ALOHA / Cobot Magic episode (our own files are this layout plus attributes).

    camera: the primary camera (default: attr `camera`, else cam_high, else the first one).
    cameras: "all", or a list of names to load (the primary is always loaded).
    grippers_in_metres: an Embodiment, if the file stores gripper strokes in metres (Cobot Magic's
        puppet topics): its gripper dims of qpos/action are divided by its strokes to get [0, 1].
    """
    path = str(path)
    with _open(path) as f:
        if "observations/images" not in f:
            raise EpisodeFormatError(f"{path}: missing key '/observations/images'")
        names = list(f["observations/images"].keys())
        if not names:
            raise EpisodeFormatError(f"{path}: '/observations/images' has no cameras")
        primary = camera or _attr_str(f, "camera", "") or ("cam_high" if "cam_high" in names else names[0])
        if primary not in names:
            raise EpisodeFormatError(f"{path}: missing key '/observations/images/{primary}' (cameras: {names})")
        wanted = names if cameras == "all" else list(dict.fromkeys([primary, *cameras]))
        imgs = {}
        for cam in wanted:
            key = f"/observations/images/{cam}"
            imgs[cam] = _images(_need(f, key, path), path, key)
        n = len(imgs[primary])
        qpos = _matrix(f, "/observations/qpos", path, n)
        action = _matrix(f, "/action", path, n, qpos.shape[1])
        if grippers_in_metres is not None:
            qpos = _grippers_to_norm(qpos, grippers_in_metres, path, "/observations/qpos")
            action = _grippers_to_norm(action, grippers_in_metres, path, "/action")
        qvel = _matrix(f, "/observations/qvel", path, n, finite=False) if "observations/qvel" in f else None
        effort = _matrix(f, "/observations/effort", path, n, finite=False) if "observations/effort" in f else None
        meta = {"sim": bool(f.attrs.get("sim", False)), "compress": bool(f.attrs.get("compress", False)),
                "format": _attr_str(f, "format", "aloha")}
        if "base_action" in f:
            meta["base_action"] = _matrix(f, "/base_action", path, n, finite=False)
        if "derived_from" in f.attrs:   # a copy of another episode (eva_core/world_model/vae_roundtrip.py)
            meta["derived_from"] = _attr_str(f, "derived_from", "")
        raw_fps = fps if fps is not None else f.attrs.get("fps", ALOHA_DEFAULT_FPS)
        try:
            ep_fps = float(raw_fps)
        except (TypeError, ValueError):
            raise EpisodeFormatError(f"{path}: attribute 'fps' is not a number: {raw_fps!r}") from None
        if not (math.isfinite(ep_fps) and ep_fps > 0):
            raise EpisodeFormatError(f"{path}: attribute 'fps' must be a finite number > 0, got {ep_fps}")
        text = instruction if instruction is not None else _attr_str(f, "instruction", "")
    return Episode(frames=imgs[primary], qpos=qpos, action=action, fps=ep_fps, instruction=text,
                   camera=primary, cameras=imgs, qvel=qvel, effort=effort, source=path, meta=meta)


def write_episode(episode: Episode, path, compress: bool = False, jpeg_quality: int = 95) -> Path:
    """Write our episode file (ALOHA layout + fps/instruction/camera attrs), atomically.

    compress=True stores padded JPEG rows as ALOHA's `compress` option does; default is raw
    uint8 images with lossless LZF chunk compression.
    """
    path = Path(path)
    with atomic_path(path, suffix=".hdf5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"sim": bool(episode.meta.get("sim", False)), "compress": bool(compress),
                            "fps": float(episode.fps), "instruction": episode.instruction,
                            "camera": episode.camera, "format": OUR_FORMAT})
            obs = f.create_group("observations")
            grp = obs.create_group("images")
            for cam, img in episode.cameras.items():
                if compress:
                    bufs = [np.frombuffer(encode_jpeg(im, jpeg_quality), np.uint8) for im in img]
                    rows = np.zeros((len(bufs), max(len(b) for b in bufs)), np.uint8)
                    for i, b in enumerate(bufs):
                        rows[i, : len(b)] = b
                    grp.create_dataset(cam, data=rows)
                else:
                    grp.create_dataset(cam, data=img, chunks=(1, *img.shape[1:]), compression="lzf")
            obs.create_dataset("qpos", data=episode.qpos)
            if episode.qvel is not None:
                obs.create_dataset("qvel", data=episode.qvel)
            if episode.effort is not None:
                obs.create_dataset("effort", data=episode.effort)
            f.create_dataset("action", data=episode.action)
            if "base_action" in episode.meta:
                f.create_dataset("base_action", data=np.asarray(episode.meta["base_action"]))
    return path


# ---- RoboTwin ----------------------------------------------------------------------------------
def read_robotwin_hdf5(path, camera: str | None = "head_camera", cameras=(), fps: float | None = None,
                       instruction: str | None = "") -> Episode:
    """Read a RoboTwin episode: actions from /joint_action/vector, JPEG frames from
    /observation/<camera>/rgb. `qpos` equals the recorded joint vector (RoboTwin stores one).
    Grippers are already normalised [0, 1] in RoboTwin."""
    path = str(path)
    camera = camera or "head_camera"
    instruction = instruction or ""
    with _open(path) as f:
        vec = _matrix(f, "/joint_action/vector", path)
        if len(vec) == 0:
            raise EpisodeFormatError(f"{path}: key '/joint_action/vector' has no frames")
        imgs = {}
        for cam in dict.fromkeys([camera, *cameras]):
            key = f"/observation/{cam}/rgb"
            imgs[cam] = _images(_need(f, key, path), path, key)
            if len(imgs[cam]) != len(vec):
                raise EpisodeFormatError(f"{path}: key {key!r} has {len(imgs[cam])} frames, "
                                         f"'/joint_action/vector' has {len(vec)}")
    return Episode(frames=imgs[camera], qpos=vec, action=vec.copy(), fps=float(fps or ROBOTWIN_DEFAULT_FPS),
                   instruction=instruction, camera=camera, cameras=imgs, source=path, meta={"format": "robotwin"})


def write_robotwin_hdf5(episode: Episode, path, camera: str = "head_camera", jpeg_quality: int = 95) -> Path:
    """Write the RoboTwin layout (for tests and converters): fixed-length JPEG byte strings."""
    path = Path(path)
    bufs = [encode_jpeg(im, jpeg_quality) for im in episode.frames]
    with atomic_path(path, suffix=".hdf5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("joint_action/vector", data=episode.action)
            f.create_dataset(f"observation/{camera}/rgb", data=np.array(bufs, dtype=f"S{max(map(len, bufs))}"))
    return path


def find_robotwin_episodes(root, task: str = "*", task_config: str = "*") -> list[Path]:
    """RoboTwin files under `<root>/<task>/<task_config>/data/*.hdf5`, sorted."""
    return sorted(Path(p) for p in glob.glob(os.path.join(str(root), task, task_config, "data", "*.hdf5")))


# ---- any layout ------------------------------------------------------------------------------
def detect_layout(path) -> str:
    """"aloha" (incl. ours) or "robotwin", from the keys present."""
    with _open(path) as f:
        if "observations" in f:
            return "aloha"
        if "joint_action" in f:
            return "robotwin"
        keys = list(f.keys())
    raise EpisodeFormatError(f"{path}: neither '/observations' (ALOHA) nor '/joint_action' (RoboTwin); keys: {keys}")


def read_episode(path, **kw) -> Episode:
    """Read an episode file of any supported layout."""
    layout = detect_layout(path)
    return read_aloha_hdf5(path, **kw) if layout == "aloha" else read_robotwin_hdf5(path, **kw)


def find_episode_files(*roots) -> list[Path]:
    """All .hdf5/.h5 files under the given files/directories (recursive), sorted."""
    out = []
    for r in roots:
        p = Path(r)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [q for q in p.rglob("*") if q.suffix in (".hdf5", ".h5") and not q.name.startswith(".")]
        else:
            raise FileNotFoundError(f"episode path not found: {p}")
    return sorted(set(out))


# ---- ALOHA layout + provenance (twin demos, converted bags) -----------------------------------
def write_aloha_episode(episode: Episode, path, seed: int | None = None, compress: bool = False,
                        **attrs) -> Path:
    """Our ALOHA-layout file (see `write_episode`) plus provenance attributes, atomically:
    `seed` (the twin seed, or -1 when none) and any `attrs` (str/int/float/bool: task, success,
    source bag...). `read_aloha_hdf5` reads it like any ALOHA file."""
    path = Path(path)
    with atomic_path(path, suffix=".hdf5.tmp") as tmp:
        write_episode(episode, tmp, compress=compress)
        with h5py.File(tmp, "a") as f:
            f.attrs["seed"] = -1 if seed is None else int(seed)
            for k, v in attrs.items():
                if not isinstance(v, (str, int, float, bool, np.integer, np.floating)):
                    raise ValueError(f"{path}: attribute {k!r} must be a str or a number, got {type(v).__name__}")
                f.attrs[k] = v
    return path
