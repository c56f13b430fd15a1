"""Build the MuJoCo scene from the embodiment's URDF: the robot with position servos, a table,
free objects, lights and cameras.

Physics follows the MuJoCo Menagerie `agilex_piper` model (MIT): position actuators with its
kp/kv/forcerange, gravity compensation on every robot body, the `implicitfast` integrator,
elliptic friction cones and `impratio` 10. The finger mimic of the URDF becomes an equality
constraint (MuJoCo's URDF importer does that). Robot geoms collide with the table and the objects
but not with each other (the URDF's simple shapes overlap at the joints).

Cameras are attached to the URDF's optical frames named in the embodiment YAML (`cameras:`), so
the simulated views come from the same frames the real RealSense cameras publish. A `tcp_<arm>`
site sits between each gripper's fingers (the centre of its finger geoms), for IK and tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from eva_core.embodiment import Embodiment
from eva_core.sim.layout import ArmLayout, actuated_joints, arm_layout

# ROS optical frames look along +z with y down; MuJoCo cameras look along -z with y up.
OPTICAL_TO_MUJOCO_CAMERA = [0.0, 1.0, 0.0, 0.0]  # 180 degrees about x
ROBOT_CONTYPE, ROBOT_CONAFFINITY = 2, 0   # robot vs robot: no contact
WORLD_CONTYPE, WORLD_CONAFFINITY = 1, 3   # table/objects: contact with the robot and each other


@dataclass(frozen=True)
class ServoGains:
    """Position servo gains, Menagerie `agilex_piper`: per arm joint (in arm order), and the gripper."""

    joint_kp: tuple[float, ...] = (80.0, 80.0, 80.0, 40.0, 10.0, 10.0)
    joint_kv: tuple[float, ...] = (5.0, 5.0, 5.0, 5.0, 1.5, 1.5)
    joint_force: float = 100.0        # N m
    # Menagerie's gripper is kp 40 / kv 5 / 10 N on a 0.035 m finger; with a block 2 cm narrower
    # than the closed fingers, kp 40 squeezes with 0.8 N only, so the twin uses a stiffer finger
    # servo with the same force bound (the real gripper's effort setting limits the squeeze).
    gripper_kp: float = 300.0         # N / m
    gripper_kv: float = 10.0
    gripper_force: float = 10.0       # N
    armature: float = 0.01            # kg m^2 reflected rotor inertia, keeps the servos stable at 2 ms

    def joint(self, i: int, where: str) -> tuple[float, float]:
        if i >= len(self.joint_kp) or i >= len(self.joint_kv):
            raise ValueError(f"{where}: no servo gains for arm joint {i + 1} (have {len(self.joint_kp)})")
        return self.joint_kp[i], self.joint_kv[i]


@dataclass(frozen=True)
class SceneObject:
    """A box on the table. `free`: a dynamic body with a free joint; else a flat visual marker."""

    name: str
    half_size: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    free: bool = True
    mass: float = 0.05                # kg
    friction: float = 1.0


@dataclass(frozen=True)
class Table:
    """A table top whose surface is at height `top` (m, world z), under the arms' workspace."""

    top: float = -0.001
    half_size: tuple[float, float, float] = (0.45, 0.6, 0.02)
    center_xy: tuple[float, float] | None = None   # None: in front of the arms (from the layout)
    friction: float = 0.3  # low, so a pushed block slides rather than tumbles (MuJoCo takes the max of a pair)


@dataclass
class SceneConfig:
    timestep: float = 0.002           # s, fixed physics step
    gains: ServoGains = field(default_factory=ServoGains)
    table: Table = field(default_factory=Table)
    objects: tuple[SceneObject, ...] = ()
    fovy: float = 70.0
    offscreen: tuple[int, int] = (640, 480)   # largest render size (width, height)


def load_urdf(emb: Embodiment) -> mujoco.MjSpec:
    """The embodiment's URDF as a MuJoCo spec (fixed links and visual geometry kept)."""
    text = emb.urdf_file.read_text()
    # keep fixed links (camera frames) as bodies, keep visual geometry
    i = text.index("<robot ")
    j = text.index(">", i) + 1
    text = text[:j] + '<mujoco><compiler discardvisual="false" fusestatic="false"/></mujoco>' + text[j:]
    try:
        return mujoco.MjSpec.from_string(text)
    except Exception as e:  # noqa: BLE001 - MuJoCo raises a bare ValueError without the file
        raise ValueError(f"{emb.urdf_file}: MuJoCo cannot load the URDF: {e}") from e


def _tcp_offsets(spec: mujoco.MjSpec, arms: list[ArmLayout]) -> dict[str, np.ndarray]:
    """Centre of each gripper's finger geoms at rest, in the frame of the fingers' parent body."""
    model = spec.compile()
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    out = {}
    for arm in arms:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, arm.gripper_joint)
        finger = model.jnt_bodyid[jid]
        palm = model.body_parentid[finger]
        fingers = [b for b in range(model.nbody) if model.body_parentid[b] == palm and model.body_jntnum[b] > 0]
        geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] in fingers]
        if not geoms:
            raise ValueError(f"URDF: gripper {arm.gripper_joint!r} has no finger geometry")
        centre = np.mean([data.geom_xpos[g] for g in geoms], axis=0)
        out[arm.name] = data.xmat[palm].reshape(3, 3).T @ (centre - data.xpos[palm])
        out[arm.name + "/body"] = model.body(palm).name
    return out


