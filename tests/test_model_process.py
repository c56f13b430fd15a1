"""eva_core.model_process: a world model served by a child process behaves as the model does."""

import numpy as np
import pytest

from eva_core.model_process import ModelProcess
from eva_core.world_model.build import build_world_model
from eva_core.world_model.config import WorldModelConfig

pytestmark = [pytest.mark.unit, pytest.mark.timeout(300)]


def test_the_child_generates_what_the_model_generates_and_reports_its_timing():
    cfg = WorldModelConfig.tiny_default()
    cfg.num_steps = 2
    local = build_world_model(cfg)
    img = np.random.default_rng(0).integers(0, 255, (local.height, local.width, 3), dtype=np.uint8)
    wm = ModelProcess(cfg.to_dict(), "cobot_magic")
    try:
        assert (wm.fps, wm.num_frames, wm.height, wm.width) == (local.fps, local.num_frames, local.height, local.width)
        frames = wm.generate(img, "wave", seed=3)
        np.testing.assert_array_equal(frames, local.generate(img, "wave", seed=3))   # same seed, same weights
        assert {"encode", "denoise", "decode", "total", "wait"} <= set(wm.last_timing)
        assert wm.last_timing["total"] > 0 and wm.last_timing["wait"] >= 0
        with pytest.raises(RuntimeError, match="world-model process: "):
            wm.generate(np.zeros((2, 2), np.uint8), "wave")   # the child's error comes back, the child lives
        assert wm.generate(img, "wave", seed=3).shape == frames.shape
    finally:
        wm.close()
    with pytest.raises(RuntimeError, match="not running"):
        wm.generate(img, "wave")


def test_a_model_that_cannot_be_built_fails_start_up_with_the_reason():
    cfg = WorldModelConfig.tiny_default().to_dict()
    cfg["kind"] = "diffusers"
    cfg["model_dir"] = "/nonexistent/wan"
    with pytest.raises(RuntimeError, match="world-model process: "):
        ModelProcess(cfg, "cobot_magic")
