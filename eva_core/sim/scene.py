"""Build a MuJoCo scene from the embodiment's URDF: the robot, a table, blocks, lights, cameras.

Cameras are attached to the URDF's optical frames named in the embodiment YAML (`cameras:`), so
the simulated views come from the same frames the real RealSense cameras publish.
"""

from __future__ import annotations

import mujoco
import numpy as np

from eva_core.embodiment import Embodiment

# ROS optical frames look along +z with y down; MuJoCo cameras look along -z with y up.
OPTICAL_TO_MUJOCO_CAMERA = [0.0, 1.0, 0.0, 0.0]  # 180 degrees about x
DEFAULT_BLOCKS = (
    ("red_block", (0.35, 0.12, 0.02), (0.85, 0.15, 0.12, 1.0)),
    ("blue_block", (0.38, -0.10, 0.02), (0.15, 0.3, 0.85, 1.0)),
)


def build_spec(emb: Embodiment, fovy: float = 70.0, blocks=DEFAULT_BLOCKS) -> mujoco.MjSpec:
    text = emb.urdf_file.read_text()
    # keep fixed links (camera frames) as bodies, keep visual geometry
    marker = "<robot "
    i = text.index(marker)
    j = text.index(">", i) + 1
    text = text[:j] + '<mujoco><compiler discardvisual="false" fusestatic="false"/></mujoco>' + text[j:]
    try:
        spec = mujoco.MjSpec.from_string(text)
    except Exception as e:  # noqa: BLE001 - MuJoCo raises a bare ValueError without the file
        raise ValueError(f"{emb.urdf_file}: MuJoCo cannot load the URDF: {e}") from e
    world = spec.worldbody
    world.add_light(pos=[0.3, 0.0, 2.0], dir=[0.0, 0.0, -1.0], diffuse=[0.7, 0.7, 0.7], castshadow=False)
    world.add_light(pos=[-0.5, 0.5, 1.5], dir=[0.5, -0.3, -1.0], diffuse=[0.3, 0.3, 0.3], castshadow=False)
    world.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], pos=[0, 0, -0.75],
                   rgba=[0.35, 0.35, 0.38, 1])
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.45, 0.6, 0.02],
                   pos=[0.3, 0.0, -0.021], rgba=[0.62, 0.5, 0.38, 1])
    for name, pos, rgba in blocks:
        body = world.add_body(name=name, pos=list(pos))
        body.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02, 0.02, 0.02], rgba=list(rgba))
    for cam, info in emb.cameras.items():
        link = info.get("link")
        body = spec.body(link) if link else None
        if body is None:
            raise ValueError(f"{emb.config_file}: camera {cam!r} link {link!r} is not a body of {emb.urdf_file}")
        body.add_camera(name=cam, fovy=fovy, quat=OPTICAL_TO_MUJOCO_CAMERA)
    return spec


def qpos_indices(model: mujoco.MjModel, emb: Embodiment) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """qpos addresses of each action dim, plus (finger2 addresses, their action dims) for mimics."""
    idx = []
    for name in emb.joint_names:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if jid < 0:
            raise ValueError(f"{emb.urdf_file}: joint {name!r} missing from the MuJoCo model")
        idx.append(model.jnt_qposadr[jid])
    mimic_adr, mimic_dim = [], []
    for d in emb.gripper_indices:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, emb.joint_names[d] + "_finger2")
        if jid >= 0:
            mimic_adr.append(model.jnt_qposadr[jid])
            mimic_dim.append(d)
    return np.asarray(idx), np.asarray(mimic_adr, dtype=int), np.asarray(mimic_dim, dtype=int)
