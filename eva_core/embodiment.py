"""Embodiment description: the action layout and its limits, from a URDF plus a YAML file.

`load_embodiment(name)` reads `config/<name>.yaml` (DEFAULT_EMBODIMENT for the CLIs), which names the URDF,
lists the action dimensions in order and maps them to arms (the `arms:` table). Position and
velocity limits of arm joints come from the URDF; gripper dims are normalised [0, 1]. Every
limit must be finite and ordered, every speed and acceleration positive and finite. Adding a
robot needs a URDF and a YAML file, not code (tests/fixtures/single_piper/ is a 7-D example).

Library code takes an `Embodiment` argument; only the CLIs and node configs pick one by name.
`load_embodiment` caches by resolved path, so a process loads each embodiment once.
"""

from __future__ import annotations

import math
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from eva_core import yaml_io

from eva_core.paths import config_path, urdf_path

DEFAULT_EMBODIMENT = "cobot_magic"  # the one robot name in library code: the default config/<name>.yaml
LIMIT_TOL = 1e-9  # float slack of the position-limit check


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
class Arm:
    """One arm of the `arms:` table: which action dims it drives and on which bus."""

    name: str
    dims: tuple[int, ...]           # its action dims, contiguous and in order
    joint_dims: tuple[int, ...]     # the revolute joints among them
    gripper_dim: int | None         # the gripper dim, if the arm has one
    gripper_stroke_m: float         # full gripper stroke for action 1.0 (0 without a gripper)
    can: str                        # CAN channel (arm backends / the Piper emulator)

    @property
    def slice(self) -> slice:
        return slice(self.dims[0], self.dims[-1] + 1)


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
    arms: tuple[Arm, ...] = ()
    cameras: dict = field(default_factory=dict, repr=False)
    reward: dict = field(default_factory=dict, repr=False)  # optional RewardConfig overrides (YAML `reward:`)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def action_dim(self) -> int:
        return self.dof

    @property
    def gripper_indices(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(self.is_gripper))

    gripper_dims = gripper_indices

    @property
    def arm_indices(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(~self.is_gripper))

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"{self.config_file}: embodiment {self.name!r} has no arm {name!r} "
                       f"(arms: {[a.name for a in self.arms]})")

    @cached_property
    def mirror_permutation(self) -> np.ndarray:
        """(D,) index array: action[perm] is the left/right mirror (the flip augmentation).

        Two arms with the same layout swap; one arm (or arms that differ) is the identity.
        """
        perm = np.arange(self.dof)
        if len(self.arms) == 2:
            a, b = self.arms
            same = len(a.dims) == len(b.dims) and (a.gripper_dim is None) == (b.gripper_dim is None) and (
                a.gripper_dim is None or a.gripper_dim - a.dims[0] == b.gripper_dim - b.dims[0])
            if same:
                perm[list(a.dims)], perm[list(b.dims)] = list(b.dims), list(a.dims)
        perm.setflags(write=False)
        return perm

    @cached_property
    def _joint_state_scale(self) -> np.ndarray:
        """Per-dim factor action -> /joint_states: 1 for joints, finger travel (stroke / 2) for grippers."""
        return np.where(self.is_gripper, self.gripper_stroke_max_m / 2.0, 1.0)

    def action_to_joint_positions(self, action) -> np.ndarray:
        """Action vector(s) -> /joint_states positions (rad; gripper = finger travel in m)."""
        return np.asarray(action, dtype=np.float64) * self._joint_state_scale

    def joint_positions_to_action(self, q) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) / self._joint_state_scale

    def within_limits(self, action, tol: float = LIMIT_TOL) -> np.ndarray:
        """Per-value bool: finite and inside [pos_lower, pos_upper] (+ tol)."""
        a = np.asarray(action, dtype=np.float64)
        return (a >= self.pos_lower - tol) & (a <= self.pos_upper + tol)  # NaN compares False

    def limit_violations(self, q, tol: float = LIMIT_TOL) -> list[str]:
        """Names of the dims of one action vector `q` that are non-finite or outside the limits.

        The one limit check: the arm backends' last guard and the tests use it.
        """
        a = np.asarray(q, dtype=np.float64).reshape(-1)
        if a.shape != (self.dof,):
            raise ValueError(f"embodiment {self.name!r}: expected {self.dof} values, got shape {np.shape(q)}")
        return [self.joint_names[i] for i in np.flatnonzero(~self.within_limits(a, tol))]


