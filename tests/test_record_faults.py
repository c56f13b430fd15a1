"""Recording under storage faults (issue 23, rows 11-12), without a ROS graph: a removed episode
directory or a full disk is one counted fault, never a half-closed writer or an assertion; the
converter names an empty segment and says how many seconds a damaged one lost; a node whose work
and close both fail reports the work's error."""

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from eva_core.data.bag_writer import SegmentedBagWriter, TopicInfo
from eva_core.data import rosbag_episodes
from eva_core.data.rosbag_episodes import ConvertOptions, convert_bag
from eva_core.data.rosbag_io import BagReport, iter_bag
from eva_ros.testing import REPO

from test_bag_episodes import CAM, EMB, T0, image_cdr, record

pytestmark = pytest.mark.ros
NS = 10**9


def _writer(path, segment=0.5):
    w = SegmentedBagWriter(path, segment_seconds=segment)
    w.add_topic(TopicInfo(CAM, "sensor_msgs/msg/Image"))
    return w


def _frames(w, start, stop, fps=20):
    """Write frames from `start` to `stop` s after T0; returns the StorageFaults raised."""
    faults = []
    for k in range(int(start * fps), int(stop * fps)):
        t = T0 + k / fps
        try:
            w.write(CAM, int(t * NS), image_cdr(t, k)[0])
        except OSError as e:   # a StorageFault is an OSError
            faults.append(e)
    return faults


def test_a_removed_episode_directory_is_one_fault_and_the_recording_carries_on(tmp_path):
    w = _writer(tmp_path / "ep")
    assert _frames(w, 0, 1.2) == []
    shutil.rmtree(tmp_path / "ep")            # a failing disk: the open segment's close fails
    faults = _frames(w, 1.2, 3.0)
    assert len(faults) == 1, faults          # logged once: the next message opened a fresh segment
    assert getattr(faults[0], "fatal", None) is False and "seg_00002" in str(faults[0])
    assert "metadata" in str(faults[0]) or "No such file" in str(faults[0])   # the first cause, named
    w.close()                                 # no `assert self.storage`: the failed writer was dropped
    assert w.faults == 1 and w.closed
    assert w.lost == 10   # the aborted segment's frames (1.0-1.45 s), gone with the directory
    segs = sorted((tmp_path / "ep").iterdir())
    assert segs and all((s / "metadata.yaml").exists() for s in segs)   # fresh, complete segments
    stamps = [m.log_time_ns for m in iter_bag(tmp_path / "ep")]
    assert min(stamps) <= int((T0 + 1.55) * NS) and max(stamps) >= int((T0 + 2.9) * NS)


def test_a_full_disk_aborts_the_segment_then_stops_the_writer_without_reusing_it(tmp_path, monkeypatch):
    from rosbags.rosbag2 import storage_mcap

    w = _writer(tmp_path / "ep")
    assert _frames(w, 0, 0.7) == []
    used = []

    def full(self, *a):
        used.append(self)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_mcap.McapWriter, "close_chunk", full)
    faults = _frames(w, 0.7, 3.0)
    # seg 1 fails at its close, seg 2 (fresh) fails too: then the writer stops, once
    assert len(faults) == 2, faults
    assert [getattr(f, "fatal", None) for f in faults] == [False, True]
    assert all("No space left" in str(f) for f in faults)
    assert len(set(map(id, used))) == len(used)   # each failed storage was tried once, never reused
    w.close()                                      # nothing left open: no second error
    assert w.faults == 2 and w.closed
    assert w.lost == 20   # seg 1 (0.5-0.95 s) and seg 2 (1.05-1.5 s); the frame at 1.0 s was dropped
    monkeypatch.undo()
    n = w.messages
    assert _frames(w, 3.0, 3.2) == [] and w.messages == n   # stopped: nothing more is written


