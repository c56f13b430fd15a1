"""One typed config class per section of the ROS params files (`config/*.yaml`).

Each node reads its section with `cfg = load_node_config(self, <Class>)` (eva_ros/params.py);
eva-bringup checks every section of its files with the same classes before rclpy starts. The
parameter tables of docs/ros_interface.md are generated from these classes
(tools/gen_param_docs.py). Backend options stay a dict here (`source_options`, `arm`): the
backend named by `source` / `arm_backend` validates them with its own `Options` class.
Which node reads which class: eva_ros/registry.py (NODE_KINDS). No rclpy here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eva_core.config import ConfigError, Section, param
from eva_core.embodiment import DEFAULT_EMBODIMENT
from eva_core.idm import FUSIONS, PRECISIONS, VARIANTS
from eva_core.planner import PlannerConfig
from eva_core.safety import SafetyConfig
from eva_core.trajectory import FollowerConfig
from eva_core.world_model.config import WorldModelConfig
from eva_ros.registry import NODE_KINDS, bringup_kinds
DISCOVERY_RANGES = ("", "SUBNET", "LOCALHOST", "OFF", "SYSTEM_DEFAULT")
EXECUTORS = ("multi_threaded", "single_per_node", "events")   # eva_ros.runtime.start_spinners


def _check_backend(cfg: Section, kind_key: str, options_key: str, registry: str, what: str) -> None:
    """The backend named by `cfg.<kind_key>` is registered and `cfg.<options_key>` is valid for its
    `Options` (skipped when its module does not import here, e.g. an SDK that is not installed:
    the node then fails at start-up naming the backend)."""
    import importlib

    from eva_ros import backends

    kind = getattr(cfg, kind_key)
    table = getattr(backends, registry)
    target = table.get(kind, kind if ":" in kind else None)
    if target is None:
        cfg.error(kind_key, f"unknown {what} {kind!r}; known: {', '.join(sorted(table))} (or 'package.module:Class')")
    module, _, name = target.partition(":")
    try:
        options = getattr(importlib.import_module(module), name).Options
    except (ImportError, AttributeError):
        return
    section = getattr(cfg, "_section", "")
    options.from_dict(getattr(cfg, options_key), source=getattr(cfg, "_source", "") or "<dict>",
                      section=f"{section}.{options_key}" if section else options_key)


@dataclass
class NodeSection(Section):
    """Keys every node accepts (they usually come from the params file's `/**` section)."""

    embodiment: str = param(DEFAULT_EMBODIMENT, "embodiment config name under config/ (or a YAML path)")


@dataclass
class CameraConfig(NodeSection):
    camera_name: str = param("cam_high", "camera of the embodiment's camera table (topic, frame)")
    topic: str = param("", "image topic; empty: the embodiment's camera table, else <camera_name>/color/image_raw")
    frame_id: str = param("", "header.frame_id; empty: the camera's link in the embodiment")
    source: str = param("synthetic", "camera source: playback | synthetic | realsense | sim (or package.module:Class)")
    fps: float = param(30.0, "capture and publish rate", unit="Hz", gt=0, le=1000)
    connect_timeout: float = param(30.0, "a source that does not connect in time fails start-up", unit="s", gt=0,
                                   le=300)
    pose_from_joint_states: bool = param(True, "sources that render the twin follow /joint_states")
    source_options: dict = param({}, "options of the source (its Options class), e.g. path, loop")

    def validate(self) -> None:
        _check_backend(self, "source", "source_options", "CAMERA_SOURCES", "camera source")


@dataclass
class PlannerNodeConfig(NodeSection, PlannerConfig):
    """The planner node: the replanning policy (eva_core.planner.PlannerConfig) + the node's keys."""

    camera_topic: str = param("cam_high/color/image_raw", "image topic the planner observes")
    frame_width: int = param(0, "the camera's frame width; a frame of another size is dropped (bad_observation). "
                                "0 (with frame_height 0): the first accepted frame's size", unit="px", ge=0, le=8192)
    frame_height: int = param(0, "the camera's frame height (0: the first accepted frame's)", unit="px", ge=0, le=8192)
    max_frame_bytes: int = param(32 << 20, "a larger frame is dropped before any copy (bad_observation)",
                                 unit="B", ge=1, le=1 << 30)
    instruction: str = param("", "instruction used until /eva/instruction says otherwise")
    check_period: float = param(0.01, "period of the planning worker's decision check", unit="s", gt=0, le=1)
    torch_threads: int = param(1, "torch.set_num_threads; 0 leaves torch's default", ge=0)
    seed: int = param(-1, "sampling seed (+ chunk id); -1: random", ge=-1)
    warmup: bool = param(True, "one generation at start-up, so the first chunk is not slow")
    history_frames: int = param(0, "camera frames before the observation given as history", ge=0)
    model_process: bool = param(False, "generate in a child process (its own interpreter and GIL: "
                                "eva_core.model_process), not in the node's")
    world_model: WorldModelConfig = param(WorldModelConfig.tiny_default(),
                                          "the world model (kind tiny starts from WorldModelConfig.tiny_default)")

    def validate(self) -> None:
        if (self.frame_width == 0) != (self.frame_height == 0):
            self.error("frame_width", "frame_width and frame_height are both 0 (the first frame's size) or both set")


@dataclass
class IDMOptions(Section):
    variant: str = param("tiny", "a fresh IDM of this variant (when no checkpoint)", choices=VARIANTS)
    fusion: str | None = param(None, "early | late; empty: the variant's default", choices=FUSIONS)
    checkpoint: str = param("", "our safetensors IDM directory or an EVA .pt; empty: a fresh `variant`")
    precision: str = param("float32", "auto: bfloat16 where the device has it natively", choices=PRECISIONS)
    batch_size: int = param(16, "frames per IDM forward pass", ge=1)


@dataclass
class IDMActionConfig(NodeSection):
    control_rate_hz: float = param(200.0, "trajectory point spacing; must match the controller's", unit="Hz",
                                   gt=0, le=10000)
    reward_threshold: float = param(0.0, "executability reward below which a chunk is rejected (if enabled)")
    reject_below_threshold: bool = param(False, "reject (and replan) chunks below reward_threshold")
    torch_threads: int = param(1, "torch.set_num_threads; 0 leaves torch's default", ge=0)
    state_history_s: float = param(5.0, "joint-state history kept to find the state at observation time",
                                   unit="s", gt=0, le=60)
    max_state_age: float = param(0.25, "max gap between a chunk's observation and the nearest /joint_states",
                                 unit="s", gt=0, le=5)
    warmup: bool = param(True, "one IDM pass at start-up, so the first chunk is not slow")
    action_limit_tolerance: float = param(1.0, "IDM actions beyond a joint's position limits by more than this "
                                          "fraction of its range reject the chunk (actions_out_of_limits); closer "
                                          "ones the safety filter clips", ge=0, le=10)
    idm: IDMOptions = param(IDMOptions, "the inverse dynamics model")
    safety: SafetyConfig = param(SafetyConfig, "safety filter of each chunk")


@dataclass
class ControllerConfig(NodeSection):
    control_rate_hz: float = param(200.0, "control loop rate", unit="Hz", gt=0, le=10000)
    arm_backend: str = param("loopback", "arm backend: loopback | piper | sim (or package.module:Class)")
    arm: dict = param({}, "options of the arm backend (its Options class)")
    # upper bounds: a huge value would switch a watchdog off without a word (1e300 or a typo like 100)
    feedback_timeout: float = param(0.1, "backend feedback older than this: stop and report (at most 2 s: the "
                                    "feedback watchdog stays on)", unit="s", gt=0, le=2)
    trajectory_timeout: float = param(0.5, "no trajectory for this long: a watchdog event (holding; at most 10 s)",
                                      unit="s", gt=0, le=10)
    joint_states_every: int = param(1, "publish /joint_states every Nth control tick (1: at control_rate_hz); "
                                    "fewer callbacks in every subscriber (the IDM node, a twin camera)",
                                    ge=1, le=100)
    auto_enable: bool = param(True, "enable at start-up; false: wait for /eva/enable")
    max_stamp_offset: float = param(10.0, "a trajectory starting further than this from now is rejected (at most "
                                    "60 s)", unit="s", gt=0, le=60)
    max_trajectory_duration: float = param(60.0, "a longer trajectory is rejected (at most 600 s)", unit="s", gt=0,
                                           le=600)
    heartbeat_timeout: float = param(2.0, "no executor heartbeat for this long: fault and e-stop (at most 10 s)",
                                     unit="s", gt=0, le=10)
    limit_tolerance: float = param(0.005, "a trajectory with a point beyond the position limits by more than this "
                                   "is rejected whole (rejected_trajectory, reason out_of_limits); within it, "
                                   "clipped. Grippers: normalised units", unit="rad", ge=0, le=0.1)
    follower: FollowerConfig = param(FollowerConfig, "trajectory follower (tracking filter, blending)")
    safety: SafetyConfig = param(SafetyConfig, "the final safety filter before the arm")

    def validate(self) -> None:
        _check_backend(self, "arm_backend", "arm", "ARM_BACKENDS", "arm backend")


@dataclass
class BringupConfig(Section):
    nodes: list[str] = param(bringup_kinds(), 'nodes to compose: "kind" or "kind:node_name"')
    fastdds_transport: str = param("LARGE_DATA", "FASTDDS_BUILTIN_TRANSPORTS (a value already in the environment wins)")
    fastdds_shm_profile: bool = param(True, "add config/fastdds_shm.xml (16 MB shared-memory segment)")
    discovery_range: str = param("", "ROS_AUTOMATIC_DISCOVERY_RANGE; empty: leave as is", choices=DISCOVERY_RANGES)
    num_threads: int = param(6, "MultiThreadedExecutor threads", ge=1)
    executor: str = param("multi_threaded", "multi_threaded: one MultiThreadedExecutor for all nodes; "
                          "single_per_node: a SingleThreadedExecutor per node, each on its own thread; events: "
                          "rclpy.experimental.EventsExecutor (one, in C++)", choices=EXECUTORS)

    def validate(self) -> None:
        if not self.nodes:
            self.error("nodes", "needs at least one node")
        names = []
        for spec in self.nodes:
            kind, _, name = spec.partition(":")
            if kind not in bringup_kinds():
                self.error("nodes", f"unknown node kind {kind!r}; known: {', '.join(bringup_kinds())}")
            names.append(name or kind)
        if len(set(names)) != len(names):
            self.error("nodes", f"node names must be unique, got {names}")


@dataclass
class LeaderArmConfig(NodeSection):
    rate_hz: float = param(200.0, "publish rate of leader/joint_states", unit="Hz", gt=0, le=1000)
    arm: dict = param({}, "PiperArm.Options of the leader buses (can_interface, can_left, can_right, "
                          "feedback_timeout)")

    def validate(self) -> None:
        from eva_ros.backends.piper import PiperArm

        try:
            PiperArm.Options.from_dict(self.arm, section="arm")
        except ConfigError as exc:
            self.error(f"arm.{exc.key}", exc.problem)


DEFAULT_TOPICS = ["joint_states", "leader/joint_states", "cam_high/color/image_raw",
                  "cam_left_wrist/color/image_raw", "cam_right_wrist/color/image_raw", "eva/instruction",
                  "eva/controller/command"]
QOS_POLICIES = {"reliability": ("reliable", "best_effort"), "durability": ("volatile", "transient_local"),
                "history": ("keep_last", "keep_all")}


def read_qos_overrides(name: str) -> dict[str, dict]:
    """topic -> {"depth": n, policy: value name} from a ros2-bag QoS overrides YAML (a path, or one
    under config/); ValueError naming file and key. eva_ros.bag_recorder makes QoSProfiles of them."""
    from eva_core import yaml_io
    from eva_core.paths import config_path

    path = Path(name) if Path(name).exists() else config_path(name)
    doc = yaml_io.load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must map topic -> QoS profile")
    out = {}
    for topic, prof in doc.items():
        if not isinstance(prof, dict):
            raise ValueError(f"{path}: {topic}: must be a mapping")
        kw = {"depth": 10}
        for key, value in prof.items():
            if key == "depth":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"{path}: {topic}: depth: must be an int >= 1, got {value!r}")
                kw["depth"] = value
            elif key in QOS_POLICIES and value in QOS_POLICIES[key]:
                kw[key] = value
            else:
                raise ValueError(f"{path}: {topic}: {key}: unsupported ({key}: {value!r})")
        out[str(topic)] = kw
    return out


