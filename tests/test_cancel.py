"""eva_core.cancel: torch work stops at its next module call once cancelled (#23 item 9)."""

import threading

import pytest
import torch

from eva_core.cancel import Cancelled, TorchWork

pytestmark = pytest.mark.unit


def test_running_work_stops_between_steps_and_other_threads_are_untouched():
    work, layer = TorchWork("test"), torch.nn.Linear(4, 4)
    started, steps, result = threading.Event(), [], {}

    def loop():
        try:
            with work.running():
                while True:   # a denoising loop: one module call per step
                    layer(torch.zeros(1, 4))
                    steps.append(1)
                    started.set()
        except Cancelled as exc:
            result["exc"] = exc

    t = threading.Thread(target=loop)
    t.start()
    assert started.wait(30)
    work.cancel()
    t.join(30)
    assert not t.is_alive() and "cancelled between steps" in str(result["exc"])
    assert work._hook is None   # removed once the work stopped
    n = len(steps)
    layer(torch.zeros(1, 4))            # this thread runs no tracked work: its modules still run
    assert len(steps) == n
    with pytest.raises(Cancelled):      # and no new work starts once cancelled
        with work.running():
            pass


def test_cancel_without_running_work_installs_no_hook():
    work = TorchWork()
    work.cancel()
    assert work._hook is None and work.cancelled.is_set()
