"""Where each Piper arm of an embodiment sits in the action vector, and on which CAN channel."""

from __future__ import annotations

from dataclasses import dataclass

from eva_core import units


@dataclass(frozen=True)
class PiperArmLayout:
    """Where one Piper arm sits in the action vector."""
    name: str
    can: str                       # CAN channel name
    joint_dims: tuple[int, ...]    # 6 action indices (rad)
    gripper_dim: int | None        # action index of the gripper (0..1), or None
    stroke_m: float                # gripper stroke at action 1.0


def piper_arms(emb) -> list[PiperArmLayout]:
    """The embodiment's `arms` table as Piper layouts: each arm 6 joints + at most one gripper."""
    out = []
    for a in emb.arms:
        if len(a.joint_dims) != 6:
            raise ValueError(f"{emb.config_file}: arms: {a.name}: a Piper arm has 6 joints, this one has "
                             f"{len(a.joint_dims)} (dims {list(a.dims)})")
        stroke = a.gripper_stroke_m if a.gripper_dim is not None else units.SDK_GRIPPER_RANGE_M
        out.append(PiperArmLayout(a.name, a.can, tuple(a.joint_dims), a.gripper_dim, float(stroke)))
    if not out:
        raise ValueError(f"{emb.config_file}: arms: empty; a Piper emulator or backend needs the arms table")
    return out
