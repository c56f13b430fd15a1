"""LeRobot v3.0 datasets: the writer's layout and info.json, a hand-built dataset read back, bad
datasets as one-line errors, the name/position mapping, and load_episodes over mixed sources."""

import json
import logging
from fractions import Fraction

import numpy as np
import pytest

from eva_core.data import load_episodes, make_synthetic_dataset, read_aloha_hdf5
from eva_core.data.convert_episodes import main as convert_main
from eva_core.data.lerobot_format import LeRobotFormatError
from eva_core.data.lerobot_read import LeRobotDataset, check_dataset
from eva_core.data.lerobot_write import psnr, write_lerobot
from eva_core.data.synthetic import synthetic_episode
from eva_core.embodiment import load_embodiment

pytestmark = pytest.mark.unit

EMB = load_embodiment()


def _episodes(n=3, frames=12):
    eps = [synthetic_episode(EMB, n_frames=frames + 3 * i, size=32, fps=16.0, seed=i) for i in range(n)]
    for i, ep in enumerate(eps):
        ep.instruction = "stack" if i % 2 else "pick"
    return eps


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    eps = _episodes()
    root = tmp_path_factory.mktemp("lr") / "ds"
    write_lerobot(eps, root, EMB, progress=False)
    return eps, root


def test_the_writer_makes_the_v3_layout_and_info_validates_against_parquet_and_videos(written):
    eps, root = written
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/info.json",
                     "meta/stats.json", "meta/tasks.parquet",
                     "videos/observation.images.cam_high/chunk-000/file-000.mp4"]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 16 and info["total_episodes"] == 3
    assert info["total_frames"] == sum(len(e) for e in eps) and info["total_tasks"] == 2
    assert info["splits"] == {"train": "0:3"} and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    for key in ("observation.state", "action"):
        assert info["features"][key] == {"dtype": "float32", "shape": [14], "names": list(EMB.joint_names)}
    cam = info["features"]["observation.images.cam_high"]
    assert cam["dtype"] == "video" and cam["shape"] == [32, 32, 3]
    assert cam["info"]["video.codec"] == "h264" and cam["info"]["video.pix_fmt"] == "yuv420p"
    assert check_dataset(root) == []
    stats = json.loads((root / "meta/stats.json").read_text())
    allq = np.concatenate([e.qpos for e in eps]).astype(np.float32)
    np.testing.assert_allclose(stats["observation.state"]["mean"], allq.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], allq.std(0), rtol=1e-4, atol=1e-6)
    assert np.array(stats["observation.images.cam_high"]["mean"]).shape == (3, 1, 1)


def test_check_dataset_reports_a_feature_that_disagrees_with_the_parquet(written, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(written[1], root)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["action"]["dtype"] = "float64"
    info["features"]["observation.images.cam_high"]["shape"] = [48, 32, 3]
    (root / "meta/info.json").write_text(json.dumps(info))
    problems = check_dataset(root)
    assert any("'action' is float" in p and "float64" in p for p in problems), problems
    assert any("frames are [32, 32, 3]" in p for p in problems), problems


def test_episodes_read_back_exact_numbers_and_frames_within_the_codec_error(written):
    eps, root = written
    back = list(load_episodes(root))
    assert len(back) == len(eps)
    for a, b in zip(eps, back):
        np.testing.assert_array_equal(b.qpos, a.qpos.astype(np.float32))
        np.testing.assert_array_equal(b.action, a.action.astype(np.float32))
        np.testing.assert_array_equal(b.meta["timestamps"], (np.arange(len(a)) / 16).astype(np.float32))
        assert b.instruction == a.instruction and b.fps == 16 and b.camera == "cam_high"
        p = psnr(a.frames, b.frames)
        assert p > 28, f"PSNR {p:.1f} dB"


def test_append_adds_episodes_in_new_files_and_keeps_the_old(written, tmp_path):
    import shutil

    eps, src = written
    root = tmp_path / "ds"
    shutil.copytree(src, root)
    write_lerobot(_episodes(1, frames=9), root, EMB, append=True, progress=False)
    assert (root / "data/chunk-000/file-001.parquet").exists()
    assert (root / "videos/observation.images.cam_high/chunk-000/file-001.mp4").exists()
    assert (root / "meta/episodes/chunk-000/file-001.parquet").exists()
    assert check_dataset(root) == []
    back = list(load_episodes(root))
    assert [len(b) for b in back] == [len(e) for e in eps] + [9]
    np.testing.assert_array_equal(back[-1].qpos, _episodes(1, frames=9)[0].qpos.astype(np.float32))
    np.testing.assert_array_equal(back[0].qpos, eps[0].qpos.astype(np.float32))
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] == 4 and info["splits"] == {"train": "0:4"}
    with pytest.raises(Exception, match="not empty; pass --overwrite"):
        write_lerobot(_episodes(1), root, EMB, progress=False)


