"""eva-bringup: compose any set of eva nodes in one process and report on the run.

    eva-bringup --config config/loopback.yaml --duration 20 --report r.json

The config is the same ROS params file the launch files pass to each node, loaded after
config/base.yaml (eva_ros.params.params_layers; `--config` repeated layers more files, later
ones win key by key). Every section is checked with its typed class (eva_ros/node_config.py)
before rclpy starts. The `eva_bringup` section says which nodes to compose and how to set up DDS:

    eva_bringup:
      ros__parameters:
        nodes: [camera, planner, idm_action, controller]   # "kind" or "kind:node_name"
        fastdds_transport: LARGE_DATA                       # FASTDDS_BUILTIN_TRANSPORTS
        fastdds_shm_profile: true                           # + config/fastdds_shm.xml (16 MB SHM)
        discovery_range: LOCALHOST                          # ROS_AUTOMATIC_DISCOVERY_RANGE ("" = leave)
        num_threads: 6                                      # MultiThreadedExecutor threads
        executor: multi_threaded                            # | single_per_node | events

Every node reads its own section (`camera:`, `planner:`, ...) and `/**` from those files, as with
`--ros-args --params-file base.yaml --params-file <config>`. The JSON report (written atomically) has the counts and latency
percentiles of every node plus a `summary` with the acceptance numbers.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path


from eva_core.atomic_io import write_json
from eva_core.cli import add_debug_arg, check_writable, cli_main
from eva_core.latency_breakdown import merge as merge_breakdowns
from eva_ros.params import (check_bringup, load_params_files, node_params, params_layers, remember_params_files,
                            ros_params_args)
from eva_ros.runtime import (GIL_SWITCH_INTERVAL, StopSignals, configure_transport, halt_nodes, start_spinners,
                             wait_until_stopped)
from eva_ros.registry import NODE_KINDS, node_class

# construction order: the model nodes first (imports and model builds hold the GIL for seconds),
# the controller last, so its 200 Hz thread does not start into those stalls.
ORDER = ["idm_action", "planner", "camera", "controller"]


def params_section(path, node: str) -> dict:
    """The merged parameters of `node` in config/base.yaml + the params file(s) `path`."""
    return node_params(load_params_files(params_layers(path)), node)


def load_bringup_section(path) -> dict:
    """The typed `eva_bringup` section (eva_ros.node_config.BringupConfig) of base + `path`."""
    return check_bringup(params_layers(path))[0].to_dict()


def node_specs(nodes: list[str]) -> list[tuple[str, str]]:
    """["camera", "camera:wrist_cam"] -> [(kind, node_name)] in construction order."""
    specs = [(s.split(":")[0], s.split(":", 1)[1] if ":" in s else s) for s in nodes]
    return sorted(specs, key=lambda kn: ORDER.index(kn[0]) if kn[0] in ORDER else len(ORDER))   # unknown: checked later


def build_nodes(specs, nodes: list | None = None) -> list:
    """Construct the nodes into `nodes` one by one, so a caller's list holds the ones already
    built (and running their threads) when a later constructor raises."""
    nodes = [] if nodes is None else nodes
    for kind, name in specs:
        nodes.append((kind, node_class(NODE_KINDS[kind])(node_name=name)))
    return nodes


def summarize(reports: dict, duration: float) -> dict:
    """The acceptance numbers, aggregated over the composed nodes."""
    def total(key):
        return sum(r.get(key, 0) for r in reports.values() if isinstance(r.get(key, 0), (int, float)))

    def latency(key):
        found = [r[key] for r in reports.values() if key in r]
        return found[0] if found else {"count": 0}

    return {
        "duration_s": round(duration, 3),
        "chunks_planned": total("chunks_planned"),
        "trajectories_published": total("idm_trajectories"),
        "trajectories_executed": total("trajectories_executed"),
        "trajectories_expired": total("trajectories_expired"),   # ended before they reached the controller
        "commands_sent": total("commands_sent"),
        "limit_violations": total("limit_violations"),
        "watchdog_events": total("watchdog_events"),
        "rejected": {"frames": total("frames_rejected") + total("idm_rejected_frames"),
                     "actions": total("idm_rejected_actions"), "reward": total("idm_rejected_reward"),
                     "trajectories": total("trajectories_rejected"), "commands": total("rejected_commands"),
                     "stale_observations": total("stale_observations_rejected")},
        "latency_ms": {"camera_to_plan": latency("latency_camera_to_plan"),
                       "plan_to_trajectory": latency("latency_plan_to_trajectory"),
                       "camera_to_trajectory": latency("latency_camera_to_trajectory"),
                       "trajectory_to_first_command": latency("latency_trajectory_to_first_command")},
        "control_period": latency("control_period"),   # the controller's tick-to-tick period
        "world_model_stages": latency("world_model_stages"),   # the planner's per-chunk calls and stage seconds
        # where camera-to-plan goes (planner) and plan-to-trajectory (idm_action), ms per stage
        "latency_breakdown": merge_breakdowns(*(r.get("latency_breakdown") for r in reports.values())),
    }


def merge_reports(*results: dict) -> dict:
    """One bringup result from the reports of several processes of one graph (e.g. planner +
    IDM in one, camera + controller in another): nodes_report joined, summary recomputed."""
    reports = {}
    for r in results:
        reports.update(r["nodes_report"])
    duration = max(r["summary"]["duration_s"] for r in results)
    return {"config": results[0]["config"], "nodes": [n for r in results for n in r["nodes"]],
            "environment": results[0]["environment"], "error": "; ".join(r["error"] for r in results if r["error"]),
            "stopped_by": results[0]["stopped_by"], "summary": summarize(reports, duration), "nodes_report": reports}


def run(config: Path, duration: float | None, report_path: Path | None, nodes_override=None,
        progress: bool = True) -> dict:
    """Compose, spin until `duration`, SIGINT/SIGTERM or a dead executor thread, close, report.
    The result's `error` is the cause of an abnormal end ("" otherwise)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    files = params_layers(config)   # config/base.yaml, then the given file(s)
    # every section typed and checked before rclpy starts: one line naming file, section, key
    section, _ = check_bringup(files, node_specs(nodes_override) if nodes_override else None)
    specs = node_specs(nodes_override or section.nodes)
    env = configure_transport(section.fastdds_transport or None, section.discovery_range or None,
                              section.fastdds_shm_profile)

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    rclpy.init(args=remember_params_files(ros_params_args(files)),  # every node reads its section
               signal_handler_options=SignalHandlerOptions.NO)   # ours: stop cleanly, then shut down
    reports, built, t_start, cause = {}, [], time.time(), ""
    spinner = None
    with StopSignals("eva-bringup") as signals:
        try:
            build_nodes(specs, built)   # a failing constructor leaves the earlier nodes in `built` to close
            spinner = start_spinners(section.executor, [n for _, n in built], section.num_threads)
            t_start = time.time()
            cause = _wait(duration, signals.event, spinner, progress, [n for _, n in built])
            if cause:   # the executor or a node died: stop the arms from here, not from the dead thread
                print(f"eva-bringup: {cause}; halting", file=sys.stderr)
                halt_nodes([n for _, n in built], cause)
        finally:
            elapsed = time.time() - t_start
            for kind, node in built:   # stop the producers (worker/control threads, timers) first
                try:
                    node.close()
                except Exception as exc:  # noqa: BLE001
                    print(f"eva-bringup: closing {node.get_name()}: {exc}", file=sys.stderr)
            if spinner is not None:
                spinner.stop()
            for kind, node in built:
                reports[node.get_name()] = {"kind": kind, **node.report()}
            for _, node in built:
                node.destroy_node()
            if rclpy.ok():
                rclpy.shutdown()
    result = {"config": " + ".join(str(f) for f in files), "nodes": [n for _, n in specs], "environment": env,
              "executor": section.executor, "error": cause,
              "stopped_by": signal.Signals(signals.signum).name if signals.signum else "",
              "summary": summarize(reports, elapsed), "nodes_report": reports}
    if report_path is not None:
        write_json(report_path, result)
    return result


