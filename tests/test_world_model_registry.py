"""World-model kinds: a backend registers one entry (eva_core.world_model.registry) and the planner
node, best-of-N and the config check take it without being edited."""

import time

import numpy as np
import pytest

from eva_core.config import ConfigError
from eva_core.world_model import VideoModel, WorldModelConfig, build_world_model, register
from eva_core.world_model import registry
from eva_core.world_model.best_of import BestOf, RewardScorer

pytestmark = pytest.mark.unit


class Stripes:
    """A fake backend: moving stripes of the configured shape (seeded), records its calls."""

    def __init__(self, cfg: WorldModelConfig, embodiment=None):
        self.fps, self.num_frames, self.height, self.width = cfg.fps, cfg.num_frames, cfg.height, cfg.width
        self.embodiment = embodiment
        self.seeds = []

    def generate(self, image, instruction, history=None, seed=None):
        self.seeds.append(seed)
        t = np.arange(self.num_frames)[:, None, None, None]
        x = np.arange(self.width)[None, None, :, None]
        return ((x + 3 * t + (seed or 0)) % 256 * np.ones((1, self.height, 1, 3))).astype(np.uint8)


@pytest.fixture
def stripes():
    register("stripes", Stripes)
    yield "stripes"
    registry.unregister("stripes")


def test_a_registered_kind_is_built_from_its_config_and_generates_its_declared_shape(stripes):
    cfg = {"kind": stripes, "num_frames": 5, "height": 32, "width": 48, "fps": 8.0}
    wm = build_world_model(cfg, embodiment="emb")
    assert isinstance(wm, Stripes) and isinstance(wm, VideoModel) and wm.embodiment == "emb"
    frames = wm.generate(np.zeros((32, 48, 3), np.uint8), "wave", seed=1)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8
    assert stripes in registry.kinds()


def test_an_unregistered_kind_is_a_config_error_and_names_are_not_taken_twice(stripes):
    registry.unregister(stripes)
    with pytest.raises(ConfigError, match="world_model: kind: must be one of .*got 'stripes'"):
        WorldModelConfig.from_dict({"kind": stripes}, source="p.yaml", section="world_model")
    register(stripes, Stripes)
    with pytest.raises(ValueError, match="already registered"):
        register(stripes, Stripes)
    with pytest.raises(ValueError, match="already registered"):
        register("tiny", Stripes)


def test_a_builder_that_returns_no_video_model_fails_naming_the_kind():
    register("broken", lambda cfg, emb: object())
    try:
        with pytest.raises(TypeError, match="kind 'broken'.*lacks generate"):
            build_world_model({"kind": "broken"})
    finally:
        registry.unregister("broken")


def test_best_of_n_wraps_any_registered_kind(stripes):
    cfg = {"kind": stripes, "num_frames": 5, "height": 32, "width": 32, "best_of": 3, "reward_idm": "random_tiny"}
    wm = build_world_model(cfg)
    assert isinstance(wm, BestOf) and isinstance(wm, VideoModel) and (wm.num_frames, wm.height, wm.width) == (5, 32, 32)
    frames = wm.generate(np.zeros((32, 32, 3), np.uint8), "wave", seed=10)
    assert frames.shape == (5, 32, 32, 3)
    assert wm.model.seeds == [10, 11, 12]
    info = wm.last_info["best_of"]
    assert info["n"] == 3 and len(info["scores"]) == 3
    assert info["chosen"] == int(np.argmax(info["scores"])) and wm.last_info["seed"] == 10 + info["chosen"]
    assert isinstance(wm.scorer, RewardScorer)
    np.testing.assert_array_equal(frames, wm.model.generate(None, "wave", seed=10 + info["chosen"]))


def test_the_planner_core_plans_with_a_registered_kind(stripes):
    from eva_core.planner import PlannerConfig, RecedingHorizonPlanner

    wm = build_world_model({"kind": stripes, "num_frames": 9, "height": 16, "width": 16, "fps": 4.0})
    core = RecedingHorizonPlanner(PlannerConfig(n_exec=4), fps=wm.fps, num_frames=wm.num_frames)
    now = time.time()
    chunk = core.begin(now, "wave", now)
    frames = wm.generate(np.zeros((16, 16, 3), np.uint8), "wave", seed=chunk.chunk_id)
    core.finish(chunk, now + 0.1)
    assert frames.shape == (9, 16, 16, 3) and chunk.exec_duration == 1.0 and core.counts["planned"] == 1
