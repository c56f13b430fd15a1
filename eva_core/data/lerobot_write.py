"""Write Episodes as a LeRobotDataset v3.0 (layout: eva_core.data.lerobot_format), with pyarrow and PyAV.

    with lerobot_output(out, overwrite=False, append=False) as root:
        writer = LeRobotWriter(root, embodiment, codec="h264")
        for ep in episodes:
            writer.add(ep)
        writer.close()

`observation.state` / `action` are the embodiment's action layout (float32, the joint names in
`names`), one video feature `observation.images.<camera>` per camera, the instruction is the
task, `fps` the recording's (an integer, as LeRobot stores it). Video: H.264 yuv420p by default
(libx264), AV1 (libsvtav1) where this PyAV build has the encoder; every `gop` frames a keyframe
(LeRobot's default 2, for random access). Episodes are concatenated in one parquet and one MP4
per camera until LeRobot's file-size limits, then the next file starts.

The dataset appears only when complete: `lerobot_output` builds it in a sibling directory and
renames it; `append=True` copies the existing dataset there (data and videos as hard links, never
modified) and adds episodes in new files, as LeRobot does when it resumes recording.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from eva_core.data import lerobot_format as F
from eva_core.data.episode import Episode
from eva_core.thread_policy import keep_thread_policy

CODECS = {"h264": ("libx264", 23), "av1": ("libsvtav1", 30)}   # encoder, default crf (LeRobot: av1 crf 30)
STAT_KEYS = ("min", "max", "mean", "std", "count")
IMAGE_STAT_FRAMES = 64


def encoder_for(codec: str) -> str:
    """The PyAV encoder of `codec` ("h264" or "av1"), checked against av.codecs_available."""
    import av

    if codec not in CODECS:
        raise ValueError(f"video codec: expected one of {sorted(CODECS)}, got {codec!r}")
    name = CODECS[codec][0]
    if name not in av.codecs_available:
        raise ValueError(f"video codec {codec!r}: encoder {name} is not in this PyAV/FFmpeg build "
                         f"(av.codecs_available); use --codec h264")
    return name


def dataset_fps(fps: float, where: str) -> int:
    """LeRobot stores an integer fps: the recording's rate rounded, if within 1 % of an integer."""
    r = int(round(fps))
    if r < 1 or abs(fps - r) > 0.01 * fps:
        raise ValueError(f"{where}: fps {fps:.4g} is not within 1 % of an integer; LeRobot v3 stores an integer fps")
    return r


def frame_stats(x: np.ndarray) -> dict:
    """min/max/mean/std/count over axis 0 of (N, D) (LeRobot's stats entries)."""
    x = np.asarray(x, dtype=np.float64)
    return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}


