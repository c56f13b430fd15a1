"""VAE round trips of episodes: the IDM's view of the world model's decoded frames."""

import h5py
import numpy as np
import pytest
import torch

from eva_core.data.hdf5_io import read_aloha_hdf5
from eva_core.world_model.tiny import build_tiny_vae
from eva_core.world_model.vae_roundtrip import roundtrip_clip, roundtrip_episodes, roundtrip_frames

pytestmark = pytest.mark.unit

H, W = 16, 16


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_tiny_vae({"vae_base_dim": 4})


def _episode(path, n=11, fps=10.0):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h:
        h.attrs["fps"] = fps
        h["action"] = rng.normal(size=(n, 14))
        h["observations/qpos"] = rng.normal(size=(n, 14))
        h["observations/images/cam_high"] = rng.integers(0, 255, (n, H, W, 3), dtype=np.uint8)
    return path


def test_frames_are_round_tripped_in_clips_at_the_world_models_rate(vae):
    frames = np.random.default_rng(1).integers(0, 255, (11, H, W, 3), dtype=np.uint8)
    out = roundtrip_frames(vae, frames, clip_frames=5, step=2)
    assert out.shape == frames.shape and out.dtype == np.uint8 and not np.array_equal(out, frames)
    even = frames[0::2]                                        # 6 frames: a clip of 5, then 1 padded to 5
    np.testing.assert_array_equal(out[0:10:2], roundtrip_clip(vae, even[:5]))
    np.testing.assert_array_equal(out[10], roundtrip_clip(vae, np.repeat(even[5:], 5, 0))[0])
    np.testing.assert_array_equal(out[1::2], roundtrip_clip(vae, frames[1::2]))   # the odd phase: 5 frames
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        roundtrip_frames(vae, frames, clip_frames=4, step=2)


def test_episodes_are_copied_with_only_their_frames_changed(vae, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    f = _episode(src / "ep0.hdf5")
    before = f.read_bytes()
    (written,) = roundtrip_episodes(vae, src, dst, clip_frames=5, fps=5.0)
    assert written == dst / "ep0_vae.hdf5" and f.read_bytes() == before   # the source is untouched
    a, b = read_aloha_hdf5(f), read_aloha_hdf5(written)
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.qpos, b.qpos)
    assert b.meta["derived_from"] == str(f.resolve()) and "derived_from" not in a.meta   # the IDM split's group
    np.testing.assert_array_equal(b.frames, roundtrip_frames(vae, a.frames, 5, 2))
    assert not list(dst.glob(".*tmp*"))
    with pytest.raises(FileExistsError):                       # never overwritten
        roundtrip_episodes(vae, src, dst, clip_frames=5, fps=5.0)
    with pytest.raises(ValueError, match="no episode"):
        roundtrip_episodes(vae, tmp_path / "empty", dst, clip_frames=5, fps=5.0)
