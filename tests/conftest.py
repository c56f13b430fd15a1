"""Test-wide setup: loopback-only DDS, headless rendering, small thread pools (the graph harness's
environment, eva_ros.testing); every test module declares its tier (markers in pytest.ini)."""

import pytest

from eva_ros.testing import headless_env
from eva_ros.testing.tiers import TIERS, untiered

headless_env()


@pytest.fixture(autouse=True)
def _scheduling_policy_unchanged():
    """A test that leaves this process real-time (a native library did it: libsvtav1 as root) fails;
    the policy is put back, else every graph started later inherits it and can starve its DDS threads."""
    from eva_core.thread_policy import thread_policy

    before = thread_policy()
    yield
    after = thread_policy()
    if after != before:
        import os

        os.sched_setscheduler(0, before[0], os.sched_param(before[1]))
        pytest.fail(f"the test changed this thread's scheduling policy from {before} to {after} (policy, priority)")


def pytest_collection_modifyitems(config, items):
    """A test module without a tier marker (`pytestmark = pytest.mark.unit`, ...) fails the run."""
    missing = untiered(items)
    if missing:
        raise pytest.UsageError(f"test modules without a tier marker ({', '.join(TIERS)}): {', '.join(missing)}; "
                                "add `pytestmark = pytest.mark.<tier>`")

# Importing torchvision (it loads triton's native driver) after MuJoCo has rendered through EGL
# segfaults in this environment (seen with the code of every commit; e.g. test_idm_replay, then a
# test that first imports torchvision). Every process of the stack imports the models before it
# renders; the suite does the same, so the outcome does not depend on which tests run first.
import torchvision  # noqa: E402,F401
