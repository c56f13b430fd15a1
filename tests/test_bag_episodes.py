"""Segmented rosbag2 writing, crash recovery and bag -> episode conversion (no ROS graph)."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from eva_core.data.bag_writer import SegmentedBagWriter, TopicInfo
from eva_core.data.hdf5_io import read_aloha_hdf5
from eva_core.data.rosbag_episodes import ConvertOptions, convert_bag, main as bag_main
from eva_core.embodiment import load_embodiment

pytestmark = pytest.mark.ros

EMB = load_embodiment()
TS = get_typestore(Stores.ROS2_KILTED)
CAM, JOINTS, LEADER, INSTR = "/cam_high/color/image_raw", "/joint_states", "/leader/joint_states", "/eva/instruction"
T0 = 1.7e9
HOME = (EMB.pos_lower + EMB.pos_upper) / 2


def _hdr(t):
    return TS.types["std_msgs/msg/Header"](stamp=TS.types["builtin_interfaces/msg/Time"](
        sec=int(t), nanosec=int(round((t % 1) * 1e9)) % 1_000_000_000), frame_id="")


def image_cdr(t, i, h=24, w=32):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0], img[..., 1] = i % 256, (i * 7) % 256
    img[i % h, :, 2] = 255
    msg = TS.types["sensor_msgs/msg/Image"](header=_hdr(t), height=h, width=w, encoding="rgb8", is_bigendian=0,
                                            step=w * 3, data=img.ravel())
    return TS.serialize_cdr(msg, "sensor_msgs/msg/Image"), img


def q_of(t):
    """A known smooth joint trajectory (action units)."""
    return HOME + 0.2 * np.sin(2.0 * (t - T0) + np.arange(EMB.dof))


def joints_cdr(t, q):
    msg = TS.types["sensor_msgs/msg/JointState"](header=_hdr(t), name=list(EMB.joint_names),
                                                 position=EMB.action_to_joint_positions(q),
                                                 velocity=np.zeros(0), effort=np.zeros(0))
    return TS.serialize_cdr(msg, "sensor_msgs/msg/JointState")


def string_cdr(s):
    return TS.serialize_cdr(TS.types["std_msgs/msg/String"](data=s), "std_msgs/msg/String")


def record(path, seconds=1.5, fps=20, rate=200, segment=0.5, storage="mcap", leader=True, size=(24, 32),
           instruction="pick up the red block"):
    """A synthetic recording: camera at `fps`, joints (and leader = joints + 0.01) at `rate`."""
    w = SegmentedBagWriter(path, segment_seconds=segment, storage=storage)
    for topic, kind, latched in ((CAM, "sensor_msgs/msg/Image", False), (JOINTS, "sensor_msgs/msg/JointState", False),
                                 (LEADER, "sensor_msgs/msg/JointState", False), (INSTR, "std_msgs/msg/String", True)):
        w.add_topic(TopicInfo(topic, kind, latched=latched))
    w.write(INSTR, int(T0 * 1e9), string_cdr(instruction))
    images, stamps = [], []
    n = int(seconds * rate)
    for k in range(n):
        t = T0 + k / rate
        w.write(JOINTS, int(t * 1e9) + 2000, joints_cdr(t, q_of(t)))
        if leader:
            w.write(LEADER, int(t * 1e9) + 3000, joints_cdr(t, q_of(t) + 0.01))
        step = rate // fps
        if k % step == min(3, step - 1) and t < T0 + seconds - 0.05:   # frames between joint samples
            tf = t + 0.5 / rate
            data, img = image_cdr(tf, len(images), *size)
            w.write(CAM, int(tf * 1e9) + 5000, data)
            images.append(img), stamps.append(tf)
    w.close()
    return np.stack(images), np.array(stamps)


def test_segments_are_complete_bags_and_convert_to_the_recorded_episode(tmp_path):
    images, stamps = record(tmp_path / "ep")
    segs = sorted((tmp_path / "ep").iterdir())
    assert len(segs) >= 3
    for seg in segs:   # every closed segment is an ordinary rosbag2 bag that rosbags reads
        with Reader(seg) as r:
            assert r.message_count > 0 and INSTR in {c.topic for c in r.connections}   # latched repeated
    out, report, info = convert_bag(tmp_path / "ep", EMB, ConvertOptions(), tmp_path / "ep.hdf5")
    assert report.errors == [] and info["dropped"] == 0
    ep = read_aloha_hdf5(out)
    np.testing.assert_array_equal(ep.frames, images)                      # every frame, in order
    np.testing.assert_allclose(ep.qpos, [q_of(t) for t in stamps], atol=2e-4)   # interpolated to frame times
    np.testing.assert_allclose(ep.action, ep.qpos + 0.01, atol=2e-4)      # the leader arms are the action
    assert ep.instruction == "pick up the red block"
    assert ep.fps == pytest.approx(20.0, rel=1e-3)


def test_skewed_frames_are_dropped_and_the_flag_sets_the_instruction(tmp_path):
    images, _ = record(tmp_path / "ep", rate=40, leader=False)   # joints at 40 Hz: 12.5 ms from a frame
    opts = ConvertOptions(max_skew=0.01, instruction="other")
    path, report, _ = convert_bag(tmp_path / "ep", EMB, opts, tmp_path / "a.hdf5")
    assert path is None and "within max skew" in report.errors[-1]
    path, report, info = convert_bag(tmp_path / "ep", EMB, ConvertOptions(max_skew=0.03, instruction="other"),
                                     tmp_path / "b.hdf5")
    ep = read_aloha_hdf5(path)
    assert ep.instruction == "other" and len(ep) == len(images) and info["action_from"] == "joint_states"


def test_sqlite3_bags_convert_and_a_corrupt_one_keeps_its_readable_part(tmp_path):
    images, _ = record(tmp_path / "ep", storage="sqlite3")
    ep = read_aloha_hdf5(convert_bag(tmp_path / "ep", EMB, ConvertOptions(), tmp_path / "ok.hdf5")[0])
    np.testing.assert_array_equal(ep.frames, images)
    last = sorted((tmp_path / "ep").iterdir())[-1]
    db = next(last.glob("*.db3"))
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    path, report, _ = convert_bag(tmp_path / "ep", EMB, ConvertOptions(), tmp_path / "part.hdf5")
    assert any(str(last) in e for e in report.errors), report.errors
    assert all("\n" not in e for e in report.errors)
    assert path is not None and 0 < len(read_aloha_hdf5(path)) < len(images)


def _mcap_copy(src_seg: Path, dst: Path) -> Path:
    """The segment's MCAP alone in a directory (as a killed writer leaves it: no metadata.yaml)."""
    dst.mkdir(parents=True)
    return Path(shutil.copy(next(src_seg.glob("*.mcap")), dst / "seg.mcap"))