def _wait(duration, stop, spinner, progress, nodes) -> str:
    """Until `duration` s, `stop`, a dead executor or a failed node; returns the cause of an
    abnormal end."""
    if duration is None:
        return wait_until_stopped(stop, spinner, nodes=nodes)
    from tqdm import tqdm

    with tqdm(total=round(duration), unit="s", disable=not progress, desc="eva-bringup") as bar:
        t0 = time.monotonic()

        def show():   # redraw once per second, not per poll
            n = min(round(time.monotonic() - t0), round(duration))
            if n != bar.n:
                bar.n = n
                bar.refresh()
        return wait_until_stopped(stop, spinner, t0 + duration, on_poll=show, nodes=nodes)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="eva-bringup", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="The YAML is a ROS params file; see docs/ros_interface.md. SIGINT/SIGTERM "
                                        "stop cleanly (exit 0, report written); a second signal exits at once.")
    ap.add_argument("--config", required=True, action="append",
                    help="params YAML (a path, or a name under config/), loaded after config/base.yaml; "
                         "repeat to layer several (later ones win key by key)")
    ap.add_argument("--duration", type=float, default=None, help="run this many seconds (default: until Ctrl-C)")
    ap.add_argument("--report", type=Path, default=None, help="write the JSON report here (atomic)")
    ap.add_argument("--nodes", default=None, help="comma-separated node kinds to compose instead of the YAML's list")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_arg(ap)
    args = ap.parse_args(argv)
    if args.report is not None:
        check_writable(args.report)   # before the run, not after it
    result = run(args.config, args.duration, args.report,
                 args.nodes.split(",") if args.nodes else None, progress=not args.quiet)
    s = result["summary"]
    print(f"eva-bringup: {s['chunks_planned']} chunks planned, {s['trajectories_executed']} trajectories executed, "
          f"{s['trajectories_expired']} expired before they arrived, {s['commands_sent']} commands sent, "
          f"{s['limit_violations']} limit violations, "
          f"{s['watchdog_events']} watchdog events")
    if result["error"]:
        print(f"eva-bringup: stopped abnormally: {result['error']}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return cli_main("eva-bringup", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
