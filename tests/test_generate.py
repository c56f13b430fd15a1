"""`eva-generate` (offline inference) and best-of-N rejection sampling in the world model."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest

from training.generate import main

pytestmark = pytest.mark.unit


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "first.png"
    imageio.imwrite(path, rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    return path


def test_generate_writes_video_actions_and_reward(tmp_path, image):
    out = tmp_path / "gen"
    hist = tmp_path / "hist.mp4"
    imageio.mimwrite(str(hist), [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(4)], fps=16,
                     macro_block_size=1, ffmpeg_log_level="error")
    rc = main(["--image", str(image), "--instruction", "pick up the cup", "--output-dir", str(out),
               "--idm", "random_tiny", "--history", str(hist), "--set", "num_frames=9", "--best-of", "3"])
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    frames = imageio.mimread(str(out / "video.mp4"))
    assert len(frames) == res["frames"] == 9 and res["context_frames"] == 5  # 4 history frames + the image
    assert (out / "actions.png").stat().st_size > 0 and np.load(out / "actions.npy").shape == (9, 14)
    bo = res["best_of"]
    assert bo["n"] == 3 and len(bo["scores"]) == 3
    assert res["reward"] == pytest.approx(max(bo["scores"]), abs=1e-4)  # the kept chunk has the best score
    assert res["seed"] == bo["chosen"]  # seeds 0, 1, 2
    # an existing output is never replaced without --overwrite
    assert main(["--image", str(image), "--instruction", "x", "--output-dir", str(out), "--idm", "random_tiny"]) == 2
    assert json.loads((out / "result.json").read_text())["best_of"]["n"] == 3
    assert main(["--image", str(image), "--instruction", "x", "--output-dir", str(out), "--idm", "random_tiny",
                 "--overwrite"]) == 0
    assert json.loads((out / "result.json").read_text())["best_of"] is None


def test_generate_without_an_idm_is_a_one_line_error(tmp_path, image, capsys):
    assert main(["--image", str(image), "--instruction", "x", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eva-generate: no IDM") and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_best_of_n_keeps_the_highest_scoring_candidate():
    from eva_core.world_model import WorldModel, WorldModelConfig

    wm = WorldModel.from_config(WorldModelConfig.tiny_default(num_frames=9, best_of=4, reward_idm="random_tiny"))
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    best = wm.generate(img, "wave", seed=10)
    info = wm.last_info["best_of"]
    singles = [wm.generate(img, "wave", seed=10 + i, best_of=1) for i in range(4)]
    scores = wm.scorer.score_frames(np.stack(singles))
    assert np.allclose(scores.numpy(), info["scores"], atol=1e-5)
    assert np.array_equal(best, singles[int(np.argmax(info["scores"]))])
    with pytest.raises(ValueError, match="reward_idm"):
        WorldModelConfig.tiny_default(best_of=2)
