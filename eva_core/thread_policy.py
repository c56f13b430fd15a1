"""Keep the calling thread's scheduling policy across a call into a native library.

SVT-AV1 (PyAV's libsvtav1), run as root, switches the thread that opens the encoder to
SCHED_FIFO 99. Every process that thread starts afterwards inherits it, and a busy real-time
ROS process on a small host starves its own DDS threads (a graph that never delivers a message).
"""

from __future__ import annotations

import contextlib
import os


def thread_policy() -> tuple[int, int]:
    """(policy, priority) of the calling thread (Linux: pid 0 is the calling thread)."""
    return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority


@contextlib.contextmanager
def keep_thread_policy():
    """Run the body, then put the calling thread's scheduling policy back if the body changed it."""
    if not hasattr(os, "sched_getscheduler"):   # not Linux: nothing to keep
        yield
        return
    before = thread_policy()
    try:
        yield
    finally:
        if thread_policy() != before:
            os.sched_setscheduler(0, before[0], os.sched_param(before[1]))