# ---- a dataset built by hand, to the published layout ------------------------------------------------
def hand_built(root, n_eps=2, frames=6, names=None, dim=14, nan=False, short_video=False, h=16, w=16, fps=10):
    """A minimal v3.0 dataset written here with pyarrow and av, not with our writer: two cameras,
    the state's names in the order given, episodes concatenated in one parquet and one MP4 each."""
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = names or [f"j{i}" for i in range(dim)]
    rng = np.random.default_rng(1)
    n = n_eps * frames
    state = rng.uniform(-0.5, 0.5, (n, dim)).astype(np.float32)
    if nan:
        state[frames + 2, 3] = np.nan
    action = state + 0.01
    feats = {"observation.state": {"dtype": "float32", "shape": [dim], "names": {"motors": names}},
             "action": {"dtype": "float32", "shape": [dim], "names": names},
             "timestamp": {"dtype": "float32", "shape": [1], "names": None},
             "frame_index": {"dtype": "int64", "shape": [1], "names": None},
             "episode_index": {"dtype": "int64", "shape": [1], "names": None},
             "index": {"dtype": "int64", "shape": [1], "names": None},
             "task_index": {"dtype": "int64", "shape": [1], "names": None}}
    imgs = {}
    for cam in ("cam_high", "cam_left_wrist"):
        feats[f"observation.images.{cam}"] = {"dtype": "video", "shape": [h, w, 3],
                                              "names": ["height", "width", "channels"]}
        imgs[cam] = np.zeros((n, h, w, 3), np.uint8)
        imgs[cam][..., 0] = (np.arange(n) * 20 % 256)[:, None, None]
        imgs[cam][..., 1] = 60 if cam == "cam_high" else 200
        path = root / f"videos/observation.images.{cam}/chunk-000/file-000.mp4"
        path.parent.mkdir(parents=True)
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=Fraction(fps))
            s.height, s.width, s.pix_fmt, s.options = h, w, "yuv420p", {"crf": "10"}
            for i, im in enumerate(imgs[cam][: n - (frames // 2 if short_video else 0)]):
                f = av.VideoFrame.from_ndarray(im, format="rgb24")
                f.pts = i
                for p in s.encode(f):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    fi = np.tile(np.arange(frames), n_eps)
    ei = np.repeat(np.arange(n_eps), frames)
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table({
        "observation.state": pa.array(list(state), pa.list_(pa.float32())),
        "action": pa.array(list(action), pa.list_(pa.float32())),
        "timestamp": (fi / fps).astype(np.float32), "frame_index": fi, "episode_index": ei,
        "index": np.arange(n), "task_index": ei % 2}), root / "data/chunk-000/file-000.parquet")
    ep = {"episode_index": list(range(n_eps)), "tasks": [["fold"] if e % 2 == 0 else ["unfold"] for e in range(n_eps)],
          "length": [frames] * n_eps, "data/chunk_index": [0] * n_eps, "data/file_index": [0] * n_eps,
          "dataset_from_index": [e * frames for e in range(n_eps)],
          "dataset_to_index": [(e + 1) * frames for e in range(n_eps)]}
    for cam in imgs:
        k = f"videos/observation.images.{cam}"
        ep.update({f"{k}/chunk_index": [0] * n_eps, f"{k}/file_index": [0] * n_eps,
                   f"{k}/from_timestamp": [e * frames / fps for e in range(n_eps)],
                   f"{k}/to_timestamp": [(e + 1) * frames / fps for e in range(n_eps)]})
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(ep), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task": ["fold", "unfold"], "task_index": [0, 1]}), root / "meta/tasks.parquet")
    info = {"codebase_version": "v3.0", "robot_type": "aloha", "total_episodes": n_eps, "total_frames": n,
            "total_tasks": 2, "chunks_size": 1000, "fps": fps, "splits": {"train": f"0:{n_eps}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4", "features": feats}
    (root / "meta/info.json").write_text(json.dumps(info))
    return state, action, imgs


def test_a_hand_built_dataset_is_read_with_its_joints_mapped_by_name(tmp_path, caplog):
    names = list(EMB.joint_names)[::-1]          # stored in reverse order: the reader must reorder
    state, action, imgs = hand_built(tmp_path / "ds", names=names)
    with caplog.at_level(logging.WARNING):
        eps = list(load_episodes(tmp_path / "ds", camera="observation.images.cam_left_wrist"))
    assert not caplog.records                      # names matched: no warning
    assert len(eps) == 2 and [e.instruction for e in eps] == ["fold", "unfold"]
    np.testing.assert_array_equal(eps[1].qpos, state[6:12, ::-1])
    np.testing.assert_array_equal(eps[1].action, action[6:12, ::-1])
    assert eps[1].camera == "cam_left_wrist" and set(eps[1].cameras) == {"cam_high", "cam_left_wrist"}
    assert psnr(eps[1].frames, imgs["cam_left_wrist"][6:12]) > 35
    assert psnr(eps[0].cameras["cam_high"], imgs["cam_high"][:6]) > 35
    short = list(load_episodes(tmp_path / "ds", camera="cam_high", cameras=[]))   # the short name works too
    assert set(short[0].cameras) == {"cam_high"}


def test_unknown_names_of_the_right_size_map_by_position_with_one_warning(tmp_path, caplog):
    state, _, _ = hand_built(tmp_path / "ds")    # names j0..j13
    with caplog.at_level(logging.WARNING):
        eps = list(load_episodes(tmp_path / "ds"))
    np.testing.assert_array_equal(eps[0].qpos, state[:6])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("mapped by position" in m and "\n" not in m for m in lines)  # state, action


def _one_line_error(capsys, root, tmp_path):
    rc = convert_main([str(root), "--to", "aloha", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert not (tmp_path / "out").exists()
    return err[0]


@pytest.mark.parametrize("case, needle", [
    ("no_info", "not a LeRobot dataset: missing meta/info.json"),
    ("v21", "convert_dataset_v21_to_v30"),
    ("truncated", "file-000.parquet: not a readable parquet file"),
    ("short_video", "shorter than its episodes: episode 1 needs 6 frames"),
    ("nan", "feature 'observation.state' holds NaN/inf (first at frame 2, dim"),
    ("dims", "feature 'observation.state' has shape [7], embodiment 'cobot_magic' needs [14]"),
])
def test_bad_datasets_are_one_line_errors(tmp_path, capsys, case, needle):
    root = tmp_path / "ds"
    hand_built(root, dim=7 if case == "dims" else 14, nan=case == "nan", short_video=case == "short_video")
    if case == "no_info":
        (root / "meta/info.json").unlink()
    elif case == "v21":
        info = json.loads((root / "meta/info.json").read_text())
        (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    elif case == "truncated":
        p = root / "data/chunk-000/file-000.parquet"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    line = _one_line_error(capsys, root, tmp_path)
    assert needle in line and str(root) in line, line


def test_load_episodes_mixes_hdf5_files_folders_and_lerobot_roots(written, tmp_path):
    _, root = written
    files = make_synthetic_dataset(tmp_path / "h5", episodes=2, frames=5, size=32, progress=False, embodiment=EMB)
    eps = list(load_episodes(files[0], tmp_path / "h5", root, camera="observation.images.cam_high", cameras=[]))
    assert len(eps) == 2 + 3           # the file named twice is read once
    assert [e.meta.get("format") for e in eps].count("lerobot") == 3
    with pytest.raises(FileNotFoundError, match="not found"):
        list(load_episodes(tmp_path / "missing"))


def test_convert_episodes_both_ways(written, tmp_path, capsys):
    eps, root = written
    assert convert_main([str(root), "--to", "aloha", str(tmp_path / "aloha"), "--no-progress"]) == 0
    files = sorted((tmp_path / "aloha").glob("*.hdf5"))
    assert len(files) == 3
    ep = read_aloha_hdf5(files[1])
    np.testing.assert_array_equal(ep.qpos, eps[1].qpos.astype(np.float32))
    assert ep.instruction == eps[1].instruction and ep.fps == 16
    # and back: HDF5 -> LeRobot keeps the float32 numbers exactly
    assert convert_main([str(tmp_path / "aloha"), "--to", "lerobot", str(tmp_path / "lr"), "--no-progress"]) == 0
    back = list(load_episodes(tmp_path / "lr"))
    np.testing.assert_array_equal(back[1].qpos, ep.qpos)
    assert check_dataset(tmp_path / "lr") == []
    # an existing output is refused without --overwrite and kept
    assert convert_main([str(tmp_path / "aloha"), "--to", "lerobot", str(tmp_path / "lr"), "--no-progress"]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert convert_main([str(tmp_path / "aloha"), "--to", "lerobot", str(tmp_path / "lr"), "--no-progress",
                         "--overwrite"]) == 0
    assert len(LeRobotDataset(tmp_path / "lr").episodes) == 3


def test_av1_is_an_option_where_the_encoder_exists(tmp_path):
    import av

    if "libsvtav1" not in av.codecs_available:
        with pytest.raises(ValueError, match="not in this PyAV"):
            write_lerobot(_episodes(1), tmp_path / "av1", EMB, codec="av1", progress=False)
        return
    from eva_core.thread_policy import thread_policy

    before = thread_policy()
    write_lerobot(_episodes(1), tmp_path / "av1", EMB, codec="av1", progress=False)
    assert thread_policy() == before   # libsvtav1 makes its caller SCHED_FIFO 99 when run as root
    info = json.loads((tmp_path / "av1/meta/info.json").read_text())
    assert info["features"]["observation.images.cam_high"]["info"]["video.codec"] == "av1"
    assert check_dataset(tmp_path / "av1") == []


def test_view_episode_takes_a_lerobot_root(written, tmp_path):
    import shutil

    import imageio.v3 as iio

    from eva_core.data.view_episode import main as view_main

    eps, src = written
    root = tmp_path / "ds"
    shutil.copytree(src, root)
    assert view_main([str(root), "--episode", "1", "--height", "48"]) == 0
    assert len(iio.imread(tmp_path / "ds_episode_1.mp4")) == len(eps[1])
    assert view_main([str(root), "--episode", "7"]) == 2