def test_a_due_segment_is_closed_by_the_tick_without_a_new_message(tmp_path):
    w = _writer(tmp_path / "ep")
    _frames(w, 0, 0.3)
    seg = tmp_path / "ep" / "seg_00000"
    w.tick(int((T0 + 0.4) * NS))
    assert not (seg / "metadata.yaml").exists()
    w.tick(int((T0 + 0.6) * NS))   # 0.5 s after the segment's first message: closed, on disk
    assert (seg / "metadata.yaml").exists()
    assert len(list(iter_bag(tmp_path / "ep"))) == 6
    w.close()


def test_an_empty_segment_is_named_and_the_seconds_lost_are_counted(tmp_path):
    record(tmp_path / "ep", seconds=2.0, segment=0.5)
    segs = sorted((tmp_path / "ep").iterdir())
    # the last segment: its writer was killed before its first chunk (0 bytes, no metadata)
    (segs[-1] / "metadata.yaml").unlink()
    mcap = next(segs[-1].glob("*.mcap"))
    mcap.write_bytes(b"")
    end = int((T0 + 2.3) * NS)   # the writer's last touch of the file (its kill)
    os.utime(mcap, ns=(end, end))
    report = BagReport(tmp_path / "ep")
    last = max(m.log_time_ns for m in iter_bag(tmp_path / "ep", report))
    assert [e for e in report.errors if "seg_" in e] == \
        [f"{mcap}: empty (the writer was killed before its first chunk)"], report.errors
    assert report.lost_s == pytest.approx((end - last) / NS) and report.lost_s > 0.3
    # a damaged segment in the middle lost up to the next segment's first message
    (segs[1] / "metadata.yaml").unlink()
    mid = next(segs[1].glob("*.mcap"))
    mid.write_bytes(b"")
    report = BagReport(tmp_path / "ep")
    msgs = list(iter_bag(tmp_path / "ep", report))
    first_of_2 = min(m.log_time_ns for m in iter_bag(segs[2]))
    last_of_0 = max(m.log_time_ns for m in iter_bag(segs[0]))
    assert len(report.lost) == 2 and len(msgs) > 0
    assert report.lost[0] == (segs[1], pytest.approx((first_of_2 - last_of_0) / NS))
    path, report, info = convert_bag(tmp_path / "ep", EMB, ConvertOptions(), tmp_path / "ep.hdf5")
    assert path is not None and "s lost in 2 damaged segments" in rosbag_episodes.lost_note(report)


def test_the_cli_line_of_each_episode_says_how_much_was_lost(tmp_path, capsys):
    from eva_core.data.rosbag_episodes import main as bag_main

    record(tmp_path / "ep", seconds=1.5)
    assert bag_main([str(tmp_path / "ep"), "--out", str(tmp_path / "out")]) == 0
    assert "nothing lost" in capsys.readouterr().out
    seg = sorted((tmp_path / "ep").iterdir())[-1]   # killed: no metadata, half its bytes
    (seg / "metadata.yaml").unlink()
    mcap = next(seg.glob("*.mcap"))
    os.truncate(mcap, mcap.stat().st_size // 2)
    assert bag_main([str(tmp_path / "ep"), "--out", str(tmp_path / "out2")]) == 1
    assert "s lost in 1 damaged segment)" in capsys.readouterr().out


RUN_NODE = textwrap.dedent("""
    import sys
    import rclpy.node
    from eva_core.cli import cli_main
    from eva_ros.runtime import _run_node

    class Failing(rclpy.node.Node):
        def __init__(self):
            super().__init__("failing_node")
            self.create_timer(0.01, lambda: None)

        def failure(self):
            raise OSError("first cause: the disk is gone")

        def close(self):
            raise RuntimeError("close failed too")

    sys.exit(cli_main("eva-failing", lambda rest: _run_node("eva-failing", "doc", Failing, ["x", *rest], 2), []))
""")


def test_run_node_reports_the_work_error_when_close_fails_too(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    out = subprocess.run([sys.executable, "-c", RUN_NODE], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert "eva-failing: first cause: the disk is gone" in lines, out.stderr   # the original, in one line
    assert any("close failed too" in x for x in lines)                          # the second, chained
    assert "Traceback" not in out.stderr and "never retrieved" not in out.stderr, out.stderr
