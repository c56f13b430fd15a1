"""idm_replay_success (eva_core/sim/idm_replay.py): the twin executes what an IDM decodes from a
demo's video, and the demo's own commands as the control. An IDM that reads the video right
passes; one that does not fails; the metric counts only what the twin's success check says."""

import numpy as np
import pytest
import torch

from eva_core.embodiment import load_embodiment
from eva_core.sim.idm_replay import ground_truth_demos, replay_demos

pytestmark = pytest.mark.unit

TASK = "pick_block_narrow"


class _TableIDM:
    """Stands in for a trained IDM: maps each demo frame back to an action by lookup (`decode`
    gives the action it returns for a frame index). The replay path itself is the real one."""

    def __init__(self, demos, decode):
        self._table = [(ep.frames, decode(ep)) for _, ep in demos]

    def predict(self, video):
        frames = video.permute(0, 2, 3, 1).numpy()
        for known, actions in self._table:
            if known.shape == frames.shape and np.array_equal(known, frames):
                return torch.from_numpy(actions.astype(np.float32))
        raise AssertionError("a video that is not one of the demos")


@pytest.fixture(scope="module")
def demos():
    emb = load_embodiment()
    found = ground_truth_demos(TASK, emb, [100], fps=10.0, size=(48, 64))
    assert [s for s, _ in found] == [100]
    return emb, found


def test_an_idm_that_reads_the_video_right_replays_the_demo(demos):
    emb, found = demos
    r = replay_demos(_TableIDM(found, lambda ep: np.asarray(ep.action)), TASK, emb, found, tried=1)
    assert r["idm_replay_success"] == 1.0 and r["gt_replay_success"] == 1.0
    assert r["success"] == {"100": True} and r["action_mae"] == 0.0 and r["demo_success"] == 1.0


def test_an_idm_that_misreads_the_gripper_fails_the_replay(demos):
    emb, found = demos

    def open_gripper(ep):
        a = np.asarray(ep.action).copy()
        moved = np.flatnonzero(np.ptp(a, axis=0) > 1e-3)
        grip = [d for d in emb.gripper_dims if d in moved]
        a[:, grip] = a[0, grip]   # the fingers never close: the block stays on the table
        return a

    r = replay_demos(_TableIDM(found, open_gripper), TASK, emb, found, tried=1)
    assert r["idm_replay_success"] == 0.0 and r["gt_replay_success"] == 1.0 and r["action_mae"] > 0
