"""eva-record: record topics to rosbag2 MCAP without the ros2 CLI, crash-safe.

    eva-record [--ros-args --params-file config/record.yaml -p out_dir:=bags]

Subscribes with raw CDR (`raw=True`: the bytes are written as received) to the `topics` of its
`eva_record` params section (relative names follow the node's namespace), each with the QoS its
publishers offer (reliable / transient-local only when all of them are, as `ros2 bag record`
does), and writes them with `rosbags` into short segment bags (eva_core.data.bag_writer): a
SIGKILL loses at most the open segment, whose complete chunks eva-bag-to-episodes still reads.

A timer closes a segment that is due even when no message arrives, so a SIGKILL loses at most
`segment_seconds`. A storage fault (a removed directory, a full disk) is logged once and counted
(/diagnostics `storage_faults`, the closing line): the recording carries on in a fresh segment
(the episode directory is recreated), or, if that fails too, stops with one line and exit 2.

Episodes: `<out_dir>/<episode_prefix>_<UTC time>_<n>/`, one directory per episode.
- `auto_start: true` (default) starts one when the node starts; SIGINT/SIGTERM closes it cleanly.
- Services (std_srvs/Trigger) `~/start_episode` (closes the running one, starts the next) and
  `~/stop_episode`.
Parameters (config/record.yaml, section eva_record): out_dir, topics, segment_seconds,
segment_bytes, storage (mcap | sqlite3), auto_start, episode_prefix, discovery_period,
qos_overrides_file (ros2 bag's format; config/record/qos_overrides.yaml), storage_preset (ros2 bag only).
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from eva_core.data.bag_writer import SegmentedBagWriter, StorageFault, TopicInfo
from eva_ros.diagnostics import ERROR, DiagnosticsReporter
from eva_ros.node_config import DEFAULT_TOPICS, RecordConfig, read_qos_overrides  # noqa: F401 - re-exported
from eva_ros.params import NODE_KWARGS, load_node_config

POLICIES = {"reliability": {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT},
            "durability": {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL},
            "history": {"keep_last": HistoryPolicy.KEEP_LAST, "keep_all": HistoryPolicy.KEEP_ALL}}


def load_qos_overrides(name: str) -> dict[str, QoSProfile]:
    """topic -> QoSProfile from a ros2-bag QoS overrides YAML (ValueError naming file and key)."""
    return {topic: QoSProfile(**{k: POLICIES[k][v] if k in POLICIES else v for k, v in kw.items()})
            for topic, kw in read_qos_overrides(name).items()}


def _msg_class(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class BagRecorderNode(Node):
    failure_rc = 2   # a storage failure is the user's to fix (runtime._run_node's exit status)

    def __init__(self, node_name: str = "eva_record", **node_kwargs):
        super().__init__(node_name, **NODE_KWARGS, **node_kwargs)
        self.cfg = load_node_config(self, RecordConfig)
        self.out_dir = Path(self.cfg.out_dir).expanduser()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._wanted = {self.resolve_topic_name(t): t for t in self.cfg.topics}
        self._qos_overrides = load_qos_overrides(self.cfg.qos_overrides_file) if self.cfg.qos_overrides_file else {}
        self._subs: dict[str, object] = {}
        self._types: dict[str, TopicInfo] = {}
        self._lock = threading.Lock()
        self.writer: SegmentedBagWriter | None = None
        self.episodes: list[Path] = []
        self.dropped = 0
        self.storage_faults = 0
        self._failure = ""
        self.diag = DiagnosticsReporter(self, "eva_record", self._diag_values)
        self.create_service(Trigger, "~/start_episode", self._on_start)
        self.create_service(Trigger, "~/stop_episode", self._on_stop)
        self.create_timer(self.cfg.discovery_period, self._discover)
        self.create_timer(min(0.1, self.cfg.segment_seconds / 4), self._tick)
        if self.cfg.auto_start:
            self.start_episode()
        self._discover()

    # -- episodes ---------------------------------------------------------------------------
    def start_episode(self) -> Path:
        with self._lock:
            self._close_writer()
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            path = self.out_dir / f"{self.cfg.episode_prefix}_{stamp}_{len(self.episodes):03d}"
            self.writer = SegmentedBagWriter(path, self.cfg.segment_seconds, self.cfg.segment_bytes, self.cfg.storage)
            for info in self._types.values():
                self.writer.add_topic(info)
            self.episodes.append(path)
        self.get_logger().info(f"recording episode {path}")
        return path

    def stop_episode(self) -> Path | None:
        with self._lock:
            path = self.writer.dir if self.writer is not None else None
            self._close_writer()
        return path

    def _close_writer(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except StorageFault as e:
                self._storage_fault(e)
            faults = f", {writer.faults} storage faults ({writer.lost} messages in aborted segments)" \
                if writer.faults else ""
            self.get_logger().info(f"closed episode {writer.dir}: {writer.messages} messages, "
                                   f"{writer.segments} segments{faults}")

    def _storage_fault(self, e: StorageFault) -> None:
        """Log a fault once and count it; a fatal one ends the run (`failure()`)."""
        self.storage_faults += 1
        self.get_logger().error(f"storage fault: {e}")
        self.diag.set_level(ERROR, f"storage fault: {e}")
        if e.fatal:
            self.writer = None
            self._failure = f"storage failure: {e}"

    def failure(self) -> str:
        """Why the recording cannot go on ('' while it can); runtime._run_node stops the node."""
        return self._failure

    def _diag_values(self) -> dict:
        w = self.writer
        return {"recording": w is not None, "messages": w.messages if w else 0, "segments": w.segments if w else 0,
                "storage_faults": self.storage_faults, "dropped": self.dropped, "episodes": len(self.episodes)}

    def _tick(self) -> None:
        with self._lock:
            if self.writer is not None:
                try:
                    self.writer.tick(time.time_ns())
                except StorageFault as e:
                    self._storage_fault(e)

    def _on_start(self, _req, resp):
        try:
            resp.message, resp.success = str(self.start_episode()), True
        except OSError as e:
            resp.message, resp.success = f"cannot start an episode: {e}", False
        return resp

    def _on_stop(self, _req, resp):
        path = self.stop_episode()
        resp.success, resp.message = path is not None, str(path) if path else "no episode was recording"
        return resp

    # -- subscriptions ------------------------------------------------------------------------
    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic not in self._wanted or topic in self._subs or not types:
                continue
            pubs = self.get_publishers_info_by_topic(topic)
            if not pubs:
                continue
            try:
                cls = _msg_class(types[0])
            except (ImportError, AttributeError, ValueError) as e:
                self.get_logger().warning(f"{topic}: cannot record type {types[0]} ({e})")
                self._subs[topic] = None
                continue
            reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)
            latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in pubs)
            qos = self._qos_overrides.get(topic) or QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=1 if latched else 1000,   # a slow disk queues, not drops
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            reliable = qos.reliability == ReliabilityPolicy.RELIABLE
            latched = qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
            info = TopicInfo(topic, types[0], latched=latched)
            with self._lock:
                self._types[topic] = info
                if self.writer is not None:
                    self.writer.add_topic(info)
            self._subs[topic] = self.create_subscription(cls, topic, lambda data, t=topic: self._on_msg(t, data),
                                                         qos, raw=True)
            self.get_logger().info(f"recording {topic} [{types[0]}] ({'reliable' if reliable else 'best effort'}"
                                   f"{', latched' if latched else ''})")

    def _on_msg(self, topic: str, data: bytes) -> None:
        t_ns = time.time_ns()
        with self._lock:
            if self.writer is None:
                return
            try:
                self.writer.write(topic, t_ns, data)
            except StorageFault as e:   # a full disk must not kill the node: logged once per fault
                self.dropped += 1
                self._storage_fault(e)
            except (OSError, ValueError, KeyError) as e:
                self.dropped += 1
                if self.dropped == 1:
                    self.get_logger().error(f"{topic}: message not recorded: {e}")

    def close(self) -> None:
        self.stop_episode()


def main(argv=None) -> int:
    """eva-record; with no --params-file it reads config/base.yaml + config/record.yaml."""
    from eva_core.cli import cli_main
    from eva_ros.params import params_layers, ros_params_args
    from eva_ros.runtime import _run_node

    argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    if "--params-file" not in argv:
        extra = ros_params_args(params_layers("record"))
        argv = argv + (extra[1:] if "--ros-args" in argv else extra)
    return cli_main("eva-record", lambda rest: _run_node("eva-record", __doc__, BagRecorderNode, argv[:1] + rest, 2),
                    argv[1:])


if __name__ == "__main__":
    sys.exit(main())


def ros2_bag_command(params_files, out: str) -> list[str]:
    """`ros2 bag record -s mcap ...` for the `eva_record` section of `params_files` (what
    launch/record.launch.py runs): topics, storage preset, split size/duration, QoS overrides."""
    import math

    from eva_core.paths import config_path
    from eva_ros.params import merged_sections

    section = merged_sections([Path(p) for p in params_files]).get("eva_record", {}).get("ros__parameters", {})
    cfg = RecordConfig.from_dict(section, source=", ".join(map(str, params_files)), section="eva_record")
    cmd = ["ros2", "bag", "record", "-s", cfg.storage, "-o", str(out),
           "-d", str(max(1, math.ceil(cfg.segment_seconds)))]
    if cfg.storage_preset and cfg.storage == "mcap":
        cmd += ["--storage-preset-profile", cfg.storage_preset]
    if cfg.segment_bytes:
        cmd += ["-b", str(cfg.segment_bytes)]
    if cfg.qos_overrides_file:
        q = Path(cfg.qos_overrides_file)
        cmd += ["--qos-profile-overrides-path", str(q if q.exists() else config_path(cfg.qos_overrides_file))]
    return cmd + list(cfg.topics)
