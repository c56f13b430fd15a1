"""Process setup shared by the node mains, bringup and the benchmarks."""

from __future__ import annotations

import os

# Fast DDS builtin transports: LARGE_DATA = UDP discovery + TCP/shared memory for big payloads
# (a 640x480 rgb8 image: ~13 ms default -> ~2.5 ms; FACTS §8). All eva processes use the same.
DEFAULT_TRANSPORT = "LARGE_DATA"


def configure_transport(transport: str | None = DEFAULT_TRANSPORT, discovery_range: str | None = None) -> dict:
    """Set the DDS environment before rclpy.init(); values already in the environment win.

    Returns the effective settings (for reports)."""
    if transport:
        os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", transport)
    if discovery_range:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", discovery_range)
    return {k: os.environ.get(k, "") for k in
            ("FASTDDS_BUILTIN_TRANSPORTS", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION")}


def run_node(node_cls, args=None, num_threads: int = 4) -> None:
    """Standard main(): init, spin one node on a MultiThreadedExecutor, clean shutdown."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    import sys

    configure_transport()
    sys.setswitchinterval(0.0005)  # threads that wake often (200 Hz control) get the GIL promptly
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
