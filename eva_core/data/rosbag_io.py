"""Read rosbag2 recordings message by message, keeping what is complete of a damaged one.

Sources (`iter_bag(path)`):
- a rosbag2 bag directory with `metadata.yaml` (MCAP or sqlite3): read with `rosbags`;
- an `eva-record` episode directory: its segment bags in name order;
- an MCAP file, or a bag directory whose writer was killed (no `metadata.yaml`, no MCAP
  summary): scanned record by record; every complete chunk is kept, the scan stops at the
  first truncated or corrupt record;
- a sqlite3 `.db3` file without `metadata.yaml`: its `topics` and `messages` tables.
Damage never raises: each problem becomes one line in `BagReport.errors`, and the messages read
before it are kept. `BagReport.lost_s` says how many seconds a damaged segment lost: from the last
message recovered up to it to the segment's end, i.e. the next segment's first message, or for the
last segment its file's mtime (the writer's last write; eva-record touches the open segment's
file every tick). A 0-byte file is a writer killed before its first chunk. MCAP layout: https://mcap.dev/spec (records: opcode u8, length u64, body).
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Iterator

MCAP_MAGIC = b"\x89MCAP0\r\n"
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END, OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02


@dataclass
class RawMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass
class BagReport:
    path: Path
    messages: int = 0
    segments: int = 0
    recovered: list = field(default_factory=list)   # segments read without their index
    errors: list = field(default_factory=list)      # one line each
    schemas: dict = field(default_factory=dict)     # msgtype -> message definition text
    lost_s: float = 0.0                             # seconds lost in damaged segments (see above)
    lost: list = field(default_factory=list)        # (segment, seconds) per damaged segment

    def error(self, where, problem: str) -> None:
        self.errors.append(f"{where}: {problem}")


def _string(bio: BytesIO) -> str:
    (n,) = struct.unpack("<I", _exact(bio, 4))
    return _exact(bio, n).decode()


def _exact(bio: BytesIO, n: int) -> bytes:
    if n > len(bio.getbuffer()) - bio.tell():
        raise EOFError
    b = bio.read(n)
    if len(b) != n:
        raise EOFError
    return b


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        out = data
    elif compression == "zstd":   # the codecs rosbags itself depends on
        try:
            from compression import zstd   # Python >= 3.14
        except ImportError:
            from backports import zstd
        out = zstd.decompress(data)
    elif compression == "lz4":
        import lz4.frame

        out = lz4.frame.decompress(data)
    else:
        raise ValueError(f"unsupported chunk compression {compression!r}")
    if len(out) != size:
        raise ValueError(f"chunk decompresses to {len(out)} bytes, its header says {size}")
    return out


def scan_mcap(path: Path, report: BagReport) -> Iterator[RawMessage]:
    """Messages of an MCAP file in file order, complete or not (see the module docstring)."""
    schemas, channels = {}, {}
    with open(path, "rb") as f:
        magic = f.read(8)
        if not magic:
            report.error(path, "empty (the writer was killed before its first chunk)")
            return
        if magic != MCAP_MAGIC:
            report.error(path, "truncated in its header (the writer was killed before its first chunk)"
                         if MCAP_MAGIC.startswith(magic) else "not an MCAP file (bad magic)")
            return
        chunks = 0
        while True:
            start = f.tell()
            head = f.read(9)
            if not head:
                report.error(path, f"truncated after {chunks} complete chunks (no footer; the writer was killed?)")
                return
            if len(head) < 9:
                report.error(path, f"truncated at byte {start} after {chunks} complete chunks")
                return
            op, length = head[0], struct.unpack("<Q", head[1:])[0]
            body = f.read(length)
            if len(body) < length:
                report.error(path, f"truncated at byte {start} after {chunks} complete chunks")
                return
            if op in (OP_DATA_END, OP_FOOTER):
                return
            try:
                if op == OP_CHUNK:
                    records = _chunk_records(body)
                    msgs = list(_records(records, schemas, channels, report))
                    chunks += 1
                    yield from msgs
                elif op in (OP_SCHEMA, OP_CHANNEL, OP_MESSAGE):
                    yield from _records(head + body, schemas, channels, report)
                elif op > 0x11 or op == 0x00:
                    raise ValueError(f"unknown record opcode 0x{op:02x}")
            except (EOFError, ValueError, OverflowError, struct.error, UnicodeDecodeError) as e:
                report.error(path, f"corrupt record at byte {start} after {chunks} complete chunks ({e or 'short record'})")
                return


def _chunk_records(body: bytes) -> bytes:
    bio = BytesIO(body)
    _t0, _t1, size, _crc = struct.unpack("<QQQI", _exact(bio, 28))
    compression = _string(bio)
    (csize,) = struct.unpack("<Q", _exact(bio, 8))
    return _decompress(_exact(bio, csize), compression, size)


def _records(buf: bytes, schemas: dict, channels: dict, report: BagReport) -> Iterator[RawMessage]:
    bio = BytesIO(buf)
    while bio.tell() < len(buf):
        op = _exact(bio, 1)[0]
        (length,) = struct.unpack("<Q", _exact(bio, 8))
        rec = BytesIO(_exact(bio, length))
        if op == OP_SCHEMA:
            (sid,) = struct.unpack("<H", _exact(rec, 2))
            name, _enc = _string(rec), _string(rec)
            (n,) = struct.unpack("<I", _exact(rec, 4))
            schemas[sid] = name
            report.schemas[name] = _exact(rec, n).decode()
        elif op == OP_CHANNEL:
            cid, sid = struct.unpack("<HH", _exact(rec, 4))
            topic = _string(rec)
            channels[cid] = (topic, schemas.get(sid, ""))
        elif op == OP_MESSAGE:
            cid, _seq, log_time, _pub = struct.unpack("<HIQQ", _exact(rec, 22))
            if cid not in channels:
                raise ValueError(f"message on unknown channel {cid}")
            topic, msgtype = channels[cid]
            yield RawMessage(topic, msgtype, log_time, rec.read())


def read_db3(path: Path, report: BagReport) -> Iterator[RawMessage]:
    """Messages of a rosbag2 sqlite3 file (what can be read of a damaged one)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        report.error(path, f"cannot open the sqlite3 file: {e}")
        return
    try:
        topics = {i: (n, t) for i, n, t in con.execute("SELECT id, name, type FROM topics")}
        for tid, stamp, data in con.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
            if tid in topics:
                yield RawMessage(topics[tid][0], topics[tid][1], int(stamp), bytes(data))
    except sqlite3.Error as e:
        report.error(path, f"corrupt sqlite3 bag: {e}")
    finally:
        con.close()


