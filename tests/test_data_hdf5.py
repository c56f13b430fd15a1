"""Episode readers on small synthetic files in the ALOHA/Cobot Magic and RoboTwin layouts."""

import h5py
import numpy as np
import pytest

from eva_core.data import (
    Episode,
    EpisodeFormatError,
    find_episode_files,
    find_robotwin_episodes,
    read_aloha_hdf5,
    read_episode,
    read_robotwin_hdf5,
    write_episode,
)

pytestmark = pytest.mark.unit

N, H, W = 6, 24, 32


def load_embodiment():
    from eva_core.embodiment import load_embodiment as load

    return load()


def _frames(seed, n=N):
    """Smooth colour gradients (JPEG-friendly), different per camera seed and per frame."""
    y, x = np.mgrid[0:H, 0:W]
    out = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (4 * x + 10 * i + 30 * seed) % 200
        out[i, ..., 1] = (5 * y + 20 * seed) % 200
        out[i, ..., 2] = 100 + 10 * i
    return out


def _aloha_file(path, compress=False, drop=None):
    """ALOHA / Cobot Magic layout as the collection scripts write it (no eva_ros attributes)."""
    qpos = np.linspace(0, 1, N * 14).reshape(N, 14)
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = False
        f.attrs["compress"] = compress
        obs = f.create_group("observations")
        imgs = obs.create_group("images")
        for i, cam in enumerate(("cam_high", "cam_left_wrist", "cam_right_wrist")):
            if cam == drop:
                continue
            data = _frames(i)
            if compress:
                import cv2

                # a standard JPEG, as OpenCV writes a BGR camera frame
                bufs = [cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].ravel() for im in data]
                rows = np.zeros((N, max(len(b) for b in bufs)), np.uint8)
                for r, b in enumerate(bufs):
                    rows[r, : len(b)] = b
                data = rows
            imgs.create_dataset(cam, data=data)
        for key, val in (("qpos", qpos), ("qvel", qpos * 0.1), ("effort", qpos * 2)):
            if key != drop:
                obs.create_dataset(key, data=val)
        if drop != "action":
            f.create_dataset("action", data=qpos + 0.01)
        f.create_dataset("base_action", data=np.zeros((N, 2)))
    return qpos


def test_read_aloha_raw_images(tmp_path):
    qpos = _aloha_file(tmp_path / "episode_0.hdf5")
    ep = read_aloha_hdf5(tmp_path / "episode_0.hdf5")
    assert isinstance(ep, Episode) and len(ep) == N
    assert ep.camera == "cam_high" and set(ep.cameras) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    assert np.array_equal(ep.frames, _frames(0)) and ep.frames is ep.cameras["cam_high"]
    assert np.allclose(ep.qpos, qpos) and np.allclose(ep.action, qpos + 0.01) and np.allclose(ep.qvel, qpos * 0.1)
    assert ep.fps == 30.0 and ep.instruction == ""
    assert ep.meta["base_action"].shape == (N, 2)
    v = ep.video_tensor()
    assert v.shape == (N, 3, H, W) and float(v.max()) <= 1.0
    only = read_aloha_hdf5(tmp_path / "episode_0.hdf5", camera="cam_left_wrist", cameras=[], fps=50)
    assert set(only.cameras) == {"cam_left_wrist"} and only.fps == 50


def test_aloha_gripper_strokes_in_metres_are_normalised(tmp_path):
    qpos = _aloha_file(tmp_path / "m.hdf5")
    ep = read_aloha_hdf5(tmp_path / "m.hdf5", grippers_in_metres=load_embodiment())
    assert np.allclose(ep.qpos[:, [6, 13]], qpos[:, [6, 13]] / 0.07)
    assert np.allclose(ep.qpos[:, :6], qpos[:, :6]) and np.allclose(ep.action[:, 13], (qpos[:, 13] + 0.01) / 0.07)


def test_read_aloha_compressed_jpeg_rows(tmp_path):
    _aloha_file(tmp_path / "c.hdf5", compress=True)
    ep = read_aloha_hdf5(tmp_path / "c.hdf5")
    assert ep.frames.shape == (N, H, W, 3)
    assert np.abs(ep.frames.astype(int) - _frames(0)).mean() < 8  # JPEG decoded BGR -> RGB
    assert ep.meta["compress"] is True


@pytest.mark.parametrize("drop,key", [("action", "/action"), ("qpos", "/observations/qpos"),
                                      ("cam_high", "cam_high")])
