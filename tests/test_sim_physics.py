"""Physics twin: a grasp holds, a release drops; task success checks; scripted demos; eva-sim-demos."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from eva_core.data.hdf5_io import read_aloha_hdf5
from eva_core.embodiment import load_embodiment
from eva_core.sim.demos import action_stream, run_demo
from eva_core.sim.demos_cli import main as demos_main
from eva_core.sim.registry import TASKS, make_task
from eva_core.sim.tasks import LIFT

pytestmark = pytest.mark.unit

EMB = load_embodiment()
FIXTURE = Path(__file__).parent / "fixtures" / "single_piper" / "single_piper.yaml"


@pytest.fixture(scope="module")
def pick():
    task = make_task("pick_block", EMB)
    twin = task.make_twin()
    yield task, twin
    twin.close()


def _run(task, twin, plan):
    steps = int(round(1.0 / (25.0 * twin.timestep)))
    for target in action_stream(plan, twin.action(), 25.0):
        twin.set_targets(target)
        twin.step(steps)


def test_grasped_block_stays_in_the_gripper_and_falls_when_released(pick):
    task, twin = pick
    task.reset(twin, seed=3)
    rest = twin.body_pose("red_block")[0][2]
    _run(task, twin, task.plan(twin))
    arm = next(a for a in twin.arms if a.name == task.plan_info["arm"])
    block, tcp = twin.body_pose("red_block")[0], twin.site_pose(f"tcp_{arm.name}")[0]
    assert block[2] > rest + LIFT                       # lifted with the arm
    assert np.linalg.norm(block - tcp) < 0.03           # between the fingers
    fingers = [b for b in ("left_finger1", "left_finger2", "right_finger1", "right_finger2") if arm.name in b]
    assert all(twin.contacts("red_block", f) > 0 for f in fingers)
    twin.step(int(1.0 / twin.timestep))                 # held for another second
    assert twin.body_pose("red_block")[0][2] > rest + LIFT
    target = twin.targets()
    target[arm.gripper_dim] = 1.0                       # open
    twin.set_targets(target)
    twin.step(int(1.0 / twin.timestep))
    assert twin.body_pose("red_block")[0][2] == pytest.approx(rest, abs=0.005)   # fell back to the table
    assert twin.contacts("red_block", "world") > 0           # resting on the table (a world geom)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_success_check_true_on_scripted_success_false_on_scripted_failure(name):
    task = make_task(name, EMB)
    twin = task.make_twin()
    try:
        task.reset(twin, seed=1)
        assert not task.success(twin)                   # not solved at the start
        assert run_demo(task, twin, seed=1, record=False).success
        assert not run_demo(task, twin, seed=1, record=False, variant="fail").success
    finally:
        twin.close()


def test_seeds_randomise_and_reproduce_the_initial_poses(pick):
    task, twin = pick
    poses = []
    for seed in (5, 6, 5):
        task.reset(twin, seed)
        poses.append(twin.body_pose("red_block")[0])
    assert np.linalg.norm(poses[0] - poses[1]) > 1e-3
    np.testing.assert_allclose(poses[0], poses[2], atol=1e-9)


def test_physics_is_faster_than_real_time_and_advance_to_paces_it(pick):
    _, twin = pick
    t0 = twin.time
    assert twin.advance_to(100.0) == 0                  # first call sets the clock origin
    assert twin.advance_to(100.05) == pytest.approx(0.05 / twin.timestep, abs=1)
    assert twin.advance_to(200.0) == pytest.approx(0.1 / twin.timestep, abs=1)   # catch-up is bounded
    assert twin.time > t0


def test_single_arm_fixture_builds_steps_and_picks():
    emb = load_embodiment(FIXTURE)
    task = make_task("pick_block", emb)
    twin = task.make_twin()
    try:
        assert len(twin.arms) == 1 and twin.read()[0].shape == (emb.dof,)
        twin.step(10)
        assert run_demo(task, twin, seed=0, record=False).success
        with pytest.raises(ValueError, match="needs 2 arms"):
            make_task("lift_bar", emb).make_twin()
    finally:
        twin.close()


def test_eva_sim_demos_writes_successful_episodes(tmp_path, capsys):
    out = tmp_path / "demos"
    rc = demos_main(["--task", "pick_block", "--episodes", "2", "--seed", "0", "--out", str(out),
                     "--height", "24", "--width", "32", "--cameras", "cam_high", "cam_left_wrist"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["success_rate"] == len(summary["kept"]) / 2 and summary["kept"]
    assert "successful" in capsys.readouterr().out
    path = out / f"episode_{summary['kept'][0]}.hdf5"
    ep = read_aloha_hdf5(path)
    assert ep.instruction == "pick up the red block" and set(ep.cameras) == {"cam_high", "cam_left_wrist"}
    assert ep.frames.shape[1:] == (24, 32, 3) and ep.qpos.shape == (len(ep), EMB.dof) and ep.qvel is not None
    with h5py.File(path) as f:
        assert int(f.attrs["seed"]) == summary["kept"][0] and f.attrs["task"] == "pick_block"
    # the recorded joints reach the commanded actions once the plan holds still (the servos lag in motion)
    assert np.abs(ep.qpos[-1] - ep.action[-1])[list(EMB.arm_indices)].max() < 0.02
    assert np.abs(np.diff(ep.qpos[:, list(EMB.arm_indices)], axis=0)).max() > 0.005   # and they moved
    # an existing output is refused without --overwrite, and kept
    assert demos_main(["--task", "pick_block", "--episodes", "1", "--out", str(out)]) == 2
    assert path.exists()
    with pytest.raises(SystemExit) as exc:   # argparse: usage + exit 2
        demos_main(["--task", "no_such_task", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2


@pytest.mark.parametrize("name,body", [("pick_block_narrow", "red_block"), ("push_block_narrow", "blue_block")])
def test_narrow_tasks_place_in_front_of_the_first_arm_within_their_ranges(name, body):
    task, wide = make_task(name, EMB), make_task(name.removesuffix("_narrow"), EMB)
    twin = task.make_twin()
    try:
        arm = twin.arms[0]
        narrow_xy, wide_xy = [], []
        for seed in range(12):
            task.reset(twin, seed)
            narrow_xy.append(twin.body_pose(body)[0][:2] - arm.base[:2])
            wide.reset(twin, seed)
            wide_xy.append(twin.body_pose(body)[0][:2] - arm.base[:2])
        narrow_xy, wide_xy = np.array(narrow_xy), np.array(wide_xy)
        assert np.all(np.abs(narrow_xy[:, 1]) <= 0.005 + 1e-9)                    # laterally within +-5 mm
        assert np.all((narrow_xy[:, 0] >= task.params.forward[0] - 1e-9) & (narrow_xy[:, 0] <= task.params.forward[1] + 1e-9))
        assert np.ptp(narrow_xy[:, 0]) > 1e-4                                     # still seeded, not fixed
        assert np.ptp(wide_xy[:, 1]) > 0.3                                        # the wide task uses both arms
    finally:
        twin.close()


def test_eva_sim_demos_renders_from_a_plain_shell_without_mujoco_gl(tmp_path):
    """#23 row 9: from a shell with no MUJOCO_GL (and no display) MuJoCo died with a FatalError;
    eva_core.sim picks a headless backend before mujoco is imported."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY",
                                                              "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = tmp_path / "demos"
    proc = subprocess.run([sys.executable, "-m", "eva_core.sim.demos_cli", "--task", "pick_block", "--episodes", "1",
                           "--seed", "0", "--out", str(out), "--height", "24", "--width", "32", "--cameras", "cam_high"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "summary.json").exists()


def test_gl_backend_choice():
    from eva_core.sim.gl import HINT, select_gl_backend

    found = lambda *libs: (lambda name: name in libs and f"lib{name}.so") # noqa: E731
    assert select_gl_backend({"MUJOCO_GL": "glfw"}, found()) == "glfw"
    assert select_gl_backend({"DISPLAY": ":0"}, found("EGL")) == ""
    env = {}
    assert select_gl_backend(env, found("EGL", "OSMesa")) == "egl" and env == {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    assert select_gl_backend({}, found("OSMesa")) == "osmesa"
    with pytest.raises(RuntimeError, match="install libegl1"):
        select_gl_backend({}, found())
    assert "MUJOCO_GL=egl|osmesa" in HINT
