"""Read a local LeRobotDataset v3.0 (layout: eva_core.data.lerobot_format) into Episodes.

    ds = LeRobotDataset(root, embodiment)
    ep = ds.read(0, camera="cam_high")      # or camera="observation.images.cam_high"

`observation.state` -> qpos and `action` -> action, mapped onto the embodiment by the features'
`names` where they hold its joint names, else by position (one warning line per dataset); a
dimension that cannot be mapped is one error naming the dataset, the feature and both shapes.
Frames come from the MP4 between the episode's from/to timestamps. A malformed dataset (no
meta/info.json, a v2.x dataset, an unreadable parquet, an MP4 shorter than its episodes, NaN in
the state) raises LeRobotFormatError with one line naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from eva_core.data import lerobot_format as F
from eva_core.data.episode import Episode
from eva_core.data.lerobot_format import LeRobotFormatError

log = logging.getLogger(__name__)
_warned: set = set()


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def read_parquet(path: Path):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing file")
    try:
        return pq.read_table(str(path))
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a torn file
        raise LeRobotFormatError(f"{path}: not a readable parquet file ({_one_line(e)})") from None


def column_matrix(table, key: str, where) -> np.ndarray:
    """(N, D) float64 of a list / fixed-size-list column (or (N, 1) of a scalar one)."""
    import pyarrow as pa

    if key not in table.column_names:
        raise LeRobotFormatError(f"{where}: no column {key!r} (columns: {table.column_names})")
    col = table.column(key).combine_chunks()
    n = len(col)
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        vals = col.flatten().to_numpy(zero_copy_only=False)
        if n and vals.size % n:
            raise LeRobotFormatError(f"{where}: column {key!r} has rows of different lengths")
        return vals.astype(np.float64).reshape(n, -1 if n else 0)
    return col.to_numpy(zero_copy_only=False).astype(np.float64).reshape(n, 1)


class LeRobotDataset:
    """The metadata of a local v3.0 dataset and its episodes, read on demand."""

    def __init__(self, root, embodiment=None):
        self.root = Path(root)
        self.info = F.load_info(self.root)
        if embodiment is None:
            from eva_core.embodiment import load_embodiment

            embodiment = load_embodiment()
        self.emb = embodiment
        self.fps = float(self.info["fps"])
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()
        self._tables: dict[Path, object] = {}
        self._maps = {key: self._mapping(key) for key in (F.STATE, F.ACTION)}

    def __len__(self) -> int:
        return len(self.episodes)

    # ---- meta -------------------------------------------------------------------------------------
    def _read_tasks(self) -> dict[str, int]:
        path = self.root / F.TASKS_PATH
        if not path.exists():
            return {}
        t = read_parquet(path)
        name = "task" if "task" in t.column_names else "__index_level_0__"
        if name not in t.column_names or "task_index" not in t.column_names:
            raise LeRobotFormatError(f"{path}: expected columns 'task' and 'task_index', got {t.column_names}")
        return dict(zip(t.column(name).to_pylist(), t.column("task_index").to_pylist()))

    def _read_episodes(self) -> list[dict]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{self.root}: no episodes table (meta/episodes/chunk-*/file-*.parquet)")
        rows = [r for f in files for r in read_parquet(f).to_pylist()]
        need = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                "dataset_to_index"] + [f"videos/{k}/{c}" for k in F.video_keys(self.info)
                                       for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
        for key in need:
            if rows and key not in rows[0]:
                raise LeRobotFormatError(f"{files[0]}: no column {key!r}")
        return sorted(rows, key=lambda r: r["episode_index"])

    def episode_stats(self, i: int) -> dict:
        """Per-episode stats from the episodes table (columns stats/<feature>/<stat>)."""
        out: dict = {}
        for col, v in self.episodes[i].items():
            if col.startswith("stats/") and v is not None:
                key, stat = col[len("stats/"):].rsplit("/", 1)
                out.setdefault(key, {})[stat] = np.asarray(v, dtype=np.float64)
        return {k: v for k, v in out.items() if {"min", "max", "mean", "std", "count"} <= set(v)}

    def _mapping(self, key: str):
        """Column indices taking the feature onto the embodiment's joints (None: as stored)."""
        ft = self.info["features"][key]
        shape, emb = list(ft["shape"]), self.emb
        names = F.flat_names(ft.get("names"))
        if names and len(names) == (shape[0] if shape else 0) and set(emb.joint_names) <= set(names):
            idx = [names.index(j) for j in emb.joint_names]
            return None if idx == list(range(len(names))) else idx
        if shape != [emb.dof]:
            raise LeRobotFormatError(f"{self.root}: feature {key!r} has shape {shape}, embodiment {emb.name!r} "
                                     f"needs [{emb.dof}] (names {names if names else 'none'})")
        if (str(self.root), key) not in _warned:
            _warned.add((str(self.root), key))
            log.warning("%s: feature %r names %s are not embodiment %r's joint names; mapped by position",
                        self.root, key, names[:3] + ["..."] if names else "none", emb.name)
        return None

    def camera_key(self, camera: str | None) -> str:
        keys = F.video_keys(self.info)
        if not keys:
            raise LeRobotFormatError(f"{self.root}: no video feature (image features are not read)")
        if camera is None:
            return F.video_key("cam_high") if F.video_key("cam_high") in keys else keys[0]
        for k in (camera, F.video_key(camera)):
            if k in keys:
                return k
        raise LeRobotFormatError(f"{self.root}: no camera {camera!r} (cameras: "
                                 f"{[F.camera_name(k) for k in keys]}, or their keys {keys})")

    # ---- one episode ------------------------------------------------------------------------------
    def _table(self, path: Path):
        if path not in self._tables:
            self._tables = {path: read_parquet(path)}   # keep one file in memory
        return self._tables[path]

    def numbers(self, i: int) -> dict:
        """qpos, action (mapped onto the embodiment), timestamps and task of episode `i`."""
        row = self.episodes[i]
        e = row["episode_index"]
        path = self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                         file_index=row["data/file_index"])
        t = self._table(path)
        ep_col = column_matrix(t, "episode_index", path)[:, 0]
        sel = np.flatnonzero(ep_col == e)
        where = f"{path}: episode {e}"
        if len(sel) != row["length"]:
            raise LeRobotFormatError(f"{where}: {len(sel)} rows, the episodes table says {row['length']}")
        order = sel[np.argsort(column_matrix(t, "frame_index", path)[sel, 0], kind="stable")]
        out = {"timestamp": column_matrix(t, "timestamp", path)[order, 0]}
        for key, name in ((F.STATE, "qpos"), (F.ACTION, "action")):
            m = column_matrix(t, key, path)[order]
            if m.shape[1] != self.info["features"][key]["shape"][0]:
                raise LeRobotFormatError(f"{where}: column {key!r} has {m.shape[1]} dims, info.json says "
                                         f"{self.info['features'][key]['shape']}")
            if not np.isfinite(m).all():
                r, c = np.argwhere(~np.isfinite(m))[0]
                raise LeRobotFormatError(f"{where}: feature {key!r} holds NaN/inf (first at frame {r}, dim {c})")
            idx = self._maps[key]
            out[name] = m if idx is None else m[:, idx]
        task = row.get("tasks") or [""]
        if "task_index" in t.column_names and self.tasks:
            inv = {v: k for k, v in self.tasks.items()}
            task = [inv.get(int(column_matrix(t, "task_index", path)[order[0], 0]), task[0])]
        out["task"] = task[0] if task else ""
        return out

    def frames(self, i: int, key: str) -> np.ndarray:
        """(N, H, W, 3) uint8 of camera `key` for episode `i`, from its MP4 between from/to timestamps."""
        import av

        row = self.episodes[i]
        path = self.root / self.info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                          file_index=row[f"videos/{key}/file_index"])
        n, t0, t1 = row["length"], row[f"videos/{key}/from_timestamp"], row[f"videos/{key}/to_timestamp"]
        tol = 0.5 / self.fps
        if not path.is_file():
            raise LeRobotFormatError(f"{path}: missing video of episode {row['episode_index']}")
        out = []
        try:
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                if t0 > 0:
                    c.seek(int(max(0.0, t0 - tol) / s.time_base), stream=s, backward=True, any_frame=False)
                for fr in c.decode(s):
                    ts = float(fr.pts * s.time_base) if fr.pts is not None else len(out) / self.fps
                    if ts < t0 - tol:
                        continue
                    if ts >= t1 - tol or len(out) == n:
                        break
                    out.append(fr.to_ndarray(format="rgb24"))
        except (av.error.FFmpegError, OSError) as e:
            raise LeRobotFormatError(f"{path}: not a readable video ({_one_line(e)})") from None
        if len(out) < n:
            raise LeRobotFormatError(f"{path}: shorter than its episodes: episode {row['episode_index']} needs {n} "
                                     f"frames from {t0:.3f} s, the file has {len(out)}")
        return np.stack(out)

    def read(self, i: int, camera: str | None = None, cameras="all") -> Episode:
        """Episode `i` (the position in the episodes table). cameras: "all" or names to decode
        besides the primary `camera`."""
        primary = self.camera_key(camera)
        keys = F.video_keys(self.info) if cameras == "all" else [self.camera_key(c) for c in cameras]
        keys = list(dict.fromkeys([primary, *keys]))
        num = self.numbers(i)
        imgs = {F.camera_name(k): self.frames(i, k) for k in keys}
        e = self.episodes[i]["episode_index"]
        return Episode(frames=imgs[F.camera_name(primary)], qpos=num["qpos"], action=num["action"], fps=self.fps,
                       instruction=num["task"], camera=F.camera_name(primary), cameras=imgs,
                       source=f"{self.root}::episode_{e}",
                       meta={"format": "lerobot", "episode_index": e, "timestamps": num["timestamp"]})


