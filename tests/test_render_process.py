"""The twin rendered through a child process (eva_core.sim.render_process, the sim camera's
`render_process` option) gives the in-process frames of the newest state, and a dead child is
one line, never a hang."""

import numpy as np
import pytest

from eva_core.embodiment import load_embodiment
from eva_core.sim.registry import make_task
from eva_core.sim.render_process import RenderProcessError

pytestmark = pytest.mark.ros   # a child process
EMB = load_embodiment()


@pytest.fixture
def twins():
    task = make_task("push_block_narrow", EMB)
    local, child = task.make_twin(), task.make_twin()
    child.render_in_child_process()   # started before the task places its objects
    yield task, local, child
    local.close()
    child.close()


def test_frames_equal_the_in_process_render_of_the_newest_state(twins):
    task, local, child = twins
    shots = []
    for seed, offset in ((1000, 0.0), (1001, 0.3), (1002, -0.2)):
        for t in (local, child):   # the seed moves the free block and the fixed green target
            task.reset(t, seed)
            a = t.home.copy()
            a[0] += offset
            t.set_action(a)
        for cam in ("cam_high", local.cameras[-1]):
            want, got = local.render(cam, 48, 64), child.render(cam, 48, 64)
            assert got.shape == (48, 64, 3) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, want)
            shots.append(got)
    assert np.abs(shots[0].astype(int) - shots[2]).mean() > 1.0   # the state did change the frame


def test_a_dead_child_is_one_line_and_close_ends_it(twins):
    _, _, child = twins
    proc = child._render_process._proc
    child.render("cam_high", 24, 32)
    proc.kill()
    proc.wait(10)
    with pytest.raises(RenderProcessError, match=r"^twin render process exited \(rc -9\)"):
        child.render("cam_high", 24, 32)
    child.close()
    assert child._render_process is None


def test_the_child_ends_when_its_parent_end_of_the_pipe_closes(twins):
    _, _, child = twins
    rp = child._render_process
    rp._conn.close()   # as when the parent dies: no goodbye message
    assert rp._proc.wait(10) == 0


def test_the_sim_camera_option_renders_through_the_child():
    from eva_ros.backends.sim_camera import SimCameraSource

    src = SimCameraSource(EMB, {"camera": "cam_high", "height": 48, "width": 64, "twin": "render_process_test",
                                "render_process": True})
    src.connect()
    try:
        assert src.twin._render_process is not None and src.twin._render_process.alive()
        frame = src.read()
        np.testing.assert_array_equal(frame.image, src.twin._render_process.render(
            "cam_high", 48, 64, src.twin.data.qpos.copy(), src.twin.model.body_pos.copy(),
            src.twin.model.body_quat.copy()))
    finally:
        src.close()
        src.twin.close()
