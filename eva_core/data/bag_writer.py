"""Crash-safe rosbag2 recording with `rosbags`: an episode is a directory of short segment bags.

rosbags' Writer writes an MCAP's summary and the bag's `metadata.yaml` only in `close()`, and its
Reader refuses a bag without them, so a writer killed with SIGKILL leaves an unreadable bag.
`SegmentedBagWriter` therefore closes a segment every `segment_seconds` (or `segment_bytes`)
and opens the next, so a kill loses at most the open segment, and `eva_core.data.rosbag_io`
still recovers that segment's complete chunks. Each closed segment is an ordinary rosbag2 bag
(`ros2 bag info` / rosbags read it). Layout:

    <episode dir>/seg_00000/{metadata.yaml, seg_00000.mcap}
    <episode dir>/seg_00001/...

Latched topics (e.g. the instruction) are re-written at the start of every segment, so each
segment stands alone. Messages are the raw CDR bytes a `raw=True` subscription delivers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TopicInfo:
    topic: str
    msgtype: str
    latched: bool = False
    qos_yaml: str = ""   # offered_qos_profiles, as rosbag2 stores them ('' = none)


class SegmentedBagWriter:
    def __init__(self, episode_dir, segment_seconds: float = 2.0, segment_bytes: int = 0, storage: str = "mcap"):
        from rosbags.rosbag2 import StoragePlugin
        from rosbags.typesys import Stores, get_typestore

        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        self.dir = Path(episode_dir)
        if self.dir.exists():
            raise FileExistsError(f"{self.dir}: episode directory exists; refusing to write into it")
        self.dir.mkdir(parents=True)
        self.segment_ns = int(segment_seconds * 1e9)
        self.segment_bytes = int(segment_bytes)
        self.plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.store = get_typestore(Stores.ROS2_KILTED)
        self.topics: dict[str, TopicInfo] = {}
        self._latched: dict[str, tuple[int, bytes]] = {}
        self._writer = None
        self._conns: dict[str, object] = {}
        self._seg_start = 0
        self._seg_bytes = 0
        self.segments = 0
        self.messages = 0
        self._lock = threading.Lock()
        self.closed = False

    def add_topic(self, info: TopicInfo) -> None:
        with self._lock:
            if info.topic in self.topics:
                return
            self.topics[info.topic] = info
            if self._writer is not None:
                self._connect(info)

    def _connect(self, info: TopicInfo) -> None:
        self._conns[info.topic] = self._writer.add_connection(info.topic, info.msgtype, typestore=self.store)

    def _open(self, t_ns: int) -> None:
        from rosbags.rosbag2 import Writer

        name = f"seg_{self.segments:05d}"
        self._writer = Writer(self.dir / name, version=9, storage_plugin=self.plugin)
        self._writer.open()
        self._conns = {}
        for info in self.topics.values():
            self._connect(info)
        self._seg_start, self._seg_bytes = t_ns, 0
        self.segments += 1
        for topic, (_t, data) in self._latched.items():   # each segment stands alone
            self._writer.write(self._conns[topic], t_ns, data)

    def _close_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, topic: str, t_ns: int, data: bytes) -> None:
        """Write one raw CDR message received at `t_ns` (ns since the epoch)."""
        with self._lock:
            if self.closed:
                return
            info = self.topics.get(topic)
            if info is None:
                raise KeyError(f"{topic}: not added to the recording")
            if self._writer is not None and (t_ns - self._seg_start >= self.segment_ns or
                                             (self.segment_bytes and self._seg_bytes >= self.segment_bytes)):
                self._close_segment()
            if self._writer is None:
                self._open(t_ns)
            self._writer.write(self._conns[topic], t_ns, bytes(data))
            self._seg_bytes += len(data)
            self.messages += 1
            if info.latched:
                self._latched[topic] = (t_ns, bytes(data))

    def close(self) -> None:
        with self._lock:
            self._close_segment()
            self.closed = True