@dataclass
class RecordConfig(Section):
    embodiment: str = param(DEFAULT_EMBODIMENT, "ignored here (every params file has it)")
    out_dir: str = param("bags", "directory of the episode directories (created)")
    topics: list[str] = param(DEFAULT_TOPICS, "topics to record (relative names follow the namespace)")
    segment_seconds: float = param(2.0, "close a segment after this long; a kill loses at most one", unit="s", gt=0,
                                    le=3600)
    segment_bytes: int = param(0, "also close a segment after this many bytes (0: no limit)", ge=0)
    storage: str = param("mcap", "rosbag2 storage plugin", choices=("mcap", "sqlite3"))
    auto_start: bool = param(True, "start an episode at start-up")
    episode_prefix: str = param("episode", "episode directory name prefix")
    discovery_period: float = param(0.5, "look for new publishers this often", unit="s", gt=0, le=60)
    storage_preset: str = param("zstd_fast", "ros2 bag --storage-preset-profile (record.launch.py only)",
                                choices=("", "fastwrite", "zstd_fast", "zstd_small"))
    qos_overrides_file: str = param("", "QoS per topic, ros2 bag's --qos-profile-overrides-path format "
                                        "(a path, or one under config/); '' for none")

    def validate(self) -> None:
        if self.qos_overrides_file:
            try:
                read_qos_overrides(self.qos_overrides_file)
            except (OSError, ValueError) as e:
                self.error("qos_overrides_file", str(e))


# params-file section (= default node name) -> config class: every registered node, and eva-bringup's own
SECTIONS: dict[str, type[Section]] = {**{kind: k.config_class() for kind, k in NODE_KINDS.items()},
                                      "eva_bringup": BringupConfig}