# ---- URDF ------------------------------------------------------------------------------------
def _finite_attr(lim, key: str, where: str) -> float:
    raw = lim.get(key)
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise EmbodimentError(f"{where} <limit {key}>: needs a number, got {raw!r}") from None
    if not math.isfinite(v):
        raise EmbodimentError(f"{where} <limit {key}>: must be finite, got {raw!r}")
    return v


def parse_urdf_joints(path: Path) -> dict[str, UrdfJoint]:
    """Joints of a URDF with their <limit> (finite, lower < upper, velocity > 0, effort >= 0)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise EmbodimentError(f"{path}: not valid XML: {e}") from e
    if root.tag != "robot":
        raise EmbodimentError(f"{path}: root element is <{root.tag}>, expected <robot>")
    joints = {}
    for j in root.iter("joint"):
        name, jtype = j.get("name"), j.get("type")
        where = f"{path}: joint {name!r}"
        lim = j.find("limit")
        if jtype in ("revolute", "prismatic"):
            if lim is None:
                raise EmbodimentError(f"{where} ({jtype}) has no <limit>")
            vals = {k: _finite_attr(lim, k, where) for k in ("lower", "upper", "velocity", "effort")}
            if not vals["lower"] < vals["upper"]:
                raise EmbodimentError(f"{where} <limit>: lower {vals['lower']} must be < upper {vals['upper']}")
            if not vals["velocity"] > 0:
                raise EmbodimentError(f"{where} <limit velocity>: must be > 0, got {vals['velocity']}")
            if vals["effort"] < 0:
                raise EmbodimentError(f"{where} <limit effort>: must be >= 0, got {vals['effort']}")
        else:
            vals = dict(lower=-np.inf, upper=np.inf, velocity=np.inf, effort=np.inf)
        joints[name] = UrdfJoint(name=name, type=jtype, **vals)
    return joints


# ---- YAML ------------------------------------------------------------------------------------
def _require(d, key: str, where: str):
    if not isinstance(d, dict):
        raise EmbodimentError(f"{where}: must be a mapping, got {type(d).__name__}")
    if key not in d:
        raise EmbodimentError(f"{where}: missing key {key!r}")
    return d[key]


def _number(d, key: str, where: str, *, gt: float | None = 0.0, ge: float | None = None,
            le: float | None = None) -> float:
    """A finite number d[key] with bounds; the error names the file and key."""
    v = _require(d, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise EmbodimentError(f"{where}.{key}: needs a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise EmbodimentError(f"{where}.{key}: must be finite, got {v}")
    if (gt is not None and not v > gt) or (ge is not None and not v >= ge) or (le is not None and not v <= le):
        bounds = " and ".join(b for b in (gt is not None and f"> {gt:g}", ge is not None and f">= {ge:g}",
                                          le is not None and f"<= {le:g}") if b)
        raise EmbodimentError(f"{where}.{key}: must be {bounds}, got {v:g}")
    return v


def _parse_arms(cfg: dict, where: str, names: list[str], grip: list[bool], stroke: list[float]) -> tuple[Arm, ...]:
    """The `arms:` table: every action dim on exactly one arm, contiguous, at most one gripper each."""
    table = _require(cfg, "arms", where)
    if not isinstance(table, dict) or not table:
        raise EmbodimentError(f"{where}.arms: must be a non-empty mapping of arm name -> {{can, dims}}")
    owner: dict[int, str] = {}
    arms = []
    for arm_name, spec in table.items():
        awhere = f"{where}.arms.{arm_name}"
        can = _require(spec, "can", awhere)
        dims = _require(spec, "dims", awhere)
        if not isinstance(can, str) or not can:
            raise EmbodimentError(f"{awhere}.can: needs a CAN channel name, got {can!r}")
        if (not isinstance(dims, list) or not dims
                or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims)):
            raise EmbodimentError(f"{awhere}.dims: needs a non-empty list of action indices, got {dims!r}")
        if any(not 0 <= d < len(names) for d in dims):
            raise EmbodimentError(f"{awhere}.dims: indices must be in [0, {len(names) - 1}], got {dims}")
        if dims != list(range(dims[0], dims[0] + len(dims))):
            raise EmbodimentError(f"{awhere}.dims: must be contiguous and increasing, got {dims}")
        for d in dims:
            if d in owner:
                raise EmbodimentError(f"{awhere}.dims: dim {d} ({names[d]}) is already on arm {owner[d]!r}")
            owner[d] = str(arm_name)
        grippers = [d for d in dims if grip[d]]
        if len(grippers) > 1:
            raise EmbodimentError(f"{awhere}.dims: more than one gripper dim {grippers}")
        g = grippers[0] if grippers else None
        arms.append(Arm(name=str(arm_name), dims=tuple(dims), joint_dims=tuple(d for d in dims if not grip[d]),
                        gripper_dim=g, gripper_stroke_m=stroke[g] if g is not None else 0.0, can=can))
    missing = [names[d] for d in range(len(names)) if d not in owner]
    if missing:
        raise EmbodimentError(f"{where}.arms: action dims {missing} are on no arm")
    return tuple(arms)


def _build(cfg_file: Path) -> tuple[Embodiment, Path]:
    try:
        with open(cfg_file) as f:
            doc = yaml_io.load(f)
    except yaml.YAMLError as e:
        raise EmbodimentError(f"{cfg_file}: invalid YAML: {' '.join(str(e).split())}") from e
    cfg = _require(doc, "embodiment", str(cfg_file))
    where = f"{cfg_file}: embodiment"
    name = _require(cfg, "name", where)
    if not isinstance(name, str) or not name:
        raise EmbodimentError(f"{where}.name: needs a non-empty string, got {name!r}")
    urdf_name = str(_require(cfg, "urdf", where))
    beside = cfg_file.parent / urdf_name  # a custom YAML may sit next to its URDF
    urdf_file = beside if beside.exists() else urdf_path(urdf_name)
    joints = parse_urdf_joints(urdf_file)
    limits = _require(cfg, "limits", where)
    lw = f"{where}.limits"
    vfac = _number(limits, "velocity_safety_factor", lw, le=1.0)
    weights = _require(cfg, "reward_weights", where)
    ww = f"{where}.reward_weights"

    names, grip, lo, hi, vmax, amax, w, stroke = [], [], [], [], [], [], [], []
    action = _require(cfg, "action", where)
    if not isinstance(action, list) or not action:
        raise EmbodimentError(f"{where}.action: must be a non-empty list")
    for i, dim in enumerate(action):
        dwhere = f"{where}.action[{i}]"
        dname = _require(dim, "name", dwhere)
        kind = _require(dim, "type", dwhere)
        if dname in names:
            raise EmbodimentError(f"{dwhere}: duplicate action name {dname!r}")
        if kind == "joint":
            j = joints.get(dname)
            if j is None or j.type != "revolute":
                raise EmbodimentError(f"{dwhere}: {dname!r} is not a revolute joint in {urdf_file}")
            lo.append(j.lower), hi.append(j.upper), vmax.append(j.velocity * vfac)
            amax.append(_number(limits, "joint_acceleration_max", lw))
            w.append(_number(weights, "joint", ww, gt=None, ge=0.0))
            grip.append(False), stroke.append(0.0)
        elif kind == "gripper":
            jname = _require(dim, "urdf_joint", dwhere)
            j = joints.get(jname)
            if j is None or j.type != "prismatic":
                raise EmbodimentError(f"{dwhere}: urdf_joint {jname!r} is not a prismatic joint in {urdf_file}")
            s = _number(dim, "stroke_max_m", dwhere)
            if not s / 2.0 <= j.upper + 1e-12:
                raise EmbodimentError(
                    f"{dwhere}.stroke_max_m: {s} / 2 exceeds the URDF finger limit {j.upper} of {jname!r}")
            lo.append(0.0), hi.append(1.0)
            vmax.append(_number(limits, "gripper_velocity_max", lw))
            amax.append(_number(limits, "gripper_acceleration_max", lw))
            w.append(_number(weights, "gripper", ww, gt=None, ge=0.0))
            grip.append(True), stroke.append(s)
        else:
            raise EmbodimentError(f"{dwhere}: type must be 'joint' or 'gripper', got {kind!r}")
        names.append(dname)
    if not sum(w) > 0:
        raise EmbodimentError(f"{ww}: weights must not all be 0")

    reward = cfg.get("reward") or {}
    if not isinstance(reward, dict):
        raise EmbodimentError(f"{where}.reward: must be a mapping")
    cameras = cfg.get("cameras") or {}
    if not isinstance(cameras, dict):
        raise EmbodimentError(f"{where}.cameras: must be a mapping")

    def frozen(x, dtype=np.float64):
        a = np.asarray(x, dtype=dtype)
        a.setflags(write=False)
        return a

    emb = Embodiment(
        name=name, joint_names=tuple(names),
        is_gripper=frozen(grip, bool), pos_lower=frozen(lo), pos_upper=frozen(hi),
        vel_max=frozen(vmax), acc_max=frozen(amax), reward_weights=frozen(w), gripper_stroke_max_m=frozen(stroke),
        urdf_file=Path(urdf_file), config_file=Path(cfg_file), urdf_joints=joints,
        arms=_parse_arms(cfg, where, names, grip, stroke), cameras=dict(cameras), reward=dict(reward),
    )
    # belt and braces: the checks above already guarantee these
    if not (np.all(np.isfinite(emb.pos_lower)) and np.all(np.isfinite(emb.pos_upper))
            and np.all(emb.pos_lower < emb.pos_upper) and np.all(np.isfinite(emb.vel_max))
            and np.all(emb.vel_max > 0) and np.all(np.isfinite(emb.acc_max)) and np.all(emb.acc_max > 0)):
        raise EmbodimentError(f"{cfg_file}: limits must be finite with lower < upper and positive vel/acc maxima")
    return emb, Path(urdf_file)


def _stamp(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_mtime_ns, st.st_size


_CACHE: dict[Path, tuple[Embodiment, Path, tuple, tuple]] = {}
_CACHE_LOCK = threading.Lock()


def load_embodiment(name_or_path: str | Path = DEFAULT_EMBODIMENT) -> Embodiment:
    """The Embodiment of `config/<name>.yaml` (or a YAML path) and the URDF it names.

    Loaded once per process: later calls with the same resolved file return the same object
    (re-read only if the YAML or URDF changed on disk).
    """
    cfg_file = config_path(str(name_or_path)).resolve()
    with _CACHE_LOCK:
        hit = _CACHE.get(cfg_file)
        if hit is not None:
            emb, urdf_file, ystamp, ustamp = hit
            try:
                if _stamp(cfg_file) == ystamp and _stamp(urdf_file) == ustamp:
                    return emb
            except OSError:
                pass
        ystamp = _stamp(cfg_file)
        emb, urdf_file = _build(cfg_file)
        _CACHE[cfg_file] = (emb, urdf_file, ystamp, _stamp(urdf_file))
        return emb
