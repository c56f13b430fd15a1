"""Process setup shared by the node mains, bringup and the benchmarks: DDS transport, the
periodic loop of the camera and control threads, and the process lifecycle (`SpinThread`,
`StopSignals`, `wait_until_stopped`, `halt_nodes`, `run_node`): SIGINT/SIGTERM stop cleanly, a
second signal forces the exit, a dead executor thread or node halts the arms and fails the run."""

from __future__ import annotations

import os
import signal
import sys
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

    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if args is None else args)
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="ROS arguments: --ros-args --params-file config/loopback.yaml "
                                        "[-r __node:=NAME] [-p name:=value]")
    ap.parse_args(remove_ros_args(argv)[1:])
    return argv


class SpinThread:
    """Spins an executor on a daemon thread until `stop()`. A callback that raises ends rclpy's
    spin: the thread dies, `error` names the exception, and whoever watches (the main thread
    of eva-bringup and of a node main, the controller's heartbeat check) reacts."""

    def __init__(self, executor, name: str = "eva-executor"):
        self.executor = executor
        self.error = ""
        self._spinning = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "SpinThread":
        self._spinning.set()
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            spin(self.executor, self._spinning)
        except BaseException as exc:  # noqa: BLE001 - recorded; the watcher stops the process
            self.error = f"executor thread died: {type(exc).__name__}: {exc}"

    @property
    def died(self) -> bool:
        return self._spinning.is_set() and self.thread.ident is not None and not self.thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        drain(self.executor, self.thread, self._spinning, timeout)


class Spinners:
    """Several SpinThreads watched and stopped as one (SpinThread's `died`, `error`, `stop`)."""

    def __init__(self, spinners: list[SpinThread]):
        self.spinners = spinners

    def start(self) -> "Spinners":
        for s in self.spinners:
            s.start()
        return self

    @property
    def died(self) -> bool:
        return any(s.died for s in self.spinners)

    @property
    def error(self) -> str:
        return "; ".join(s.error for s in self.spinners if s.error)

    def stop(self, timeout: float = 5.0) -> None:
        for s in self.spinners:
            s.stop(timeout)


def start_spinners(kind: str, nodes: list, num_threads: int = 6) -> Spinners:
    """Executors for `nodes`, spinning (kind: eva_ros.node_config.EXECUTORS): one
    MultiThreadedExecutor, a SingleThreadedExecutor per node, or one EventsExecutor."""
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    if kind == "single_per_node":
        groups = [(SingleThreadedExecutor(), [n]) for n in nodes]
    elif kind == "events":
        from rclpy.experimental import EventsExecutor

        groups = [(EventsExecutor(), nodes)]
    elif kind == "multi_threaded":
        groups = [(MultiThreadedExecutor(num_threads=num_threads), nodes)]
    else:
        raise ValueError(f"executor: unknown kind {kind!r}")
    for executor, members in groups:
        for node in members:
            executor.add_node(node)
    return Spinners([SpinThread(ex, name=f"eva-executor-{i}") for i, (ex, _) in enumerate(groups)]).start()


def spin(executor, spinning: threading.Event) -> None:
    while spinning.is_set():
        executor.spin_once(timeout_sec=0.05)


def drain(executor, thread, spinning: threading.Event, timeout: float = 5.0) -> None:
    """Stop taking work, let running callbacks finish, then shut the executor down. (rclpy 9's
    Executor.shutdown does not wait for running callbacks: they then trip over its destroyed
    guard condition - "exception was never retrieved" at exit.)"""
    spinning.clear()
    if thread is not None and thread.ident is not None:
        thread.join(timeout=timeout)
    # handlers already handed to the thread pool but not started yet run even after shutdown()
    # and then trip over the destroyed guard condition: wait for them (private list; absent in
    # other rclpy versions) and fetch their exceptions, so none is printed as "never retrieved".
    deadline = time.monotonic() + timeout
    for future in list(getattr(executor, "_futures", ())):
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.002)
        if future.done():
            future.exception()
    tracker = getattr(executor, "_work_tracker", None)   # private; absent in other rclpy versions
    if tracker is not None:
        tracker.wait(timeout)
    executor.shutdown(timeout_sec=timeout)