def check_dataset(root) -> list[str]:
    """Problems of a dataset against its own info.json: each feature's dtype and shape against the
    parquet columns and the videos, the totals and the episodes' timestamps ([] when consistent)."""
    import av
    import pyarrow as pa

    ds = LeRobotDataset(root)
    info, problems = ds.info, []
    arrow = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
             "bool": pa.bool_(), "uint8": pa.uint8(), "string": pa.string()}
    seen = set()
    for row in ds.episodes:
        path = ds.root / info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        if path in seen:
            continue
        seen.add(path)
        schema = read_parquet(path).schema
        for key, ft in info["features"].items():
            if ft["dtype"] in ("video", "image"):
                continue
            if key not in schema.names:
                problems.append(f"{path}: no column {key!r}")
                continue
            typ = schema.field(key).type
            if list(ft["shape"]) == [1] and not (pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ)):
                inner, size = typ, 1
            else:
                inner = typ.value_type
                size = typ.list_size if pa.types.is_fixed_size_list(typ) else None
            if inner != arrow.get(ft["dtype"]):
                problems.append(f"{path}: column {key!r} is {inner}, info.json says {ft['dtype']}")
            if size is not None and [size] != list(ft["shape"]):
                problems.append(f"{path}: column {key!r} has {size} values a row, info.json says {ft['shape']}")
    for key in F.video_keys(info):
        ft = info["features"][key]
        for f in sorted({(r[f"videos/{key}/chunk_index"], r[f"videos/{key}/file_index"]) for r in ds.episodes}):
            path = ds.root / info["video_path"].format(video_key=key, chunk_index=f[0], file_index=f[1])
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                got = [s.codec_context.height, s.codec_context.width, 3]
                frames = sum(1 for _ in c.decode(s))
            if got != list(ft["shape"]):
                problems.append(f"{path}: frames are {got}, info.json says {ft['shape']}")
            need = max(r[f"videos/{key}/to_timestamp"] for r in ds.episodes
                       if (r[f"videos/{key}/chunk_index"], r[f"videos/{key}/file_index"]) == f)
            if frames < round(need * ds.fps):
                problems.append(f"{path}: {frames} frames, the episodes need {round(need * ds.fps)}")
            codec = (ft.get("info") or {}).get("video.codec")
            if codec is not None and codec != s.codec_context.codec.canonical_name:
                problems.append(f"{path}: codec {s.codec_context.codec.canonical_name}, info.json says {codec}")
    if info["total_episodes"] != len(ds.episodes):
        problems.append(f"{ds.root}: total_episodes {info['total_episodes']}, the episodes table has {len(ds.episodes)}")
    if info["total_frames"] != sum(r["length"] for r in ds.episodes):
        problems.append(f"{ds.root}: total_frames {info['total_frames']} != the sum of the episodes' lengths")
    for i in range(len(ds)):
        ts = ds.numbers(i)["timestamp"]
        want = (np.arange(len(ts)) / ds.fps).astype(np.float32)
        if not np.allclose(ts, want, atol=1e-4):
            problems.append(f"{ds.root}: episode {ds.episodes[i]['episode_index']}: timestamps are not frame_index / fps")
    return problems
