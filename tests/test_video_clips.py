"""Video clips for world-model training (eva_core/data/video_clips.py) and the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eva_core.data import make_synthetic_dataset, write_episode, Episode
from eva_core.data.video_clips import (ClipSpec, FeatureCache, VideoClipDataset, clips_from_sources, fit_frames,
                                       read_eva_csv, resample_indices)
from eva_core.embodiment import load_embodiment

pytestmark = pytest.mark.unit


def test_resample_to_the_target_fps_and_reject_clips_past_the_end():
    spec = ClipSpec(num_frames=5, fps=16.0, height=32, width=32)
    assert resample_indices(100, 32.0, spec, 3).tolist() == [3, 5, 7, 9, 11]  # every other frame at 2x fps
    assert resample_indices(100, 16.0, spec, 0).tolist() == [0, 1, 2, 3, 4]
    assert resample_indices(5, 16.0, spec, 1) is None


def test_fit_frames_crops_to_aspect_then_resizes():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 20:60] = 255  # the centre square is white, the sides black
    x = fit_frames(frames, 16, 16)
    assert x.shape == (3, 2, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert float(x.mean()) > 0.95  # the black sides were cropped away


def test_episode_and_csv_sources_give_the_same_clips_and_captions(tmp_path):
    import imageio.v2 as imageio

    emb = load_embodiment()
    make_synthetic_dataset(tmp_path / "eps", episodes=2, frames=20, size=32, fps=16.0, progress=False, embodiment=emb)
    spec = ClipSpec(num_frames=5, fps=8.0, height=32, width=32)
    refs = clips_from_sources([tmp_path / "eps"], spec, stride_s=0.5, instruction="wave")
    assert len(refs) == 2 * 2 and all(r.caption == "wave" for r in refs)  # starts 0 and 8 (16 + 8 runs past frame 19)
    ds = VideoClipDataset(refs, spec)
    item = ds[1]
    assert item["video"].shape == (3, 5, 32, 32) and item["caption"] == "wave"
    # the same frames as an mp4 listed in EVA's CSV
    from eva_core.data import read_episode

    ep = read_episode(refs[0].source)
    imageio.mimwrite(str(tmp_path / "ep0.mp4"), list(ep.frames), fps=16, codec="libx264", quality=10,
                     macro_block_size=1, ffmpeg_log_level="error")
    (tmp_path / "data.csv").write_text("video_path,caption,height,width,fps,n_frames\n"
                                       f"ep0.mp4,pick the cup,32,32,16,{len(ep)}\n")
    rows = read_eva_csv(tmp_path / "data.csv")
    assert rows[0]["video_path"] == str(tmp_path / "ep0.mp4")
    vrefs = clips_from_sources([tmp_path / "data.csv"], spec, stride_s=0.5)
    assert [r.start for r in vrefs] == [r.start for r in refs[:2]] and vrefs[0].caption == "pick the cup"
    v = VideoClipDataset(vrefs, spec)[0]["video"]
    assert (v - ds[0]["video"]).abs().mean() < 0.05  # H.264 at high quality: close to the source frames


def test_eva_csv_errors_name_the_file_and_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("video_path,caption,fps\nx.mp4,a,16\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['height', 'width', 'n_frames'\]"):
        read_eva_csv(bad)
    bad.write_text("video_path,caption,height,width,fps,n_frames\nx.mp4,a,1,1,0,5\n")
    with pytest.raises(ValueError, match="bad.csv: line 2"):
        read_eva_csv(bad)


def test_feature_cache_is_reused_and_invalidated_by_encoder_and_preprocessing(tmp_path):
    from eva_core.world_model import WorldModel, WorldModelConfig
    from eva_core.world_model.training import CachedFeatures, encoder_key

    emb = load_embodiment()
    make_synthetic_dataset(tmp_path / "eps", episodes=1, frames=12, size=64, progress=False, embodiment=emb)
    wm = WorldModel.from_config(WorldModelConfig.tiny_default(num_frames=5))
    spec = ClipSpec(num_frames=5, fps=16.0, height=64, width=64)
    refs = clips_from_sources([tmp_path / "eps"], spec, stride_s=0.25)
    n = len(refs)
    first = FeatureCache(tmp_path / "cache", encoder_key(wm))
    a = CachedFeatures(wm, VideoClipDataset(refs, spec), first)
    assert (first.misses, first.hits) == (n + 1, 0)  # n clips + 1 caption
    again = FeatureCache(tmp_path / "cache", encoder_key(wm))
    b = CachedFeatures(wm, VideoClipDataset(refs, spec), again)
    assert (again.misses, again.hits) == (0, n + 1)
    assert torch.equal(a[0]["latents"], b[0]["latents"]) and a[0]["latents"].shape == (16, 2, 8, 8)
    # another preprocessing (fps) -> new clip keys; the prompt embedding is still valid
    spec2 = ClipSpec(num_frames=5, fps=8.0, height=64, width=64)
    refs2 = clips_from_sources([tmp_path / "eps"], spec2, stride_s=0.25)
    c2 = FeatureCache(tmp_path / "cache", encoder_key(wm))
    CachedFeatures(wm, VideoClipDataset(refs2, spec2), c2)
    assert (c2.misses, c2.hits) == (len(refs2), 1)
    # another encoder -> nothing is reused
    with torch.no_grad():
        next(wm.c.vae.parameters()).add_(0.01)
    c3 = FeatureCache(tmp_path / "cache", encoder_key(wm))
    CachedFeatures(wm, VideoClipDataset(refs, spec), c3)
    assert c3.hits == 0 and c3.misses == n + 1
    # a changed source file (rewritten episode) -> its clips miss
    ep_path = refs[0].source
    from eva_core.data import read_episode

    ep = read_episode(ep_path)
    write_episode(Episode(frames=ep.frames[::-1].copy(), qpos=ep.qpos, action=ep.action, fps=ep.fps), ep_path)
    c4 = FeatureCache(tmp_path / "cache", encoder_key(wm))
    CachedFeatures(wm, VideoClipDataset(refs, spec), c4)
    assert c4.misses >= n