def test_truncated_and_corrupt_mcap_give_one_line_errors_and_keep_the_complete_chunks(tmp_path):
    images, _ = record(tmp_path / "ep", seconds=1.0, segment=10.0, size=(240, 320))   # one segment, many chunks
    seg = next((tmp_path / "ep").iterdir())
    full = next(seg.glob("*.mcap")).stat().st_size
    trunc = _mcap_copy(seg, tmp_path / "trunc" / "seg")
    os.truncate(trunc, int(full * 0.6))
    path, report, _ = convert_bag(tmp_path / "trunc", EMB, ConvertOptions(), tmp_path / "trunc.hdf5")
    assert len(report.errors) == 1 and "truncated at byte" in report.errors[0] and "\n" not in report.errors[0]
    kept = read_aloha_hdf5(path)
    assert 0 < len(kept) < len(images)
    np.testing.assert_array_equal(kept.frames, images[: len(kept)])   # a prefix, intact

    # a damaged record inside the third chunk (its first record's length), in a bare MCAP and in a
    # bag with its index (read by rosbags)
    for name, with_index in (("corrupt", False), ("corrupt_indexed", True)):
        if with_index:
            shutil.copytree(seg, tmp_path / name / "seg")
            target = next((tmp_path / name / "seg").glob("*.mcap"))
        else:
            target = _mcap_copy(seg, tmp_path / name / "seg")
        data = bytearray(target.read_bytes())
        first_record = _chunk_offsets(data)[2] + 9 + 28 + 4 + 8   # chunk header, '' compression
        data[first_record + 1: first_record + 9] = b"\xff" * 8
        target.write_bytes(bytes(data))
        path, report, _ = convert_bag(tmp_path / name, EMB, ConvertOptions(), tmp_path / f"{name}.hdf5")
        assert len(report.errors) == 1 and "corrupt" in report.errors[0] and "\n" not in report.errors[0], report.errors
        kept = read_aloha_hdf5(path)
        assert 0 < len(kept) < len(images)
        np.testing.assert_array_equal(kept.frames, images[: len(kept)])


