"""Twin tasks: an instruction, objects placed from a seed, a success check, and a scripted plan.

Each task class has a typed `Params` section (eva_core.config): its placement ranges and success
thresholds. The task names are those of eva_core/sim/registry.py (`make_task` builds a task by
name, its parameters checked). Every pose is placed relative to the embodiment's arms (their bases from the URDF), so the same
tasks run on any embodiment with the arms they need. A scripted plan is a list of `Waypoint`s
(action targets and durations) built with IK; `variant="fail"` builds a plan that must fail
(for the success checks' negative tests).

    pick_block    "pick up the red block"                    one arm, the nearest one
    push_block    "push the blue block onto the green target" one arm
    lift_bar      "lift the bar with both arms"               two arms, one at each end

    pick_block_narrow, push_block_narrow: the same tasks in front of the first arm, placed within
    +-5 mm and a few degrees: what a world model that cannot resolve the object's place (the toy
    EVA of docs/toy_eva.md, 48x64 frames) can still plan, as one motion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eva_core.config import Section, param
from eva_core.embodiment import Embodiment
from eva_core.sim.ik import PITCH, ArmIK, IKError, grasp_rotation
from eva_core.sim.layout import ArmLayout
from eva_core.sim.scene import SceneConfig, SceneObject
from eva_core.sim.twin import Twin

OPEN, CLOSED = 1.0, 0.0
LIFT = 0.05        # m above its resting height counts as lifted
PITCHES = (PITCH, PITCH + 0.2, PITCH + 0.4, PITCH - 0.2, -PITCH, 1.2)  # approach leans to try, rad (< 0: towards the base)
STRAIGHT_STEPS = 4   # IK points on a vertical approach or lift
GRASP_ABOVE = 0.008  # TCP this far above an object's centre when grasping (fingertips clear the table)


@dataclass(frozen=True)
class Waypoint:
    action: np.ndarray   # (dof,) target, action units
    duration: float      # s to reach it from the previous waypoint (min-jerk)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _check_pair(section: Section, key: str, positive: bool = False) -> None:
    """`section.<key>` is a (low, high) pair with low <= high (and low > 0 if `positive`)."""
    lo_hi = getattr(section, key)
    if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
        section.error(key, f"need [low, high] with low <= high, got {list(lo_hi)}")
    if positive and lo_hi[0] <= 0:
        section.error(key, f"need values > 0, got {list(lo_hi)}")


class Task:
    instruction = ""
    min_arms = 1
    objects: tuple[SceneObject, ...] = ()
    defaults: dict = {}   # a variant's parameters (a subclass that differs only in them)

    @dataclass
    class Params(Section):
        """No parameters."""

    def __init__(self, emb: Embodiment, params: "Task.Params | Mapping | None" = None, *, name: str = "",
                 source: str = "<dict>", section: str = "task_params"):
        self.emb = emb
        self.name = name or type(self).__name__
        self.params = params if isinstance(params, self.Params) else self.parse_params(params, source, section)
        self.plan_info: dict = {}

    @classmethod
    def parse_params(cls, params: Mapping | None = None, source: str = "<dict>", section: str = "task_params"):
        """The task's `Params` from a mapping over its variant's defaults (ConfigError on a typo)."""
        return cls.Params.from_dict({**cls.defaults, **(params or {})}, source=source, section=section)

    def make_twin(self, scene: SceneConfig | None = None) -> Twin:
        scene = scene or SceneConfig()
        scene.objects = tuple(self.objects)
        twin = Twin(self.emb, scene)
        if len(twin.arms) < self.min_arms:
            raise ValueError(f"task {self.name!r} needs {self.min_arms} arms; embodiment "
                             f"{self.emb.name!r} has {len(twin.arms)}")
        return twin

    # helpers ----------------------------------------------------------------------------------
    def table_top(self, twin: Twin) -> float:
        return twin.scene.table.top

    def rest_z(self, twin: Twin, obj: SceneObject) -> float:
        return self.table_top(twin) + obj.half_size[2]

    def front(self, twin: Twin, arm: ArmLayout, rng, forward=(0.29, 0.36), lateral=(-0.05, 0.05)) -> np.ndarray:
        """A point on the table in front of an arm (world xy), lateral offsets towards the middle."""
        bases = np.array([a.base for a in twin.arms])
        inward = np.sign(bases[:, 1].mean() - arm.base[1]) or 1.0
        return np.array([arm.base[0] + rng.uniform(*forward), arm.base[1] + inward * rng.uniform(*lateral)])

    def nearest_arm(self, twin: Twin, xy) -> ArmLayout:
        return min(twin.arms, key=lambda a: abs(a.base[1] - xy[1]) + abs(a.base[0] - xy[0]))

    def reset(self, twin: Twin, seed: int) -> None:
        """Robot home, objects placed from `seed`, a short settle."""
        twin.reset()
        self.place(twin, np.random.default_rng(seed))
        twin.step(int(0.2 / twin.timestep))

    def place(self, twin: Twin, rng) -> None:
        raise NotImplementedError

    def success(self, twin: Twin) -> bool:
        raise NotImplementedError

    def plan(self, twin: Twin, variant: str = "success") -> list[Waypoint]:
        raise NotImplementedError

    # shared plan pieces -----------------------------------------------------------------------
    def _grasp_lift(self, twin, ik, start, grasps, close=True, lift=0.12, approach=0.10):
        """Waypoints for arms grasping at `grasps` [(arm, pos, closing_xy)] at once, then lifting.
        Tries a few approach leans; the first one that IK reaches everywhere wins."""
        def pose(a, dz, grip, pitch):
            out = a.copy()
            for arm, pos, closing in grasps:
                rot = grasp_rotation(closing, np.subtract(pos[:2], arm.base[:2]), pitch)
                out = ik.solve(arm, pos + np.array([0, 0, dz]), rot, out)
                out[arm.gripper_dim] = grip
            return out

        err = None
        for pitch in PITCHES:
            for grasp_first in (False, True):   # grasp first: the hard pose, from the start posture
                try:
                    if grasp_first:
                        low = pose(start, 0.0, OPEN, pitch)
                        above = pose(low, approach, OPEN, pitch)
                    else:
                        above = pose(start, approach, OPEN, pitch)
                    # straight down and up: IK on points of the vertical line (a joint-space
                    # segment between two IK poses bows sideways and sweeps a finger into the object)
                    down = [above]
                    for dz in np.linspace(approach, 0.0, STRAIGHT_STEPS + 1)[1:]:
                        down.append(pose(down[-1], dz, OPEN, pitch))
                    shut = down[-1].copy()
                    grip = CLOSED if close else OPEN
                    for arm, _, _ in grasps:
                        shut[arm.gripper_dim] = grip
                    up = [shut]
                    for dz in np.linspace(0.0, lift, STRAIGHT_STEPS + 1)[1:]:
                        up.append(pose(up[-1], dz, grip, pitch))
                except IKError as e:
                    err = e
                    continue
                self.plan_info.update(pitch=pitch, grasp_first=grasp_first)
                step = 1.0 / STRAIGHT_STEPS
                return [Waypoint(above, 1.5), *[Waypoint(a, step) for a in down[1:]], Waypoint(shut, 0.6),
                        *[Waypoint(a, 1.2 * step) for a in up[1:]], Waypoint(up[-1], 0.5)]
        raise err


class PickBlock(Task):
    instruction = "pick up the red block"
    objects = (SceneObject("red_block", (0.02, 0.02, 0.02), (0.85, 0.15, 0.12, 1.0)),)

    @dataclass
    class Params(Section):
        first_arm: bool = param(False, "place the block in front of the first arm only (else of an arm drawn "
                                       "from the seed)")
        forward: tuple[float, float] = param((0.29, 0.36), "range of the block's distance in front of the arm's "
                                                           "base", unit="m")
        lateral: tuple[float, float] = param((-0.05, 0.05), "range of its offset across, towards the middle",
                                             unit="m")
        yaw: float = param(0.4, "its yaw is drawn from [-yaw, yaw]", unit="rad", ge=0)

        def validate(self):
            _check_pair(self, "forward")
            _check_pair(self, "lateral")

    def place(self, twin, rng):
        p = self.params
        arm = _placement_arm(twin, rng, p.first_arm)
        xy = self.front(twin, arm, rng, p.forward, p.lateral)
        twin.set_body_pose("red_block", [*xy, self.rest_z(twin, self.objects[0])],
                           _yaw_quat(rng.uniform(-p.yaw, p.yaw)))


    def success(self, twin):
        pos, _ = twin.body_pose("red_block")
        return bool(pos[2] > self.rest_z(twin, self.objects[0]) + LIFT and twin.contacts("red_block", "world") == 0)

    def plan(self, twin, variant="success"):
        ik = ArmIK(twin)
        pos, quat = twin.body_pose("red_block")
        arm = self.nearest_arm(twin, pos[:2])
        start = twin.action()
        grasp = pos + np.array([0, 0, GRASP_ABOVE])
        closing = _cube_closing(quat, np.subtract(pos[:2], arm.base[:2]))
        self.plan_info = {"arm": arm.name}
        return [Waypoint(start, 0.3), *self._grasp_lift(twin, ik, start, [(arm, grasp, closing)],
                                                         close=(variant == "success"))]


class PushBlock(Task):
    instruction = "push the blue block onto the green target"
    objects = (SceneObject("blue_block", (0.02, 0.02, 0.02), (0.15, 0.3, 0.85, 1.0), friction=0.3),
               SceneObject("green_target", (0.03, 0.03, 0.0008), (0.2, 0.75, 0.25, 1.0), free=False))

    @dataclass
    class Params(Section):
        first_arm: bool = param(False, "place the block in front of the first arm only (else of an arm drawn "
                                       "from the seed)")
        forward: tuple[float, float] = param((0.27, 0.31), "range of the block's distance in front of the arm's "
                                                           "base", unit="m")
        lateral: tuple[float, float] = param((-0.05, 0.05), "range of its offset across, towards the middle",
                                             unit="m")
        heading: float = param(0.35, "the push heading is drawn from [-heading, heading]", unit="rad", ge=0)
        distance: tuple[float, float] = param((0.08, 0.12), "range of the target's distance from the block",
                                              unit="m")

        def validate(self):
            _check_pair(self, "forward")
            _check_pair(self, "lateral")
            _check_pair(self, "distance", positive=True)

    def place(self, twin, rng):
        p = self.params
        arm = _placement_arm(twin, rng, p.first_arm)
        xy = self.front(twin, arm, rng, p.forward, p.lateral)
        heading = rng.uniform(-p.heading, p.heading)
        goal = xy + rng.uniform(*p.distance) * np.array([np.cos(heading), np.sin(heading)])
        top = self.table_top(twin)
        twin.set_body_pose("blue_block", [*xy, self.rest_z(twin, self.objects[0])], _yaw_quat(heading))
        twin.set_body_pose("green_target", [*goal, top + 0.0008])

    def success(self, twin):
        block, quat = twin.body_pose("blue_block")
        goal, _ = twin.body_pose("green_target")
        half = self.objects[1].half_size[0]   # "onto": the block's centre lies on the target square
        return bool(np.all(np.abs(block[:2] - goal[:2]) < half) and
                    block[2] < self.rest_z(twin, self.objects[0]) + 0.005)   # a cube may rest on any face

    def plan(self, twin, variant="success"):
        ik = ArmIK(twin)
        block, _ = twin.body_pose("blue_block")
        goal, _ = twin.body_pose("green_target")
        arm = self.nearest_arm(twin, block[:2])
        u = (goal[:2] - block[:2]) / np.linalg.norm(goal[:2] - block[:2])
        reach = _finger_reach(twin, arm)
        behind = self.objects[0].half_size[0] + reach / 2 + 0.01   # block half + finger half + gap
        z = self.table_top(twin) + 0.03
        dist = np.linalg.norm(goal[:2] - block[:2]) * (1.0 if variant == "success" else 0.4)
        start = twin.action()
        a = start.copy()
        a[arm.gripper_dim] = CLOSED
        err = None
        for pitch in PITCHES:
            rot = grasp_rotation([-u[1], u[0]], u, pitch)   # fingers side by side across the push
            lead = float(rot[:2, 2] @ u) * reach             # the leaning fingertips are ahead of the TCP
            p0 = np.array([*(block[:2] - (behind + lead) * u), z])
            p1 = np.array([*(block[:2] + (dist - behind - lead) * u), z])
            try:
                above = ik.solve(arm, p0 + [0, 0, 0.08], rot, a)
                low = ik.solve(arm, p0 + [0, 0, 0.04], rot, above)
                low = ik.solve(arm, p0, rot, low)
                mids = [low]
                for s in np.linspace(0, 1, 5)[1:]:   # a straight push: IK on points along the line
                    mids.append(ik.solve(arm, p0 + s * (p1 - p0), rot, mids[-1]))
                back = ik.solve(arm, p1 - np.array([*(0.03 * u), 0]) + [0, 0, 0.08], rot, mids[-1])
                break
            except IKError as e:
                err = e
        else:
            raise err
        self.plan_info = {"arm": arm.name}
        return [Waypoint(start, 0.3), Waypoint(a, 0.3), Waypoint(above, 1.5), Waypoint(low, 1.0),
                *[Waypoint(m, 0.8) for m in mids[1:]], Waypoint(mids[-1], 0.3), Waypoint(back, 1.0)]


class LiftBar(Task):
    instruction = "lift the bar with both arms"
    min_arms = 2
    # heavy enough that one gripper cannot hold it level by friction alone
    objects = (SceneObject("bar", (0.02, 0.2, 0.02), (0.9, 0.75, 0.1, 1.0), mass=0.4),)

    @dataclass
    class Params(Section):
        forward: tuple[float, float] = param((0.28, 0.34), "range of the bar's distance in front of the arms' "
                                                           "middle", unit="m")
        lateral: tuple[float, float] = param((-0.03, 0.03), "range of its offset across", unit="m")
        yaw: float = param(0.15, "its yaw off across the arms is drawn from [-yaw, yaw]", unit="rad", ge=0)
        grip_from_end: float = param(0.035, "each gripper grasps this far from an end", unit="m", ge=0)
        max_tilt: float = param(0.15, "success: the bar tilts less than this (both ends held keep it level)",
                                unit="rad", gt=0)

        def validate(self):
            _check_pair(self, "forward")
            _check_pair(self, "lateral")

    def _pair(self, twin):
        arms = sorted(twin.arms, key=lambda a: a.base[1])
        return arms[0], arms[-1]   # the two outermost arms

    def place(self, twin, rng):
        a, b = self._pair(twin)
        mid = (np.array(a.base[:2]) + np.array(b.base[:2])) / 2
        sep = np.subtract(b.base[:2], a.base[:2])
        p = self.params
        yaw = np.arctan2(sep[1], sep[0]) - np.pi / 2 + rng.uniform(-p.yaw, p.yaw)
        xy = mid + np.array([rng.uniform(*p.forward), rng.uniform(*p.lateral)])
        twin.set_body_pose("bar", [*xy, self.rest_z(twin, self.objects[0])], _yaw_quat(yaw))

    def success(self, twin):
        pos, quat = twin.body_pose("bar")
        return bool(pos[2] > self.rest_z(twin, self.objects[0]) + LIFT and _tilt_axis_y(quat) < self.params.max_tilt
                    and twin.contacts("bar", "world") == 0)

    def plan(self, twin, variant="success"):
        ik = ArmIK(twin)
        pos, quat = twin.body_pose("bar")
        yaw = 2 * np.arctan2(quat[3], quat[0])
        along = np.array([-np.sin(yaw), np.cos(yaw), 0.0])    # the bar's long (y) axis in the world
        half = self.objects[0].half_size[1] - self.params.grip_from_end
        grasps = []
        for arm in self._pair(twin):
            sign = np.sign(arm.base[1] - pos[1]) * np.sign(along[1])
            grasps.append((arm, pos + sign * half * along + [0, 0, GRASP_ABOVE], along[:2] @ [[0, -1], [1, 0]]))
        if variant != "success":
            grasps = grasps[:1]   # one arm alone tips the bar
        start = twin.action()
        self.plan_info = {"arms": [g[0].name for g in grasps]}
        return [Waypoint(start, 0.3), *self._grasp_lift(twin, ik, start, grasps, lift=0.09, approach=0.06)]


class PickBlockNarrow(PickBlock):
    defaults = {"first_arm": True, "forward": (0.32, 0.33), "lateral": (-0.005, 0.005), "yaw": 0.05}


class PushBlockNarrow(PushBlock):
    defaults = {"first_arm": True, "forward": (0.285, 0.295), "lateral": (-0.005, 0.005), "heading": 0.05,
                "distance": (0.095, 0.105)}


def _placement_arm(twin: Twin, rng, first: bool) -> ArmLayout:
    i = rng.integers(len(twin.arms))   # drawn either way: a seed places the wide tasks as it always did
    return twin.arms[0] if first else twin.arms[i]


def _finger_reach(twin: Twin, arm: ArmLayout) -> float:
    """Half the length of the gripper's finger geoms: from the TCP (their centre) to the tips."""
    m = twin.model
    body = m.jnt_bodyid[m.joint(arm.gripper_joint).id]
    return float(max(m.geom_size[g][2] for g in range(m.ngeom) if m.geom_bodyid[g] == body))


def _cube_closing(quat, radial) -> np.ndarray:
    """The face normal of a cube (yaw from `quat`) most across `radial`: the closing axis."""
    yaw = 2 * np.arctan2(quat[3], quat[0])
    normals = [np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])]
    r = np.asarray(radial) / np.linalg.norm(radial)
    return min(normals, key=lambda n: abs(n @ r))


def _tilt_axis_y(quat) -> float:
    """Angle (rad) between a body's y axis and the horizontal plane (a bar's long axis)."""
    w, x, y, z = quat
    yz = 2 * (y * z + w * x)   # world z component of the body y axis
    return float(np.arcsin(np.clip(abs(yz), 0.0, 1.0)))