def image_stats(frames: np.ndarray) -> dict:
    """Per-channel stats in [0, 1], shape (3, 1, 1) as LeRobot keeps them, over <= 64 sampled frames."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), IMAGE_STAT_FRAMES)).round().astype(int))
    x = frames[idx].reshape(-1, 3).astype(np.float64) / 255.0
    s = frame_stats(x)
    return {k: (v.reshape(3, 1, 1) if k != "count" else np.array([len(frames)])) for k, v in s.items()}


def merge_stats(per_episode: list[dict]) -> dict:
    """Stats of the whole dataset from per-episode stats (count-weighted mean, pooled variance)."""
    out = {}
    for key in per_episode[0]:
        parts = [s[key] for s in per_episode if key in s]
        n = np.array([float(np.asarray(p["count"]).ravel()[0]) for p in parts])
        means = np.stack([np.asarray(p["mean"], np.float64) for p in parts])
        var = np.stack([np.asarray(p["std"], np.float64) ** 2 for p in parts])
        w = (n / n.sum()).reshape(-1, *([1] * (means.ndim - 1)))
        mean = (w * means).sum(0)
        out[key] = {"min": np.min([p["min"] for p in parts], 0), "max": np.max([p["max"] for p in parts], 0),
                    "mean": mean, "std": np.sqrt((w * (var + (means - mean) ** 2)).sum(0)),
                    "count": np.array([int(n.sum())])}
    return out


def _tolist(stats: dict) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


class _Video:
    """One MP4 being written; episodes are appended and their pts continue."""

    def __init__(self, path: Path, encoder: str, fps: int, shape, crf: int, gop: int):
        import av

        if encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")   # SVT-AV1 prints its banner per file unless told (errors only)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames = path, 0
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(encoder, rate=Fraction(fps))
        self.stream.height, self.stream.width = shape[0], shape[1]
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, fps)
        self.stream.options = {"crf": str(crf), "g": str(gop)}

    def write(self, frames: np.ndarray) -> None:
        import av

        with keep_thread_policy():   # libsvtav1 makes its caller SCHED_FIFO 99 as root (eva_core.thread_policy)
            for img in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame.pts = self.frames
                self.frames += 1
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)

    def size_mb(self) -> float:
        return self.path.stat().st_size / 2**20 if self.path.exists() else 0.0

    def close(self) -> str:
        with keep_thread_policy():
            for packet in self.stream.encode():
                self.container.mux(packet)
            name = self.stream.codec_context.codec.canonical_name
            self.container.close()
        return name


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == F.CHUNKS_SIZE - 1 else (chunk, file + 1)


class LeRobotWriter:
    """Adds Episodes to the dataset under `root` (empty, or a copy of a v3 dataset to append to)."""

    def __init__(self, root, embodiment, codec: str = "h264", crf: int | None = None, gop: int = 2,
                 progress: bool = True):
        import pyarrow as pa  # noqa: F401  (fail here, before any work, if missing)

        self.root, self.emb = Path(root), embodiment
        self.encoder = encoder_for(codec)
        self.crf = CODECS[codec][1] if crf is None else int(crf)
        self.gop = int(gop)
        if self.gop < 1:
            raise ValueError(f"gop: must be >= 1, got {gop}")
        self.progress = progress
        self.info: dict | None = None
        self.tasks: dict[str, int] = {}
        self.rows: list[dict] = []          # episodes rows written by this writer
        self.stats: list[dict] = []         # per-episode stats, existing ones first
        self.first_episode = self.first_frame = 0
        self.data_file = (0, 0)
        self.video_file: dict[str, tuple[int, int]] = {}
        self.meta_file = (0, 0)
        self._data_writer = None
        self._data_rows = 0
        self._videos: dict[str, _Video] = {}
        self._codec_name = {}
        self._bar = None
        if (self.root / F.INFO_PATH).exists():
            self._resume()

    # ---- appending --------------------------------------------------------------------------------
    def _resume(self) -> None:
        from eva_core.data.lerobot_read import LeRobotDataset

        ds = LeRobotDataset(self.root, self.emb)
        self.info = ds.info
        self._check_same_layout(ds)
        self.tasks = dict(ds.tasks)
        self.first_episode, self.first_frame = ds.info["total_episodes"], ds.info["total_frames"]
        last = ds.episodes[-1] if ds.episodes else None
        self.stats = [ds.episode_stats(i) for i in range(len(ds.episodes))]
        if last is not None:     # new episodes go to new files, as LeRobot does when it resumes
            self.data_file = _next_file(last["data/chunk_index"], last["data/file_index"])
            self.meta_file = _next_file(last["meta/episodes/chunk_index"], last["meta/episodes/file_index"])
            for key in F.video_keys(self.info):
                self.video_file[key] = _next_file(last[f"videos/{key}/chunk_index"], last[f"videos/{key}/file_index"])
        for key in F.video_keys(self.info):
            self._codec_name[key] = self.info["features"][key].get("info", {}).get("video.codec")

    def _check_same_layout(self, ds) -> None:
        where = str(self.root)
        for key in (F.STATE, F.ACTION):
            ft = ds.info["features"][key]
            if list(ft["shape"]) != [self.emb.dof] or F.flat_names(ft.get("names")) != list(self.emb.joint_names):
                raise ValueError(f"{where}: cannot append: feature {key!r} is {ft['shape']} {ft.get('names')}, "
                                 f"embodiment {self.emb.name!r} is [{self.emb.dof}] {list(self.emb.joint_names)}")

    # ---- features ---------------------------------------------------------------------------------
    def _new_info(self, ep: Episode) -> dict:
        names = list(self.emb.joint_names)
        vec = {"dtype": "float32", "shape": [self.emb.dof], "names": names}
        features = {}
        for cam, img in ep.cameras.items():
            h, w = img.shape[1:3]
            features[F.video_key(cam)] = {"dtype": "video", "shape": [int(h), int(w), 3],
                                          "names": ["height", "width", "channels"], "info": None}
        features[F.STATE] = dict(vec)
        features[F.ACTION] = dict(vec)
        for key, dtype in F.INDEX_FEATURES.items():
            features[key] = {"dtype": dtype, "shape": [1], "names": None}
        return {"codebase_version": F.CODEBASE_VERSION, "robot_type": self.emb.name, "total_episodes": 0,
                "total_frames": 0, "total_tasks": 0, "chunks_size": F.CHUNKS_SIZE,
                "data_files_size_in_mb": F.DATA_FILE_MB, "video_files_size_in_mb": F.VIDEO_FILE_MB,
                "fps": dataset_fps(ep.fps, ep.source or "episode"), "splits": {}, "data_path": F.DATA_PATH,
                "video_path": F.VIDEO_PATH if any(ft["dtype"] == "video" for ft in features.values()) else None,
                "features": features}

    def _check_episode(self, ep: Episode) -> None:
        where = ep.source or "episode"
        feats = self.info["features"]
        if dataset_fps(ep.fps, where) != self.info["fps"]:
            raise ValueError(f"{where}: fps {ep.fps:.4g} differs from the dataset's {self.info['fps']}")
        for key, arr in ((F.STATE, ep.qpos), (F.ACTION, ep.action)):
            if list(arr.shape[1:]) != list(feats[key]["shape"]):
                raise ValueError(f"{where}: {key} has shape {list(arr.shape[1:])}, the dataset's is {feats[key]['shape']}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{where}: {key} holds NaN/inf")
        keys = sorted(F.video_key(c) for c in ep.cameras)
        if keys != sorted(F.video_keys(self.info)):
            raise ValueError(f"{where}: cameras {keys} differ from the dataset's {sorted(F.video_keys(self.info))}")
        for cam, img in ep.cameras.items():
            shape = [*img.shape[1:3], 3]
            if shape != list(feats[F.video_key(cam)]["shape"]):
                raise ValueError(f"{where}: camera {cam!r} is {shape}, the dataset's is {feats[F.video_key(cam)]['shape']}")
            if img.shape[1] % 2 or img.shape[2] % 2:
                raise ValueError(f"{where}: camera {cam!r} is {img.shape[2]}x{img.shape[1]}; yuv420p needs even sizes")
            if img.dtype != np.uint8:
                raise ValueError(f"{where}: camera {cam!r} frames are {img.dtype}, expected uint8")

    # ---- writing ----------------------------------------------------------------------------------
    def _data_path(self) -> Path:
        c, f = self.data_file
        return self.root / F.DATA_PATH.format(chunk_index=c, file_index=f)

    def _write_data(self, table) -> None:
        import pyarrow.parquet as pq

        if self._data_writer is not None and self._data_rows * 200 / 2**20 >= F.DATA_FILE_MB:
            self._data_writer.close()
            self._data_writer, self._data_rows = None, 0
            self.data_file = _next_file(*self.data_file)
        if self._data_writer is None:
            self._data_path().parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(str(self._data_path()), table.schema)
        self._data_writer.write_table(table)   # one row group per episode, as LeRobot writes
        self._data_rows += table.num_rows

    def _video(self, key: str, shape) -> _Video:
        v = self._videos.get(key)
        if v is not None and v.size_mb() >= F.VIDEO_FILE_MB:
            self._codec_name[key] = v.close()
            v = None
            self.video_file[key] = _next_file(*self.video_file[key])
        if v is None:
            c, f = self.video_file.setdefault(key, (0, 0))
            path = self.root / F.VIDEO_PATH.format(video_key=key, chunk_index=c, file_index=f)
            v = self._videos[key] = _Video(path, self.encoder, self.info["fps"], shape, self.crf, self.gop)
        return v

    def add(self, ep: Episode) -> int:
        """Append one episode; returns its episode_index."""
        import pyarrow as pa

        if self.info is None:
            self.info = self._new_info(ep)
        self._check_episode(ep)
        if self._bar is None and self.progress:
            from tqdm import tqdm

            self._bar = tqdm(desc="encoding", unit="frame")
        n, fps = len(ep), self.info["fps"]
        e = self.first_episode + len(self.rows)
        start = self.first_frame + sum(r["length"] for r in self.rows)
        task = ep.instruction
        t = self.tasks.setdefault(task, len(self.tasks))
        frame_index = np.arange(n, dtype=np.int64)
        timestamp = (frame_index / fps).astype(np.float32)
        dof = self.info["features"][F.STATE]["shape"][0]
        table = pa.table({
            F.STATE: pa.FixedSizeListArray.from_arrays(pa.array(ep.qpos.astype(np.float32).ravel()), dof),
            F.ACTION: pa.FixedSizeListArray.from_arrays(pa.array(ep.action.astype(np.float32).ravel()), dof),
            "timestamp": timestamp, "frame_index": frame_index,
            "episode_index": np.full(n, e, np.int64), "index": np.arange(start, start + n, dtype=np.int64),
            "task_index": np.full(n, t, np.int64)})
        self._write_data(table)
        row = {"episode_index": e, "tasks": [task], "length": n,
               "data/chunk_index": self.data_file[0], "data/file_index": self.data_file[1],
               "dataset_from_index": start, "dataset_to_index": start + n}
        stats = {F.STATE: frame_stats(ep.qpos.astype(np.float32)), F.ACTION: frame_stats(ep.action.astype(np.float32))}
        for key, col in (("timestamp", timestamp), ("frame_index", frame_index), ("episode_index", table["episode_index"]),
                         ("index", table["index"]), ("task_index", table["task_index"])):
            stats[key] = frame_stats(np.asarray(col).reshape(-1, 1))
        for cam, img in ep.cameras.items():
            key = F.video_key(cam)
            v = self._video(key, img.shape[1:3])
            c, f = self.video_file[key]
            row.update({f"videos/{key}/chunk_index": c, f"videos/{key}/file_index": f,
                        f"videos/{key}/from_timestamp": v.frames / fps})
            v.write(img)
            row[f"videos/{key}/to_timestamp"] = v.frames / fps
            stats[key] = image_stats(img)
            if self._bar is not None:
                self._bar.update(n)
        self.rows.append(row)
        self.stats.append(stats)
        return e

    def close(self) -> dict:
        """Finish the files and write meta/ (info, stats, tasks, episodes); returns info."""
        if self._bar is not None:
            self._bar.close()
        if self._data_writer is not None:
            self._data_writer.close()
        for key, v in self._videos.items():
            self._codec_name[key] = v.close()
        if self.info is None:
            raise ValueError(f"{self.root}: no episode to write")
        if not self.rows:
            return self.info
        self._write_episodes()
        info = self.info
        for key in F.video_keys(info):
            h, w, c = info["features"][key]["shape"]
            info["features"][key]["info"] = {
                "video.height": h, "video.width": w, "video.codec": self._codec_name.get(key),
                "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": info["fps"],
                "video.channels": c, "has_audio": False}
        info["total_episodes"] = self.first_episode + len(self.rows)
        info["total_frames"] = self.first_frame + sum(r["length"] for r in self.rows)
        info["total_tasks"] = len(self.tasks)
        info["splits"] = {"train": f"0:{info['total_episodes']}"}
        (self.root / "meta").mkdir(parents=True, exist_ok=True)
        _write_new(self.root / F.INFO_PATH, json.dumps(info, indent=4) + "\n")
        _write_new(self.root / F.STATS_PATH, json.dumps(_tolist(merge_stats(self.stats)), indent=4) + "\n")
        self._write_tasks()
        return info

    def _write_tasks(self) -> None:
        """tasks.parquet as pandas writes LeRobot's DataFrame: index "task", column task_index."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tasks = sorted(self.tasks, key=self.tasks.get)
        pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
            "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
        table = pa.table({"task_index": pa.array([self.tasks[t] for t in tasks], pa.int64()),
                          "task": pa.array(tasks, pa.string())})
        table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        _unlink(self.root / F.TASKS_PATH)
        pq.write_table(table, str(self.root / F.TASKS_PATH))

    def _write_episodes(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        c, f = self.meta_file
        cols: dict[str, list] = {}
        for row, stats in zip(self.rows, self.stats[len(self.stats) - len(self.rows):]):
            row = {**row, "meta/episodes/chunk_index": c, "meta/episodes/file_index": f}
            for key, st in stats.items():
                for s in STAT_KEYS:
                    row[f"stats/{key}/{s}"] = np.asarray(st[s]).tolist()
            for k, v in row.items():
                cols.setdefault(k, []).append(v)
        path = self.root / F.EPISODES_PATH.format(chunk_index=c, file_index=f)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), str(path))


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)   # a hard-linked copy must not be written through