def test_malformed_aloha_names_file_and_key(tmp_path, drop, key):
    path = tmp_path / "bad.hdf5"
    _aloha_file(path, drop=drop)
    with pytest.raises(EpisodeFormatError) as e:
        read_aloha_hdf5(path, camera="cam_high")
    assert "bad.hdf5" in str(e.value) and key in str(e.value)


def test_wrong_shape_and_non_hdf5_are_clear_errors(tmp_path):
    path = tmp_path / "shape.hdf5"
    _aloha_file(path)
    with h5py.File(path, "a") as f:
        del f["action"]
        f.create_dataset("action", data=np.zeros((N - 1, 14)))
    with pytest.raises(EpisodeFormatError, match=r"shape.hdf5: key '/action' has shape \(5, 14\)"):
        read_episode(path)
    (tmp_path / "junk.hdf5").write_text("not hdf5")
    with pytest.raises(EpisodeFormatError, match="junk.hdf5"):
        read_episode(tmp_path / "junk.hdf5")


def _robotwin_file(path, n=N, bad_frame=None):
    import cv2

    vec = np.cumsum(np.full((n, 14), 0.01), axis=0)
    bufs = [cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for im in _frames(5, n)]
    if bad_frame is not None:
        bufs[bad_frame] = b"garbage"
    with h5py.File(path, "w") as f:
        f.create_dataset("joint_action/vector", data=vec)
        f.create_dataset("joint_action/left_arm", data=vec[:, :6])
        f.create_dataset("observation/head_camera/rgb", data=np.array(bufs, dtype=f"S{max(map(len, bufs))}"))
        f.create_dataset("observation/head_camera/intrinsic_cv", data=np.eye(3))
    return vec


def test_read_robotwin_jpeg_bytes(tmp_path):
    root = tmp_path / "place_a2b" / "demo_clean" / "data"
    root.mkdir(parents=True)
    vec = _robotwin_file(root / "episode0.hdf5")
    files = find_robotwin_episodes(tmp_path)
    assert files == [root / "episode0.hdf5"]
    ep = read_robotwin_hdf5(files[0], fps=25, instruction="place A on B")
    assert ep.camera == "head_camera" and ep.frames.shape == (N, H, W, 3)
    assert np.abs(ep.frames.astype(int) - _frames(5)).mean() < 8
    assert np.allclose(ep.action, vec) and np.allclose(ep.qpos, vec)
    assert ep.fps == 25 and ep.instruction == "place A on B"
    assert read_episode(files[0]).frames.shape == ep.frames.shape  # layout auto-detected


def test_robotwin_bad_jpeg_and_missing_camera(tmp_path):
    _robotwin_file(tmp_path / "r.hdf5", bad_frame=3)
    with pytest.raises(EpisodeFormatError, match=r"r.hdf5: key '/observation/head_camera/rgb' frame 3"):
        read_robotwin_hdf5(tmp_path / "r.hdf5")
    _robotwin_file(tmp_path / "r2.hdf5")
    with pytest.raises(EpisodeFormatError, match=r"r2.hdf5: missing key '/observation/front_camera/rgb'"):
        read_robotwin_hdf5(tmp_path / "r2.hdf5", camera="front_camera")


@pytest.mark.parametrize("compress", [False, True])
def test_our_writer_round_trip_is_atomic(tmp_path, compress):
    cams = {"cam_high": _frames(1), "cam_left_wrist": _frames(2)}
    q = np.random.default_rng(0).normal(size=(N, 14))
    ep = Episode(frames=cams["cam_high"], qpos=q, action=q + 1, fps=16.0, instruction="fold the towel",
                 cameras=cams, qvel=q * 0)
    out = write_episode(ep, tmp_path / "ours" / "episode_0000.hdf5", compress=compress)
    assert [p.name for p in (tmp_path / "ours").iterdir()] == ["episode_0000.hdf5"]  # no temp files left
    back = read_episode(out)
    assert back.instruction == "fold the towel" and back.fps == 16.0 and back.camera == "cam_high"
    assert np.allclose(back.qpos, q) and np.allclose(back.action, q + 1)
    assert set(back.cameras) == set(cams)
    if compress:
        assert np.abs(back.frames.astype(int) - cams["cam_high"]).mean() < 8
    else:
        assert np.array_equal(back.frames, cams["cam_high"])
    assert find_episode_files(tmp_path / "ours") == [out]


def test_episode_validates_its_arrays():
    with pytest.raises(ValueError, match="qpos"):
        Episode(frames=_frames(0), qpos=np.zeros((N - 1, 14)), action=np.zeros((N, 14)), fps=10)
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        Episode(frames=_frames(0).astype(np.float32), qpos=np.zeros((N, 14)), action=np.zeros((N, 14)), fps=10)
    with pytest.raises(ValueError, match="fps"):
        Episode(frames=_frames(0), qpos=np.zeros((N, 14)), action=np.zeros((N, 14)), fps=0)


