"""The distilled student sampler (sampler: student): K one-branch transformer calls per chunk, its
schedule in one place, and the config checks."""

import numpy as np
import pytest

from eva_core.config import ConfigError
from eva_core.world_model.config import WorldModelConfig

pytestmark = pytest.mark.unit


def count_calls(wm):
    calls = []
    handle = wm.transformer.register_forward_hook(lambda m, a, kw: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("k", [1, 2, 4])
def test_a_student_chunk_makes_k_calls(k):
    from eva_core.world_model import build_world_model

    wm = build_world_model(WorldModelConfig.tiny_default(sampler="student", student_steps=k,
                                                         hist_guidance=1.5, lang_guidance=2.5))
    calls, handle = count_calls(wm)
    frames = wm.generate(np.zeros((64, 64, 3), np.uint8), "pick", seed=0)
    handle.remove()
    assert frames.shape == (9, 64, 64, 3)
    assert len(calls) == k <= 4
    assert wm.last_info["steps"] == k


def test_the_guided_teacher_makes_steps_times_branches_calls():
    from eva_core.world_model import build_world_model

    wm = build_world_model(WorldModelConfig.tiny_default(num_steps=3, hist_guidance=1.5, lang_guidance=2.5))
    calls, handle = count_calls(wm)
    wm.generate(np.zeros((64, 64, 3), np.uint8), "pick", seed=0, batched_guidance=False)
    handle.remove()
    assert len(calls) == 3 * 3


def test_student_is_deterministic_per_seed_and_differs_across_seeds():
    from eva_core.world_model import build_world_model

    wm = build_world_model(WorldModelConfig.tiny_default(sampler="student", student_steps=2))
    img = np.full((64, 64, 3), 90, np.uint8)
    a, b, c = (wm.generate(img, "pick", seed=s) for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_schedule_is_defined_once_and_shifted():
    from eva_core.world_model import student

    assert student.student_sigmas(1) == [1.0]
    assert student.student_sigmas(4, shift=3.0) == pytest.approx([1.0, 0.9, 0.75, 0.5])
    assert student.student_sigmas(4, shift=1.0) == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert student.student_sigmas(2, timesteps=[1000, 500]) == [1.0, 0.5]
    cfg = WorldModelConfig.tiny_default(sampler="student", student_steps=2, student_timesteps=[999, 700])
    assert student.schedule_of(cfg) == pytest.approx([0.999, 0.7])
    with pytest.raises(ValueError):
        student.student_sigmas(5)


@pytest.mark.parametrize("data, key, problem", [
    ({"sampler": "studnet"}, "sampler", "must be one of"),
    ({"student_steps": 5}, "student_steps", "<= 4"),
    ({"student_steps": 0}, "student_steps", ">= 1"),
    ({"student_steps": 2, "student_timesteps": [500, 900]}, "student_timesteps", "decreasing"),
    ({"student_steps": 2, "student_timesteps": [900]}, "student_timesteps", "student_steps is 2"),
    ({"student_steps": 1, "student_timesteps": [1200]}, "student_timesteps", "(0, 1000]"),
    ({"sampler": "student", "cache": {"kind": "first_block"}}, "cache", "set cache.kind none"),
])
def test_student_config_errors_are_one_line(data, key, problem):
    with pytest.raises(ConfigError) as err:
        WorldModelConfig.from_dict(data, source="w.yaml", section="world_model")
    assert err.value.key == key and problem in str(err.value) and "\n" not in str(err.value)
