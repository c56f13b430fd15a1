"""The task registry (one list of task names), typed task parameters and sim arm options, and a
twin that computes its arm layout once."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import eva_core.sim.layout as layout_module
from eva_core.config import ConfigError
from eva_core.embodiment import load_embodiment
from eva_core.sim import Twin, registry
from eva_core.sim.registry import TASKS, get_twin, make_task, reset_twins, task_params, unknown_task
from eva_core.sim.tasks import Task

pytestmark = pytest.mark.ros

EMB = load_embodiment()
ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_task_resolves_and_takes_its_registry_name():
    for name in TASKS:
        task = make_task(name, EMB)
        assert isinstance(task, Task) and task.name == name
        assert isinstance(task.params, type(task).Params)


def test_reading_the_task_names_loads_neither_mujoco_nor_the_tasks():
    code = ("import sys, eva_core.sim.registry as r; assert r.TASKS; "
            "print(sorted(m for m in ('mujoco', 'mink', 'eva_core.sim.tasks', 'eva_core.sim.scene') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_task_names_the_nearest_one():
    assert unknown_task("pick_block") == ""
    assert "did you mean 'pick_block'?" in unknown_task("pick_blok")
    with pytest.raises(ValueError, match="did you mean 'lift_bar'"):
        make_task("lift_barr", EMB)


def test_a_typo_in_a_tasks_parameters_is_refused_by_name():
    with pytest.raises(ConfigError) as exc:
        make_task("pick_block", EMB, {"yaww": 0.1}, source="p.yaml", section="controller.arm.task_params")
    assert str(exc.value) == "p.yaml: controller.arm.task_params: yaww: unknown key; did you mean 'yaw'?"
    with pytest.raises(ConfigError, match="task_params: forward: need \\[low, high\\] with low <= high"):
        task_params("push_block", {"forward": [0.3, 0.2]})
    with pytest.raises(ConfigError, match="task_params: heading: must be >= 0"):
        task_params("push_block", {"heading": -0.1})
    with pytest.raises(ConfigError, match="task_params: max_tilt: expected float"):
        task_params("lift_bar", {"max_tilt": "0.2"})


def test_a_variant_is_its_tasks_parameters_with_other_defaults():
    wide, narrow = make_task("pick_block", EMB).params, make_task("pick_block_narrow", EMB).params
    assert not wide.first_arm and wide.forward == (0.29, 0.36)
    assert narrow.first_arm and narrow.forward == (0.32, 0.33) and narrow.yaw == 0.05
    assert make_task("pick_block_narrow", EMB, {"yaw": 0.0}).params.forward == (0.32, 0.33)   # over the variant


def _count_calls(monkeypatch, name: str) -> list:
    """Wrap `eva_core.sim.layout.<name>` in every module that bound it; the list grows per call."""
    calls, original = [], getattr(layout_module, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("eva_core") and getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, counting)
    return calls


def test_building_a_twin_computes_its_arm_layout_once(monkeypatch):
    layouts, joints = _count_calls(monkeypatch, "arm_layout"), _count_calls(monkeypatch, "actuated_joints")
    twin = make_task("pick_block", EMB).make_twin()
    try:
        assert len(layouts) == 1 and len(joints) == 1
        assert [a.name for a in twin.arms] == [a.name for a in EMB.arms]
    finally:
        twin.close()


# -- the sim arm's options, as the config check reads a params file ---------------------------------

def _controller(arm: dict, backend: str = "sim"):
    from eva_ros.node_config import ControllerConfig

    return ControllerConfig.from_dict({"arm_backend": backend, "arm": arm}, source="p.yaml", section="controller")


@pytest.fixture
def no_twin(monkeypatch):
    """Fails any test that builds a twin: the config check refuses before any work."""
    def refuse(*_a, **_k):
        raise AssertionError("a twin was built")

    monkeypatch.setattr(Twin, "__init__", refuse)


@pytest.mark.parametrize("backend", ["sim", "twin_piper"])
def test_a_typo_in_the_sim_arm_options_is_refused_by_name_before_any_work(no_twin, backend):
    with pytest.raises(ConfigError) as exc:
        _controller({"tsk": "pick_block"}, backend)
    assert str(exc.value) == "p.yaml: controller.arm: tsk: unknown key; did you mean 'task'?"
    with pytest.raises(ConfigError) as exc:
        _controller({"task": "pick_blok", "seed": 0}, backend)
    assert str(exc.value).startswith("p.yaml: controller.arm: task: unknown task 'pick_blok'; did you mean 'pick_block'?")
    with pytest.raises(ConfigError) as exc:
        _controller({"task": "push_block", "seed": 0, "task_params": {"headng": 0.1}}, backend)
    assert str(exc.value) == "p.yaml: controller.arm.task_params: headng: unknown key; did you mean 'heading'?"
    with pytest.raises(ConfigError, match="p.yaml: controller.arm: task_params: parameters without a task"):
        _controller({"task_params": {"yaw": 0.1}}, backend)
    cfg = _controller({"task": "push_block", "seed": 0, "task_params": {"heading": 0.1}}, backend)
    assert cfg.arm["task_params"] == {"heading": 0.1}


def test_a_typo_in_the_sim_camera_task_is_refused_by_name(no_twin):
    from eva_ros.backends.sim_camera import SimCameraSource

    with pytest.raises(ConfigError, match="camera.source_options: task: unknown task 'push_blok'; did you mean 'push_block'"):
        SimCameraSource.Options.from_dict({"task": "push_blok"}, source="p.yaml", section="camera.source_options")


def test_the_sim_arm_places_its_task_with_the_given_parameters():
    from eva_ros.backends.sim_arm import SimArm

    try:
        arm = SimArm(EMB, {"twin": "reg_params", "task": "pick_block", "seed": 3,
                           "task_params": {"first_arm": True, "forward": [0.3, 0.3], "lateral": [0.0, 0.0]}})
        base = np.array(get_twin("reg_params").arms[0].base)
        block = arm.twin.body_pose("red_block")[0]
        np.testing.assert_allclose(block[:2] - base[:2], [0.3, 0.0], atol=1e-9)
        assert arm.task.task.params.first_arm and "reg_params" in registry._TWINS
    finally:
        reset_twins()