def _with_images(path, data):
    with h5py.File(path, "a") as f:
        for cam in list(f["observations/images"]):
            del f[f"observations/images/{cam}"]
        f.create_dataset("observations/images/cam_high", data=data)


def test_jpeg_colours_come_back_rgb(tmp_path):
    # a pure-red frame stored as a standard JPEG must read back red (R channel), not blue
    path = tmp_path / "red.hdf5"
    _aloha_file(path)
    red = np.zeros((N, H, W, 3), np.uint8)
    red[..., 0] = 250
    import cv2

    bufs = [cv2.imencode(".jpg", im[..., ::-1])[1].ravel() for im in red]
    rows = np.zeros((N, max(len(b) for b in bufs)), np.uint8)
    for r, b in enumerate(bufs):
        rows[r, : len(b)] = b
    _with_images(path, rows)
    ep = read_aloha_hdf5(path)
    assert ep.frames[..., 0].mean() > 240 and ep.frames[..., 2].mean() < 10


def test_float_unit_images_are_converted_not_zeroed(tmp_path):
    path = tmp_path / "float.hdf5"
    _aloha_file(path)
    _with_images(path, _frames(0).astype(np.float32) / 255.0)
    ep = read_aloha_hdf5(path)
    assert ep.frames.dtype == np.uint8 and np.array_equal(ep.frames, _frames(0))  # was all zeros


@pytest.mark.parametrize("data, needle", [
    (_frames(0).astype(np.uint16) * 16, "dtype uint16"),  # would wrap modulo 256
    (_frames(0).astype(np.float32), r"span \[0, \d+\]; expected \[0, 1\]"),  # a 0..255 float image
    (np.zeros((N, H, W, 1), np.uint8), r"shape \(6, 24, 32, 1\)"),
    (np.zeros((0, H, W, 3), np.uint8), "has no frames"),
])
def test_bad_image_arrays_are_refused_naming_file_and_key(tmp_path, data, needle):
    path = tmp_path / "img.hdf5"
    _aloha_file(path)
    _with_images(path, data)
    with pytest.raises(EpisodeFormatError, match=needle) as e:
        read_aloha_hdf5(path)
    assert "img.hdf5: key '/observations/images/cam_high'" in str(e.value)


@pytest.mark.parametrize("key", ["/action", "/observations/qpos"])
def test_non_finite_actions_are_refused_at_read(tmp_path, key):
    path = tmp_path / "nan.hdf5"
    _aloha_file(path)
    with h5py.File(path, "a") as f:
        arr = f[key][()]
        arr[3, 5] = np.nan
        del f[key]
        f.create_dataset(key, data=arr)
    with pytest.raises(EpisodeFormatError, match=f"nan.hdf5: key '{key}' holds NaN/inf \\(first at frame 3, dim 5"):
        read_episode(path)


def test_zero_frame_episodes_are_refused_at_read(tmp_path):
    path = tmp_path / "empty.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("observations/images/cam_high", data=np.zeros((0, H, W, 3), np.uint8))
        f.create_dataset("observations/qpos", data=np.zeros((0, 14)))
        f.create_dataset("action", data=np.zeros((0, 14)))
    with pytest.raises(EpisodeFormatError, match="empty.hdf5: key '/observations/images/cam_high' has no frames"):
        read_episode(path)
    rt = tmp_path / "rt.hdf5"
    with h5py.File(rt, "w") as f:
        f.create_dataset("joint_action/vector", data=np.zeros((0, 14)))
        f.create_dataset("observation/head_camera/rgb", data=np.zeros((0,), "S10"))
    with pytest.raises(EpisodeFormatError, match="rt.hdf5: key '/joint_action/vector' has no frames"):
        read_episode(rt)
    with pytest.raises(ValueError, match="no frames"):
        Episode(frames=np.zeros((0, H, W, 3), np.uint8), qpos=np.zeros((0, 14)), action=np.zeros((0, 14)), fps=10)


@pytest.mark.parametrize("fps", [float("nan"), -5.0, "fast"])
def test_a_bad_fps_attribute_names_the_file(tmp_path, fps):
    path = tmp_path / "fps.hdf5"
    _aloha_file(path)
    with h5py.File(path, "a") as f:
        f.attrs["fps"] = fps
    with pytest.raises(EpisodeFormatError, match="fps.hdf5: attribute 'fps'"):
        read_episode(path)
