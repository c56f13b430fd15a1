"""Embodiment description: the action layout and its limits, from a URDF plus a YAML file.

`load_embodiment("cobot_magic")` reads `config/cobot_magic.yaml`, which names the URDF and lists
the action dimensions in order. Position and velocity limits of arm joints come from the URDF;
gripper dims are normalised [0, 1]. Adding a robot needs a URDF and a YAML file, not code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from eva_core.paths import config_path, urdf_path


class EmbodimentError(ValueError):
    """A URDF or embodiment YAML that does not describe a usable robot."""


@dataclass(frozen=True)
class UrdfJoint:
    name: str
    type: str
    lower: float
    upper: float
    velocity: float
    effort: float


@dataclass(frozen=True)
class Embodiment:
    name: str
    joint_names: tuple[str, ...]
    is_gripper: np.ndarray  # (D,) bool
    pos_lower: np.ndarray  # (D,) action-space limits (rad, or normalised for grippers)
    pos_upper: np.ndarray
    vel_max: np.ndarray  # (D,) per second, action units
    acc_max: np.ndarray  # (D,) per second^2
    reward_weights: np.ndarray  # (D,) raw weights (the reward normalises them by their mean)
    gripper_stroke_max_m: np.ndarray  # (D,) stroke per unit action for grippers, 0 for joints
    urdf_file: Path
    config_file: Path
    urdf_joints: dict[str, UrdfJoint] = field(repr=False)
    arms: dict = field(default_factory=dict, repr=False)
    cameras: dict = field(default_factory=dict, repr=False)
    reward: dict = field(default_factory=dict, repr=False)  # optional RewardConfig overrides (YAML `reward:`)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def gripper_indices(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(self.is_gripper))

    @property
    def arm_indices(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(~self.is_gripper))

    @cached_property
    def _joint_state_scale(self) -> np.ndarray:
        """Per-dim factor action -> /joint_states: 1 for joints, finger travel (stroke / 2) for grippers."""
        return np.where(self.is_gripper, self.gripper_stroke_max_m / 2.0, 1.0)

    def action_to_joint_positions(self, action) -> np.ndarray:
        """Action vector(s) -> /joint_states positions (rad; gripper = finger travel in m)."""
        return np.asarray(action, dtype=np.float64) * self._joint_state_scale

    def joint_positions_to_action(self, q) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) / self._joint_state_scale

    def within_limits(self, action, tol: float = 1e-9) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        return (a >= self.pos_lower - tol) & (a <= self.pos_upper + tol)


def parse_urdf_joints(path: Path) -> dict[str, UrdfJoint]:
    """Joints of a URDF with their <limit>; errors name the file and joint."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise EmbodimentError(f"{path}: not valid XML: {e}") from e
    if root.tag != "robot":
        raise EmbodimentError(f"{path}: root element is <{root.tag}>, expected <robot>")
    joints = {}
    for j in root.iter("joint"):
        name, jtype = j.get("name"), j.get("type")
        lim = j.find("limit")
        if jtype in ("revolute", "prismatic"):
            if lim is None:
                raise EmbodimentError(f"{path}: joint {name!r} ({jtype}) has no <limit>")
            try:
                vals = {k: float(lim.get(k)) for k in ("lower", "upper", "velocity", "effort")}
            except (TypeError, ValueError) as e:
                raise EmbodimentError(
                    f"{path}: joint {name!r} <limit> needs numeric lower/upper/velocity/effort"
                ) from e
        else:
            vals = dict(lower=-np.inf, upper=np.inf, velocity=np.inf, effort=np.inf)
        joints[name] = UrdfJoint(name=name, type=jtype, **vals)
    return joints


def _require(d: dict, key: str, where: str):
    if not isinstance(d, dict) or key not in d:
        raise EmbodimentError(f"{where}: missing key {key!r}")
    return d[key]


