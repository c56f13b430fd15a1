"""LeRobotDataset v3.0 layout: paths, feature names and the checks of `meta/info.json`.

The layout is LeRobot's published v3.0 format
(https://huggingface.co/docs/lerobot/lerobot-dataset-v3, `src/lerobot/datasets/utils.py` of
https://github.com/huggingface/lerobot):

    meta/info.json                               codebase_version "v3.0", fps, features, templates, totals
    meta/stats.json                              {feature: {min, max, mean, std, count}}
    meta/tasks.parquet                           task (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet     one row per episode: length, tasks, file indices,
                                                 dataset_from/to_index, videos/<key>/from/to_timestamp
    data/chunk-XXX/file-XXX.parquet              one row per frame: observation.state, action, timestamp,
                                                 frame_index, episode_index, index, task_index
    videos/<key>/chunk-XXX/file-XXX.mp4          many episodes concatenated per file

The project reads and writes it with pyarrow and PyAV only (`lerobot` itself pins versions this
project cannot take).
"""

from __future__ import annotations

import json
from pathlib import Path

from eva_core.data.hdf5_io import EpisodeFormatError

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000            # files per chunk directory (LeRobot's default)
DATA_FILE_MB = 100            # LeRobot's defaults for starting a new file
VIDEO_FILE_MB = 200
STATE, ACTION = "observation.state", "action"
IMAGE_PREFIX = "observation.images."
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64",
                  "index": "int64", "task_index": "int64"}
CONVERT_V21_HINT = ("convert it to v3.0 with LeRobot's script: python -m lerobot.scripts.convert_dataset_v21_to_v30 "
                    "--repo-id=<id> (https://github.com/huggingface/lerobot/blob/main/src/lerobot/scripts/"
                    "convert_dataset_v21_to_v30.py)")
NUMERIC_DTYPES = ("float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


class LeRobotFormatError(EpisodeFormatError):
    """A LeRobot dataset that does not have the v3.0 layout (names the dataset and the key)."""


def video_key(camera: str) -> str:
    """"cam_high" -> "observation.images.cam_high" (a full key is returned as it is)."""
    return camera if camera.startswith("observation.") else IMAGE_PREFIX + camera


def camera_name(key: str) -> str:
    """"observation.images.cam_high" -> "cam_high"."""
    return key[len(IMAGE_PREFIX):] if key.startswith(IMAGE_PREFIX) else key.rsplit(".", 1)[-1]


def is_lerobot_root(path) -> bool:
    """A directory that looks like a LeRobot dataset root (meta/ or data/chunk-*); its info.json
    may still be missing, which `load_info` then reports."""
    p = Path(path)
    return p.is_dir() and ((p / "meta").is_dir() or any((p / "data").glob("chunk-*")))


def flat_names(names) -> list[str] | None:
    """A feature's `names`: a list, or a dict of lists (LeRobot v2 style {"motors": [...]}), flattened."""
    if names is None:
        return None
    if isinstance(names, dict):
        return [str(n) for v in names.values() for n in (v if isinstance(v, list) else [v])]
    if isinstance(names, list):
        return [str(n) for n in names]
    return None


def load_info(root) -> dict:
    """meta/info.json of a v3.0 dataset, checked (`validate_info`)."""
    root = Path(root)
    path = root / INFO_PATH
    if not path.is_file():
        raise LeRobotFormatError(f"{root}: not a LeRobot dataset: missing {INFO_PATH}")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LeRobotFormatError(f"{path}: not readable JSON: {' '.join(str(e).split())}") from None
    validate_info(info, str(path))
    return info


def validate_info(info, where: str) -> None:
    """The keys and types this project needs from info.json; one line naming the key otherwise."""
    if not isinstance(info, dict):
        raise LeRobotFormatError(f"{where}: expected a JSON object")
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        if isinstance(version, str) and version.startswith("v2"):
            raise LeRobotFormatError(f"{where}: codebase_version {version!r} is a LeRobot {version} dataset; "
                                     f"{CONVERT_V21_HINT}")
        raise LeRobotFormatError(f"{where}: codebase_version: expected {CODEBASE_VERSION!r}, got {version!r}")
    for key, kind in (("fps", (int, float)), ("features", dict), ("data_path", str), ("chunks_size", int),
                      ("total_episodes", int), ("total_frames", int)):
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise LeRobotFormatError(f"{where}: {key}: missing or of the wrong type ({info.get(key)!r})")
    if not info["fps"] > 0:
        raise LeRobotFormatError(f"{where}: fps: must be > 0, got {info['fps']}")
    feats = info["features"]
    for name, ft in feats.items():
        if not isinstance(ft, dict) or "dtype" not in ft or not isinstance(ft.get("shape"), (list, tuple)):
            raise LeRobotFormatError(f"{where}: features.{name}: needs dtype and shape")
        if ft["dtype"] == "video":
            if len(ft["shape"]) != 3:
                raise LeRobotFormatError(f"{where}: features.{name}: a video's shape is [H, W, C], got {ft['shape']}")
        elif ft["dtype"] not in NUMERIC_DTYPES and ft["dtype"] not in ("string", "image"):
            raise LeRobotFormatError(f"{where}: features.{name}: unknown dtype {ft['dtype']!r}")
    if any(ft["dtype"] == "video" for ft in feats.values()) and not isinstance(info.get("video_path"), str):
        raise LeRobotFormatError(f"{where}: video_path: missing, but the dataset has video features")
    for key in (STATE, ACTION, "episode_index", "frame_index", "timestamp", "index"):
        if key not in feats:
            raise LeRobotFormatError(f"{where}: features: no {key!r} (features: {sorted(feats)})")


def video_keys(info: dict) -> list[str]:
    return [k for k, ft in info["features"].items() if ft["dtype"] == "video"]