class StopSignals:
    """SIGINT and SIGTERM (main thread): the first sets `event` for a clean stop; a second one,
    or `grace` s without the process ending, exits at once (os._exit(128 + signal))."""

    def __init__(self, prog: str, grace: float = 30.0):
        self.prog, self.grace = prog, grace
        self.event = threading.Event()
        self.signum = None
        self._old = {}
        self._timer = None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            self._exit(signum, "second signal")
        self.signum = signum
        self.event.set()
        self._timer = threading.Timer(self.grace, self._exit, (signum, f"not stopped {self.grace:.0f} s after"))
        self._timer.daemon = True
        self._timer.start()

    def _exit(self, signum, why: str) -> None:
        os.write(2, f"{self.prog}: {why} {signal.Signals(signum).name}; exiting now\n".encode())
        os._exit(128 + signum)

    def __exit__(self, *exc) -> bool:
        if self._timer is not None:
            self._timer.cancel()
        for s, handler in self._old.items():
            signal.signal(s, handler)
        return False


def wait_until_stopped(stop: threading.Event, spinner: SpinThread, deadline: float | None = None,
                       on_poll=None, poll: float = 0.2, nodes=()) -> str:
    """Main thread: wait for `stop`, the `deadline` (time.monotonic()), a dead executor thread or
    a node whose `failure()` names a cause (e.g. its control thread ended). Returns the cause of
    an abnormal end ("" for a normal one)."""
    while not stop.wait(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))):
        if spinner.died:
            return spinner.error or "executor thread ended"
        for node in nodes:
            cause = node.failure() if hasattr(node, "failure") else ""
            if cause:
                return f"{node.get_name()}: {cause}"
        if on_poll is not None:
            on_poll()
        if deadline is not None and time.monotonic() >= deadline:
            break
    return ""


def halt_nodes(nodes, cause: str) -> None:
    """Tell every node that can stop its hardware (`halt(reason)`) to do so now."""
    for node in nodes:
        halt = getattr(node, "halt", None)
        if halt is not None:
            try:
                halt(cause)
            except Exception as exc:  # noqa: BLE001 - keep halting the others
                print(f"halting {node.get_name()}: {exc!r}", file=sys.stderr)


def run_node(node_cls, args=None, num_threads: int = 4) -> None:
    """Standard main(): --help, init, spin one node on a MultiThreadedExecutor, stop cleanly on
    SIGINT/SIGTERM (exit 0). A start-up error (ConfigError, ...) is one line and exit 2; a dead
    executor thread halts the node and exits 1 (a node's `failure()` cause exits with its
    `failure_rc`, default 1). If closing the node fails after its work failed, the work's error is
    the one reported. Exits the process (sys.exit)."""
    from eva_core.cli import cli_main

    module = sys.modules[node_cls.__module__]
    prog = "eva-" + module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    argv = list(sys.argv if args is None else args)
    exit_now(cli_main(prog, lambda rest: _run_node(prog, module.__doc__, node_cls, argv[:1] + rest, num_threads),
                      argv[1:]))


def exit_now(code: int) -> None:
    """End a node main that has closed its node and shut rclpy down, skipping the interpreter's
    teardown: with torch (and diffusers) loaded, its final garbage collection alone takes seconds
    on a loaded machine, beyond launch's 5 s SIGINT grace. Output and logging are flushed first."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _run_node(prog: str, doc: str, node_cls, args: list[str], num_threads: int) -> int:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from eva_ros.params import check_params_args

    args = parse_cli(prog, doc, check_params_args(args))   # params files: one-line errors before rcl parses them
    configure_transport()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = spinner = None
    cause = ""
    with StopSignals(prog) as signals:
        try:
            node = node_cls()
            executor = MultiThreadedExecutor(num_threads=num_threads)
            executor.add_node(node)
            spinner = SpinThread(executor).start()
            cause = wait_until_stopped(signals.event, spinner, nodes=[node])
            if cause:
                halt_nodes([node], cause)
        except BaseException as work_error:
            late = _shut_down(node, spinner, rclpy)
            if late is not None:   # the work's error is the one reported; the second is chained
                print(f"{prog}: also while stopping: {type(late).__name__}: {late}", file=sys.stderr)
                work_error.add_note(f"then, while stopping: {type(late).__name__}: {late}")
            raise
        late = _shut_down(node, spinner, rclpy)
        if late is not None:
            raise late
    if cause:
        print(f"{prog}: {cause}", file=sys.stderr)
        return getattr(node, "failure_rc", 1)
    return 0


def _shut_down(node, spinner, rclpy) -> BaseException | None:
    """node.close(), stop the executor, destroy the node, rclpy.shutdown(): every step runs even
    if an earlier one fails (a skipped executor stop leaves "exception was never retrieved").
    Returns the first failure, or None."""
    steps = [node.close if node is not None else None, spinner.stop if spinner is not None else None,
             node.destroy_node if node is not None else None, lambda: rclpy.ok() and rclpy.shutdown()]
    first = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - returned; the remaining steps still run
            first = first or exc
    return first