def load_embodiment(name_or_path: str | Path = "cobot_magic") -> Embodiment:
    """Build an Embodiment from `config/<name>.yaml` (or a YAML path) and the URDF it names."""
    cfg_file = config_path(str(name_or_path))
    with open(cfg_file) as f:
        try:
            doc = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise EmbodimentError(f"{cfg_file}: invalid YAML: {e}") from e
    cfg = _require(doc, "embodiment", str(cfg_file))
    where = f"{cfg_file}: embodiment"
    urdf_name = str(_require(cfg, "urdf", where))
    beside = cfg_file.parent / urdf_name  # a custom YAML may sit next to its URDF
    urdf_file = beside if beside.exists() else urdf_path(urdf_name)
    joints = parse_urdf_joints(urdf_file)
    limits = _require(cfg, "limits", where)
    vfac = float(_require(limits, "velocity_safety_factor", f"{where}.limits"))
    weights = _require(cfg, "reward_weights", where)

    names, grip, lo, hi, vmax, amax, w, stroke = [], [], [], [], [], [], [], []
    action = _require(cfg, "action", where)
    if not isinstance(action, list) or not action:
        raise EmbodimentError(f"{where}.action: must be a non-empty list")
    for i, dim in enumerate(action):
        dwhere = f"{where}.action[{i}]"
        name = _require(dim, "name", dwhere)
        kind = _require(dim, "type", dwhere)
        if name in names:
            raise EmbodimentError(f"{dwhere}: duplicate action name {name!r}")
        if kind == "joint":
            j = joints.get(name)
            if j is None or j.type != "revolute":
                raise EmbodimentError(f"{dwhere}: {name!r} is not a revolute joint in {urdf_file}")
            lo.append(j.lower), hi.append(j.upper), vmax.append(j.velocity * vfac)
            amax.append(float(_require(limits, "joint_acceleration_max", f"{where}.limits")))
            w.append(float(_require(weights, "joint", f"{where}.reward_weights")))
            grip.append(False), stroke.append(0.0)
        elif kind == "gripper":
            jname = _require(dim, "urdf_joint", dwhere)
            j = joints.get(jname)
            if j is None or j.type != "prismatic":
                raise EmbodimentError(f"{dwhere}: urdf_joint {jname!r} is not a prismatic joint in {urdf_file}")
            s = float(_require(dim, "stroke_max_m", dwhere))
            if not (0 < s / 2.0 <= j.upper + 1e-12):
                raise EmbodimentError(
                    f"{dwhere}: stroke_max_m/2 = {s / 2} exceeds the URDF finger limit {j.upper} of {jname!r}"
                )
            lo.append(0.0), hi.append(1.0)
            vmax.append(float(_require(limits, "gripper_velocity_max", f"{where}.limits")))
            amax.append(float(_require(limits, "gripper_acceleration_max", f"{where}.limits")))
            w.append(float(_require(weights, "gripper", f"{where}.reward_weights")))
            grip.append(True), stroke.append(s)
        else:
            raise EmbodimentError(f"{dwhere}: type must be 'joint' or 'gripper', got {kind!r}")
        names.append(name)

    reward = cfg.get("reward") or {}
    if not isinstance(reward, dict):
        raise EmbodimentError(f"{where}.reward: must be a mapping")

    arr = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    emb = Embodiment(
        name=str(_require(cfg, "name", where)), joint_names=tuple(names),
        is_gripper=np.asarray(grip, dtype=bool), pos_lower=arr(lo), pos_upper=arr(hi),
        vel_max=arr(vmax), acc_max=arr(amax), reward_weights=arr(w), gripper_stroke_max_m=arr(stroke),
        urdf_file=Path(urdf_file), config_file=Path(cfg_file), urdf_joints=joints,
        arms=dict(cfg.get("arms") or {}), cameras=dict(cfg.get("cameras") or {}), reward=dict(reward),
    )
    for a in (emb.pos_lower, emb.pos_upper, emb.vel_max, emb.acc_max, emb.reward_weights):
        a.setflags(write=False)
    if np.any(emb.pos_lower >= emb.pos_upper) or np.any(emb.vel_max <= 0) or np.any(emb.acc_max <= 0):
        raise EmbodimentError(f"{cfg_file}: limits must satisfy lower < upper and positive vel/acc maxima")
    return emb