def _write_new(path: Path, text: str) -> None:
    _unlink(path)
    path.write_text(text)


@contextlib.contextmanager
def lerobot_output(out, overwrite: bool = False, append: bool = False, flag: str = "--out"):
    """The directory to build the dataset `out` in; renamed onto `out` once the block succeeds.

    A non-empty `out` is refused unless `overwrite` (replaced) or `append` (its episodes are kept:
    copied into the new directory first, data and videos as hard links where possible)."""
    from eva_core.cli import OutputDir, UserError, overwrite_sibling, prepare_output_dir

    final = Path(out).expanduser()
    if append and overwrite:
        raise UserError(f"{flag} {final}: --append and --overwrite exclude each other")
    if not append or not (final.is_dir() and any(final.iterdir())):
        run = prepare_output_dir(final, overwrite=overwrite, flag=flag, resumable=False, staged=True)
        with run as tmp:
            yield tmp
        return
    F.load_info(final)   # only a v3 dataset can be appended to
    work = overwrite_sibling(final)
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(final, work, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("meta"))
    shutil.copytree(final / "meta", work / "meta")
    run = OutputDir(final, work)
    with run as tmp:
        yield tmp


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_lerobot(episodes, out, embodiment, overwrite: bool = False, append: bool = False,
                  codec: str = "h264", progress: bool = True) -> dict:
    """Write an iterable of Episodes as the dataset `out` (atomically); returns its info."""
    encoder_for(codec)
    with lerobot_output(out, overwrite=overwrite, append=append) as root:
        writer = LeRobotWriter(root, embodiment, codec=codec, progress=progress)
        for ep in episodes:
            writer.add(ep)
        return writer.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 image stacks (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
