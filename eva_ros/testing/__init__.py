"""The one ROS graph harness of the tests and of eva-demo: an isolated environment
(`env`), params files (`params`), child processes (`procs`), a probe node in its own
context (`probe`), and nodes under test with a probe in this process (`inprocess`).

Every graph gets a unique ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (nothing
leaves the machine). Waits are generous timeouts on conditions, never timing thresholds.
"""

from eva_ros.testing.env import BIN, REPO, headless_env, ros_env, unique_domain_id, use_domain
from eva_ros.testing.inprocess import InProcessGraph
from eva_ros.testing.params import write_params
from eva_ros.testing.probe import Probe, WaitTimeout, call_service, diagnostic_events, wait_for
from eva_ros.testing.procs import Child, NodeProcess

__all__ = ["BIN", "REPO", "Child", "InProcessGraph", "NodeProcess", "Probe", "WaitTimeout", "call_service", "diagnostic_events",
           "headless_env", "ros_env", "unique_domain_id", "use_domain", "wait_for", "write_params"]
