"""eva-view-episode: cameras beside the joint curves, one video frame per episode frame, atomic."""

import imageio.v3 as iio
import numpy as np
import pytest

from eva_core.data.episode import Episode
from eva_core.data.hdf5_io import write_aloha_episode
from eva_core.data.view_episode import main
from eva_core.embodiment import load_embodiment

pytestmark = pytest.mark.unit

EMB = load_embodiment()


def _episode(path, n=12):
    rng = np.random.default_rng(0)
    cams = {c: rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8) for c in ("cam_high", "cam_left_wrist")}
    q = np.tile((EMB.pos_lower + EMB.pos_upper) / 2, (n, 1)) + np.linspace(0, 0.5, n)[:, None]
    ep = Episode(frames=cams["cam_high"], qpos=q, action=q + 0.01, fps=10.0, camera="cam_high", cameras=cams)
    return write_aloha_episode(ep, path, seed=3), cams


def test_writes_one_video_frame_per_episode_frame_with_a_moving_cursor(tmp_path, capsys):
    path, cams = _episode(tmp_path / "ep.hdf5")
    assert main([str(path), "--height", "64"]) == 0
    video = iio.imread(tmp_path / "ep.mp4")
    assert video.shape[0] == 12 and video.shape[1] == 64
    assert video.shape[2] > 2 * 64 * 32 // 24          # both cameras + the curves panel
    panel = video[:, :, 2 * (64 * 32 // 24):].astype(int)
    assert np.abs(panel[0] - panel[-1]).mean() > 0.5   # the cursor moved
    assert "12 frames" in capsys.readouterr().out


def test_refuses_to_replace_without_overwrite_and_reports_bad_input(tmp_path, capsys):
    path, _ = _episode(tmp_path / "ep.hdf5")
    out = tmp_path / "v.mp4"
    out.write_bytes(b"keep me")
    assert main([str(path), "--out", str(out)]) == 2
    assert out.read_bytes() == b"keep me"
    assert main([str(path), "--out", str(out), "--overwrite", "--height", "48"]) == 0
    assert len(iio.imread(out)) == 12
    assert main([str(tmp_path / "missing.hdf5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"eva-view-episode: {tmp_path / 'missing.hdf5'}: no such episode file"