def table_pose(cfg: SceneConfig, arms: list[ArmLayout]) -> tuple[np.ndarray, np.ndarray]:
    """(centre, half size) of the table box: by default its near edge is under the arm bases."""
    half = np.asarray(cfg.table.half_size, float)
    if cfg.table.center_xy is not None:
        xy = np.asarray(cfg.table.center_xy, float)
    else:
        bases = np.array([a.base for a in arms])
        xy = np.array([bases[:, 0].mean() - 0.15 + half[0], bases[:, 1].mean()])
    return np.array([xy[0], xy[1], cfg.table.top - half[2]]), half


def build_spec(emb: Embodiment, cfg: SceneConfig | None = None, *, spec: mujoco.MjSpec | None = None,
               arms: list[ArmLayout] | None = None) -> mujoco.MjSpec:
    """The scene on `spec` (default: `load_urdf(emb)`), edited in place; `arms`: the layout the
    caller already has (default: computed from the spec)."""
    cfg = cfg or SceneConfig()
    spec = load_urdf(emb) if spec is None else spec
    arms = arm_layout(emb, spec) if arms is None else arms
    spec.option.timestep = cfg.timestep
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.visual.global_.offwidth, spec.visual.global_.offheight = cfg.offscreen
    for body in spec.bodies:
        if body.name != "world":
            body.gravcomp = 1.0
    for geom in spec.geoms:
        geom.contype, geom.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
    for joint in spec.joints:
        joint.armature = cfg.gains.armature

    tcp = _tcp_offsets(spec, arms)
    for arm in arms:
        for i, jname in enumerate(arm.joint_names):
            kp, kv = cfg.gains.joint(i, f"{emb.config_file}: arm {arm.name!r}")
            _servo(spec, jname, kp, kv, cfg.gains.joint_force)
        _servo(spec, arm.gripper_joint, cfg.gains.gripper_kp, cfg.gains.gripper_kv, cfg.gains.gripper_force)
        for fname in arm.finger_geoms(spec):
            g = spec.geom(fname)
            g.friction = [1.5, 0.01, 0.0001]
            g.condim = 4
        spec.body(tcp[arm.name + "/body"]).add_site(name=f"tcp_{arm.name}", pos=list(tcp[arm.name]),
                                                    size=[0.004, 0, 0], rgba=[1, 1, 0, 0])

    world = spec.worldbody
    world.add_light(pos=[0.3, 0.0, 2.0], dir=[0.0, 0.0, -1.0], diffuse=[0.7, 0.7, 0.7], castshadow=False)
    world.add_light(pos=[-0.5, 0.5, 1.5], dir=[0.5, -0.3, -1.0], diffuse=[0.3, 0.3, 0.3], castshadow=False)
    centre, half = table_pose(cfg, arms)
    world.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], pos=[0, 0, cfg.table.top - 0.75],
                   rgba=[0.35, 0.35, 0.38, 1], contype=WORLD_CONTYPE, conaffinity=WORLD_CONAFFINITY)
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(half), pos=list(centre),
                   rgba=[0.62, 0.5, 0.38, 1], friction=[cfg.table.friction, 0.005, 0.0001],
                   contype=WORLD_CONTYPE, conaffinity=WORLD_CONAFFINITY)
    for obj in cfg.objects:
        h = list(obj.half_size)
        body = world.add_body(name=obj.name, pos=[centre[0], centre[1], cfg.table.top + h[2]])
        if obj.free:
            body.add_freejoint(name=obj.name)
            body.add_geom(name=obj.name, type=mujoco.mjtGeom.mjGEOM_BOX, size=h, rgba=list(obj.rgba),
                          mass=obj.mass, friction=[obj.friction, 0.01, 0.0001], condim=4,
                          contype=WORLD_CONTYPE, conaffinity=WORLD_CONAFFINITY)
        else:  # a target marker: seen by the cameras, never touched
            body.add_geom(name=obj.name, type=mujoco.mjtGeom.mjGEOM_BOX, size=h, rgba=list(obj.rgba),
                          contype=0, conaffinity=0)
    for cam, info in emb.cameras.items():
        link = info.get("link")
        body = spec.body(link) if link else None
        if body is None:
            raise ValueError(f"{emb.config_file}: camera {cam!r} link {link!r} is not a body of {emb.urdf_file}")
        body.add_camera(name=cam, fovy=cfg.fovy, quat=OPTICAL_TO_MUJOCO_CAMERA)
    return spec


def _servo(spec: mujoco.MjSpec, joint: str, kp: float, kv: float, force: float) -> None:
    j = spec.joint(joint)
    act = spec.add_actuator(name=joint, target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=kp, kv=kv)
    act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    act.ctrlrange = list(j.range)
    act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    act.forcerange = [-force, force]


def qpos_indices(model: mujoco.MjModel, emb: Embodiment, joints: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """qpos and qvel addresses of each action dim (grippers: the actuated finger); `joints`: the
    caller's `actuated_joints(emb)`."""
    qadr, vadr = [], []
    for name in actuated_joints(emb) if joints is None else joints:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if jid < 0:
            raise ValueError(f"{emb.urdf_file}: joint {name!r} missing from the MuJoCo model")
        qadr.append(model.jnt_qposadr[jid])
        vadr.append(model.jnt_dofadr[jid])
    return np.asarray(qadr), np.asarray(vadr)

