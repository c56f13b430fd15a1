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

rosbags writes a chunk only when 1 MiB of messages are pending (about 7 s of small frames), so
a segment is closed on time by `tick(now)` too (the recorder calls it from a timer), not only by
the next message: a kill loses at most `segment_seconds` even when messages pause. `tick` also
touches the open segment's file, so its mtime marks when the writer was last alive (what
`rosbag_io` uses to say how many seconds a killed segment lost).

Storage faults (a removed directory, a full disk): a failed write, open or close aborts the
segment's writer (never reused half-closed) and raises one `StorageFault` naming the segment and
the first cause. The next message goes to a fresh segment (the episode directory is recreated);
a second fault before any segment closed cleanly is `fatal`: the writer stops.
"""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TopicInfo:
    topic: str
    msgtype: str
    latched: bool = False
    qos_yaml: str = ""   # offered_qos_profiles, as rosbag2 stores them ('' = none)


class StorageFault(OSError):
    """A segment could not be written, opened or closed; `fatal`: the writer gave up."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class SegmentedBagWriter:
    max_faults_in_row = 2   # faults with no cleanly closed segment between them: stop
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
        self.faults = 0          # storage faults, each one aborted segment
        self.lost = 0            # messages written to aborted segments (some may be recoverable)
        self._faults_in_row = 0
        self._seg_msgs = 0
        self._seg_path: Path | None = None
        self._attempts = 0       # segment names used (a failed open still uses its name)
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

        name = f"seg_{self._attempts:05d}"
        self._attempts += 1
        self._seg_path = self.dir / name
        self._writer = Writer(self._seg_path, version=9, storage_plugin=self.plugin)
        self._writer.open()   # creates the episode directory again if it was removed
        self._conns = {}
        for info in self.topics.values():
            self._connect(info)
        self._seg_start, self._seg_bytes, self._seg_msgs = t_ns, 0, 0
        self.segments += 1
        for topic, (_t, data) in self._latched.items():   # each segment stands alone
            self._writer.write(self._conns[topic], t_ns, data)

    def _close_segment(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None   # never reused, even if close() fails
            try:
                writer.close()
            except BaseException:
                with suppress(Exception):
                    writer.abort()
                raise
            self._faults_in_row, self._seg_msgs = 0, 0

    def _fault(self, what: str, exc: BaseException, final: bool = False) -> StorageFault:
        """Abort the open segment and count the fault; the StorageFault to raise (from `exc`)."""
        seg = self._seg_path or self.dir
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with suppress(Exception):
                writer.abort()
        self.faults += 1
        self.lost += self._seg_msgs
        self._seg_msgs = 0
        self._faults_in_row += 1
        fatal = self._faults_in_row >= self.max_faults_in_row
        if fatal:
            self.closed = True
        cause = " ".join(str(exc).split()) or type(exc).__name__
        then = "segment aborted" if final else "recording stopped" if fatal else \
            "the next message starts a fresh segment"
        return StorageFault(f"{seg}: {what} failed: {cause} ({then})", fatal=fatal)

    def _due(self, t_ns: int) -> bool:
        return self._writer is not None and (t_ns - self._seg_start >= self.segment_ns or
                                             bool(self.segment_bytes and self._seg_bytes >= self.segment_bytes))

    def write(self, topic: str, t_ns: int, data: bytes) -> None:
        """Write one raw CDR message received at `t_ns` (ns since the epoch). Raises
        StorageFault (the segment aborted; `fatal`: the writer stopped)."""
        from rosbags.rosbag2 import WriterError

        with self._lock:
            if self.closed:
                return
            info = self.topics.get(topic)
            if info is None:
                raise KeyError(f"{topic}: not added to the recording")
            what = "closing the segment"
            try:
                if self._due(t_ns):
                    self._close_segment()
                what = "opening a segment"
                if self._writer is None:
                    self._open(t_ns)
                what = "writing"
                self._writer.write(self._conns[topic], t_ns, bytes(data))
            except (OSError, WriterError) as e:
                raise self._fault(what, e) from e
            self._seg_bytes += len(data)
            self._seg_msgs += 1
            self.messages += 1
            if info.latched:
                self._latched[topic] = (t_ns, bytes(data))

    def tick(self, now_ns: int) -> None:
        """Close the open segment if it is due (so pending data reaches the disk without waiting
        for the next message) and touch its file (its mtime: the writer was alive then).
        Raises StorageFault like `write`."""
        from rosbags.rosbag2 import WriterError

        with self._lock:
            if self.closed or self._writer is None:
                return
            what = "closing the segment" if self._due(now_ns) else "touching the segment's file"
            try:
                if self._due(now_ns):
                    self._close_segment()
                else:
                    os.utime(self._seg_path / f"{self._seg_path.name}.{self.storage_suffix}")
            except (OSError, WriterError) as e:
                raise self._fault(what, e) from e

    @property
    def storage_suffix(self) -> str:
        return "mcap" if self.plugin.name == "MCAP" else "db3"

    def close(self) -> None:
        """Close the open segment; raises StorageFault if that fails (the segment is aborted)."""
        from rosbags.rosbag2 import WriterError

        with self._lock:
            if self.closed and self._writer is None:
                return
            self.closed = True
            try:
                self._close_segment()
            except (OSError, WriterError) as e:
                raise self._fault("closing the segment", e, final=True) from e
