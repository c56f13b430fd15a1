"""One entry for every episode source: HDF5 files (ALOHA / Cobot Magic, ours, RoboTwin), folders
of them, and local LeRobot v3.0 dataset roots, in any mix.

    for ep in load_episodes("data/sim", "datasets/aloha_lerobot", camera="cam_high"):
        ...

`find_episodes(*paths)` lists one EpisodeRef per episode (an HDF5 file, or one episode of a
LeRobot dataset) without reading frames; `read_ref(ref, ...)` reads one. A folder is walked for
.hdf5/.h5 files and for LeRobot roots (a directory with meta/ or data/chunk-*). The camera is a
short name ("cam_high") or a LeRobot key ("observation.images.cam_high").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from eva_core.data import lerobot_format as F
from eva_core.data.episode import Episode

HDF5_SUFFIXES = (".hdf5", ".h5")


@dataclass(frozen=True)
class EpisodeRef:
    """An HDF5 episode file (index None) or episode `index` (table position) of a LeRobot root."""

    path: Path
    index: int | None = None

    @property
    def is_lerobot(self) -> bool:
        return self.index is not None

    def __str__(self) -> str:
        return str(self.path) if self.index is None else f"{self.path}::episode_{self.index}"


def parse_ref(text: str) -> EpisodeRef:
    """The EpisodeRef that `str(ref)` printed ("path" or "root::episode_N")."""
    path, sep, tail = str(text).rpartition("::episode_")
    if sep and tail.isdigit():
        return EpisodeRef(Path(path), int(tail))
    return EpisodeRef(Path(text))


_datasets: dict = {}


def lerobot_dataset(root, embodiment=None):
    """The LeRobotDataset of `root`, opened once per process, embodiment and version of its info.json."""
    from eva_core.data.lerobot_read import LeRobotDataset

    info = Path(root) / F.INFO_PATH
    st = info.stat() if info.is_file() else None
    key = (str(Path(root).resolve()), getattr(embodiment, "name", None),
           (st.st_ino, st.st_mtime_ns) if st else None)
    if key not in _datasets:
        _datasets[key] = LeRobotDataset(root, embodiment)
    return _datasets[key]


def _lerobot_refs(root: Path, embodiment=None) -> list[EpisodeRef]:
    return [EpisodeRef(root, i) for i in range(len(lerobot_dataset(root, embodiment)))]


def find_episodes(*paths, embodiment=None) -> list[EpisodeRef]:
    """Every episode under the given files and folders, sorted by path then index. A missing path
    is a FileNotFoundError; a LeRobot root is opened (and checked) here."""
    out: list[EpisodeRef] = []
    for r in paths:
        p = Path(r)
        if p.is_file():
            out.append(EpisodeRef(p))
        elif p.is_dir():
            if F.is_lerobot_root(p):
                out += _lerobot_refs(p, embodiment)
                continue
            roots = sorted({q.parent.parent for q in p.rglob("meta/info.json")} |
                           {q.parent for q in p.rglob("meta") if q.is_dir() and F.is_lerobot_root(q.parent)})
            for root in roots:
                out += _lerobot_refs(root, embodiment)
            out += [EpisodeRef(q) for q in p.rglob("*") if q.suffix in HDF5_SUFFIXES and not q.name.startswith(".")
                    and not any(root in q.parents for root in roots)]
        else:
            raise FileNotFoundError(f"episode path not found: {p}")
    return sorted(set(out), key=lambda ref: (str(ref.path), -1 if ref.index is None else ref.index))


def hdf5_camera(camera: str | None) -> str | None:
    """A LeRobot camera key names the same camera in an HDF5 file: observation.images.cam_high -> cam_high."""
    return F.camera_name(camera) if camera and camera.startswith(F.IMAGE_PREFIX) else camera


def read_ref(ref: EpisodeRef, camera: str | None = None, cameras="all", embodiment=None, **hdf5_kw) -> Episode:
    """One episode. `hdf5_kw` (fps, grippers_in_metres, instruction) go to the HDF5 readers only."""
    if ref.is_lerobot:
        return lerobot_dataset(ref.path, embodiment).read(ref.index, camera=camera, cameras=cameras)
    from eva_core.data.hdf5_io import detect_layout, read_episode

    kw = dict(hdf5_kw)
    if camera is not None:
        kw["camera"] = hdf5_camera(camera)
    if detect_layout(ref.path) == "aloha":
        kw["cameras"] = cameras if cameras == "all" else [hdf5_camera(c) for c in cameras]
        return read_episode(ref.path, **kw)
    kw.pop("grippers_in_metres", None)
    if cameras != "all":
        kw["cameras"] = [hdf5_camera(c) for c in cameras]
    return read_episode(ref.path, **kw)


def load_episodes(*paths, camera: str | None = None, cameras="all", embodiment=None, **hdf5_kw) -> Iterator[Episode]:
    """The Episodes of any mix of HDF5 files, folders and local LeRobot v3.0 roots, one at a time."""
    for ref in find_episodes(*paths, embodiment=embodiment):
        yield read_ref(ref, camera=camera, cameras=cameras, embodiment=embodiment, **hdf5_kw)
