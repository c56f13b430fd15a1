"""`twin_piper`: the real Piper backend over virtual CAN to the emulator, whose plant is the physics
twin: commands move the simulated arms, a grasp through CAN holds a block, feedback is the twin's."""

import time

import numpy as np
import pytest

from eva_core.embodiment import load_embodiment
from eva_core.sim import get_twin, reset_twins
from eva_core.sim.demos import action_stream
from eva_core.sim.registry import make_task
from eva_core.sim.tasks import LIFT
from eva_ros.backends import make_arm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]
EMB = load_embodiment()


def _wait(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_commands_over_can_move_the_twin_and_feedback_is_the_twins():
    arm = make_arm("twin_piper", EMB, {"twin": "tp_move"})
    try:
        arm.connect()
        arm.enable()
        twin = get_twin("tp_move")
        start = arm.read_state().positions
        np.testing.assert_allclose(start, twin.read()[0], atol=2e-3)   # SDK units round to 0.001 deg / um
        target = start.copy()
        target[0] += 0.3
        target[13] = 0.2
        for s in np.linspace(0, 1, 150):   # 0.75 s at the control rate
            arm.send_positions(start + s * (target - start))
            time.sleep(0.005)
        _wait(lambda: np.abs(twin.read()[0][[0, 13]] - target[[0, 13]]).max() < 0.01)
        _wait(lambda: np.abs(arm.read_state().positions - twin.read()[0]).max() < 5e-3)
    finally:
        arm.close()
        reset_twins()


def test_a_scripted_pick_through_the_piper_backend_lifts_the_block(capfd):
    """The backend's `seed` places the task as task.reset does; close logs the success check."""
    task = make_task("pick_block", EMB)
    arm = make_arm("twin_piper", EMB, {"twin": "tp_pick", "task": "pick_block", "seed": 2})
    twin = get_twin("tp_pick", EMB, task="pick_block")
    ref = task.make_twin()
    try:
        task.reset(ref, seed=2)
        np.testing.assert_allclose(twin.body_pose("red_block")[0], ref.body_pose("red_block")[0], atol=1e-9)
    finally:
        ref.close()
    plan = task.plan(twin)
    rest = twin.body_pose("red_block")[0][2]
    try:
        arm.connect()
        arm.enable()
        for target in action_stream(plan, arm.read_state().positions, fps=200.0):   # the 200 Hz command stream
            t0 = time.monotonic()
            arm.send_positions(target)
            time.sleep(max(0.0, 0.005 - (time.monotonic() - t0)))
        time.sleep(0.5)
        assert twin.body_pose("red_block")[0][2] > rest + LIFT
        assert task.success(twin)
    finally:
        arm.close()
        reset_twins()
    assert "twin task pick_block seed 2: success True" in capfd.readouterr().err