def _chunk_offsets(data: bytes) -> list[int]:
    """Byte offsets of the top-level chunk records of an MCAP file (https://mcap.dev/spec)."""
    pos, out = 8, []
    while pos + 9 <= len(data) and data[pos] not in (0x0F, 0x02):
        if data[pos] == 0x06:
            out.append(pos)
        pos += 9 + int.from_bytes(data[pos + 1: pos + 9], "little")
    return out


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import test_bag_episodes as t
    from eva_core.data.bag_writer import SegmentedBagWriter, TopicInfo
    w = SegmentedBagWriter({path!r}, segment_seconds=1.0)
    w.add_topic(TopicInfo(t.CAM, "sensor_msgs/msg/Image"))
    w.add_topic(TopicInfo(t.JOINTS, "sensor_msgs/msg/JointState"))
    k = 0
    while True:   # 20 frames (240x320) and 200 joint states per simulated second, until killed
        ts = t.T0 + k / 200
        w.write(t.JOINTS, int(ts * 1e9), t.joints_cdr(ts, t.q_of(ts)))
        if k % 10 == 0:
            w.write(t.CAM, int(ts * 1e9) + 1000, t.image_cdr(ts + 1e-4, k // 10, 240, 320)[0])
            print(w.segments, k // 10, flush=True)
        k += 1
""")


def test_a_sigkilled_writer_loses_at_most_the_open_segment(tmp_path):
    script = KILLED_WRITER.format(tests=str(Path(__file__).parent), path=str(tmp_path / "ep"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:   # kill once the 3rd segment holds 12 frames (>= 2 complete chunks)
            seg, frame = map(int, line.split())
            if seg == 3 and frame >= 52:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    segs = sorted((tmp_path / "ep").iterdir())
    closed = [s for s in segs if (s / "metadata.yaml").exists()]
    assert len(closed) == 2 and len(segs) == 3
    in_closed = 0
    for s in closed:
        with Reader(s) as r:
            in_closed += sum(1 for c, _, _ in r.messages() if c.topic == CAM)
    path, report, info = convert_bag(tmp_path / "ep", EMB, ConvertOptions(), tmp_path / "ep.hdf5")
    assert any("seg_00002" in e and ("truncated" in e or "corrupt" in e) for e in report.errors), report.errors
    ep = read_aloha_hdf5(path)
    assert len(ep) > in_closed   # every closed segment, plus the open one's complete chunks
    assert np.all(ep.frames[:, 0, 0, 0] == np.arange(len(ep)) % 256)   # in order, none missing


def test_cli_exit_codes_and_one_line_errors(tmp_path, capsys):
    record(tmp_path / "good")
    assert bag_main([str(tmp_path / "good"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "good.hdf5").exists()
    assert bag_main([str(tmp_path / "good"), "--out", str(tmp_path / "out")]) == 2   # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    # any non-empty --out is refused in one line (not only a clash of file names), and kept
    (tmp_path / "out" / "other.hdf5").write_text("x")
    (tmp_path / "out" / "good.hdf5").rename(tmp_path / "out" / "kept.hdf5")
    assert bag_main([str(tmp_path / "good"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "out") in err and "--overwrite" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["kept.hdf5", "other.hdf5"]
    # --overwrite replaces the whole directory once the conversion is done
    assert bag_main([str(tmp_path / "good"), "--out", str(tmp_path / "out"), "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.hdf5"]
    seg = sorted((tmp_path / "good").iterdir())[-1]
    (seg / "metadata.yaml").unlink()
    mcap = next(seg.glob("*.mcap"))
    os.truncate(mcap, mcap.stat().st_size // 2)
    assert bag_main([str(tmp_path / "good"), "--out", str(tmp_path / "out2")]) == 1   # partial: kept + error
    err = capsys.readouterr().err
    assert "error:" in err and "truncated" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bag_main([str(empty), "--out", str(tmp_path / "out3")]) == 2
    assert not (tmp_path / "out3").exists()  # nothing written: no directory left behind
    assert bag_main([str(tmp_path / "nope"), "--out", str(tmp_path / "out4")]) == 2
    assert "no such bag" in capsys.readouterr().err
