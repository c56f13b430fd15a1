"""Process setup shared by the node mains, bringup and the benchmarks."""

from __future__ import annotations

import os
import threading
import time

# Fast DDS transports for big images, the same in every eva process:
# - FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA: UDP discovery, TCP for samples between machines;
# - FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_shm.xml: adds a 16 MB shared-memory segment
#   (the builtin 512 kB one is too small for a 640x480 rgb8 image, which then takes ~13 ms on a
#   RELIABLE topic instead of ~3 ms; see bench/ros_latency.py).
DEFAULT_TRANSPORT = "LARGE_DATA"
SHM_PROFILE = "fastdds_shm.xml"
# GIL convoy: the generation thread releases the GIL at every small torch op and must win it
# back from the busy executor threads; with the default 5 ms switch interval a tiny chunk took
# ~4 s instead of ~0.25 s, and the 200 Hz control thread waited up to 0.5 s. Every eva process
# that runs nodes sets this (sys.setswitchinterval).
GIL_SWITCH_INTERVAL = 0.0002


def shm_profile_path() -> str:
    from eva_core.paths import share_dir

    return str(share_dir() / "config" / SHM_PROFILE)


def configure_transport(transport: str | None = DEFAULT_TRANSPORT, discovery_range: str | None = None,
                        shm_profile: bool = True) -> dict:
    """Set the DDS environment before rclpy.init(); values already in the environment win.

    Returns the effective settings (for reports)."""
    if transport:
        os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", transport)
    if shm_profile and not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = shm_profile_path()
    if discovery_range:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", discovery_range)
    return {k: os.environ.get(k, "") for k in
            ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE",
             "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION")}


def run_periodic(period: float, stop: threading.Event, tick, max_lag: float) -> None:
    """Call `tick()` every `period` s on absolute deadlines (no drift) until `stop` is set.
    Fallen more than `max_lag` behind (a stall, a suspend), restart the schedule from now
    instead of bursting through the missed ticks. The loop of the camera and control threads."""
    next_t = time.monotonic()
    while not stop.is_set():
        next_t += period
        delay = next_t - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -max_lag:
            next_t = time.monotonic()
        if not stop.is_set():
            tick()


def stop_thread(stop: threading.Event, thread: threading.Thread, timeout: float) -> None:
    """Set `stop` and join `thread` for at most `timeout` s (not from the thread itself)."""
    stop.set()
    if thread.is_alive() and threading.current_thread() is not thread:
        thread.join(timeout=timeout)


def set_torch_threads(n: int) -> None:
    """torch.set_num_threads(n) for n > 0 (a node's `torch_threads`); 0 leaves torch's default."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def parse_cli(prog: str, description: str, args=None) -> list[str]:
    """argparse for a node main: `--help` shows the node's docstring (its parameters); all ROS
    arguments (`--ros-args ...`) pass through to rclpy."""
    import argparse
    import sys

    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if args is None else args)
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="ROS arguments: --ros-args --params-file config/loopback.yaml "
                                        "[-r __node:=NAME] [-p name:=value]")
    ap.parse_args(remove_ros_args(argv)[1:])
    return argv


def run_node(node_cls, args=None, num_threads: int = 4) -> None:
    """Standard main(): --help, init, spin one node on a MultiThreadedExecutor, clean shutdown."""
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    module = sys.modules[node_cls.__module__]
    args = parse_cli("eva-" + module.__name__.rsplit(".", 1)[-1].replace("_", "-"), module.__doc__, args)
    configure_transport()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    rclpy.init(args=args)
    node = None
    try:
        node = node_cls()
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
