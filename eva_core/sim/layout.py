"""The arms of an embodiment as the twin needs them: action dims, URDF joints, gripper, base.

Read from the embodiment's `arms` table (its action slices) and the YAML `action:` list (which
URDF finger joint a gripper dim drives). Without an `arms` table the whole action is one arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import mujoco

from eva_core import yaml_io
from eva_core.embodiment import Embodiment


@dataclass(frozen=True)
class ArmLayout:
    name: str
    dims: tuple[int, ...]          # action dims of this arm (joints then gripper)
    joint_dims: tuple[int, ...]
    gripper_dim: int
    joint_names: tuple[str, ...]   # URDF revolute joints, in arm order
    gripper_joint: str             # URDF prismatic finger joint driven by the gripper dim
    base: tuple[float, float, float]   # world position of the arm's first joint

    def finger_geoms(self, spec: mujoco.MjSpec) -> list[str]:
        """Names given to (and returned for) the collision geoms of the gripper's fingers."""
        palm = spec.joint(self.gripper_joint).parent.parent
        names = []
        for child in palm.bodies:
            if not child.joints:
                continue
            for k, g in enumerate(child.geoms):
                if not g.name:
                    g.name = f"{child.name}_geom{k}"
                names.append(g.name)
        return names


@lru_cache(maxsize=16)
def _urdf_joint_of(config_file: Path) -> dict[str, str]:
    doc = yaml_io.load(Path(config_file).read_text()) or {}
    out = {}
    for dim in (doc.get("embodiment") or {}).get("action") or []:
        if isinstance(dim, dict) and dim.get("type") == "gripper":
            out[str(dim.get("name"))] = str(dim.get("urdf_joint", dim.get("name")))
    return out


def _arm_entries(emb: Embodiment) -> list[tuple[str, list[int]]]:
    arms = emb.arms
    if not arms:
        return [("arm", list(range(emb.dof)))]
    items = arms.items() if isinstance(arms, dict) else [(None, a) for a in arms]
    out = []
    for name, a in items:
        get = (lambda k, a=a: a.get(k)) if isinstance(a, dict) else (lambda k, a=a: getattr(a, k, None))
        name = name or get("name")
        dims = get("dims")
        if dims is None and get("action_slice") is not None:
            s = get("action_slice")
            dims = list(range(emb.dof))[s] if isinstance(s, slice) else list(s)
        if dims is None:
            raise ValueError(f"{emb.config_file}: arms: {name}: no action dims")
        out.append((str(name), [int(d) for d in dims]))
    return out


def arm_layout(emb: Embodiment, spec_or_model) -> list[ArmLayout]:
    """One ArmLayout per arm; `spec_or_model` gives the base positions (qpos0 kinematics)."""
    model = spec_or_model.compile() if isinstance(spec_or_model, mujoco.MjSpec) else spec_or_model
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    fingers = _urdf_joint_of(emb.config_file)
    out = []
    for name, dims in _arm_entries(emb):
        grip = [d for d in dims if emb.is_gripper[d]]
        joints = [d for d in dims if not emb.is_gripper[d]]
        if len(grip) != 1 or not joints:
            raise ValueError(f"{emb.config_file}: arms: {name}: the twin needs joints and one gripper dim, "
                             f"got dims {dims}")
        jnames = tuple(emb.joint_names[d] for d in joints)
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, jnames[0])
        if jid < 0:
            raise ValueError(f"{emb.urdf_file}: joint {jnames[0]!r} missing from the MuJoCo model")
        base = data.xanchor[jid].copy()
        gname = emb.joint_names[grip[0]]
        out.append(ArmLayout(name=name, dims=tuple(dims), joint_dims=tuple(joints), gripper_dim=grip[0],
                             joint_names=jnames, gripper_joint=fingers.get(gname, gname),
                             base=tuple(float(x) for x in base)))
    return out


def actuated_joints(emb: Embodiment) -> list[str]:
    """The URDF joint behind each action dim (a gripper dim drives its `urdf_joint` finger)."""
    fingers = _urdf_joint_of(emb.config_file)
    return [fingers.get(n, n) if emb.is_gripper[i] else n for i, n in enumerate(emb.joint_names)]