def _read_with_rosbags(path: Path, report: BagReport) -> Iterator[RawMessage]:
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # noqa: BLE001 - rosbags raises several types for one bad bag
        report.error(path, f"rosbags cannot open the bag ({' '.join(str(e).split())}); scanning its files")
        yield from _scan_files(path, report)
        return
    try:
        for conn in reader.connections:
            if conn.msgdef and conn.msgdef.data:
                report.schemas.setdefault(conn.msgtype, conn.msgdef.data)
        for conn, stamp, data in reader.messages():
            yield RawMessage(conn.topic, conn.msgtype, int(stamp), bytes(data))
    except Exception as e:  # noqa: BLE001
        report.error(path, f"corrupt bag: {' '.join(str(e).split())}")
    finally:
        reader.close()


def _scan_files(path: Path, report: BagReport) -> Iterator[RawMessage]:
    files = sorted(path.glob("*.mcap")) + sorted(path.glob("*.db3"))
    if not files:
        report.error(path, "no .mcap or .db3 file")
    for f in files:
        report.recovered.append(f)
        yield from (scan_mcap(f, report) if f.suffix == ".mcap" else read_db3(f, report))


def segments_of(path: Path) -> list[Path]:
    """The bag directories / files that make up `path` (one bag, or an eva-record episode)."""
    if path.is_file() or (path / "metadata.yaml").exists() or any(path.glob("*.mcap")) or any(path.glob("*.db3")):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def iter_bag(path, report: BagReport | None = None) -> Iterator[RawMessage]:
    """Every readable message of `path` (see the module docstring); problems go to `report`."""
    path = Path(path)
    report = report if report is not None else BagReport(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag")
    segs = segments_of(path)
    if not segs:
        report.error(path, "no bag segments in this directory")
    spans = []   # per segment: (segment, damaged, first log time, last log time)
    for seg in segs:
        report.segments += 1
        errors, first, last = len(report.errors), None, None
        if seg.is_file():
            src = scan_mcap(seg, report) if seg.suffix == ".mcap" else read_db3(seg, report)
        elif (seg / "metadata.yaml").exists():
            src = _read_with_rosbags(seg, report)
        else:
            src = _scan_files(seg, report)
        for msg in src:
            report.messages += 1
            first = msg.log_time_ns if first is None else min(first, msg.log_time_ns)
            last = msg.log_time_ns if last is None else max(last, msg.log_time_ns)
            yield msg
        spans.append((seg, len(report.errors) > errors, first, last))
    _count_lost(spans, report)


def _last_write_ns(seg: Path) -> int | None:
    files = [seg] if seg.is_file() else list(seg.glob("*.mcap")) + list(seg.glob("*.db3"))
    return max((f.stat().st_mtime_ns for f in files), default=None)


def _count_lost(spans: list, report: BagReport) -> None:
    """Seconds lost per damaged segment: from the last message recovered so far to the segment's
    end (the next segment's first message, else the last write to its file)."""
    for i, (seg, damaged, _first, _last) in enumerate(spans):
        if not damaged:
            continue
        recovered = [s[3] for s in spans[:i + 1] if s[3] is not None]
        after = [s[2] for s in spans[i + 1:] if s[2] is not None]
        end = after[0] if after else _last_write_ns(seg)
        if not recovered or end is None:
            continue
        lost = max(0.0, (end - max(recovered)) * 1e-9)
        report.lost.append((seg, lost))
        report.lost_s += lost
