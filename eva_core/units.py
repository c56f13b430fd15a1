"""Unit conversions between eva_core (SI, normalised grippers) and the Piper SDK.

This is the only place that knows SDK units:
- joints: int 0.001 degree  (factor 1000*180/pi exactly; piper_ros's 1000*180/3.14 is 0.05% off)
- gripper stroke: int 0.001 mm, effort int 0.001 N*m
Gripper conversions take the stroke (metres at action 1.0) from the embodiment
(`Embodiment.arms[i].gripper_stroke_m`); there is no default robot here.
"""

from __future__ import annotations

import math

import numpy as np

RAD_TO_MDEG = 1000.0 * 180.0 / math.pi  # 0.001 degree per radian
M_TO_UM = 1_000_000.0  # SDK gripper unit is 0.001 mm = 1 micrometre
SDK_GRIPPER_RANGE_M = 0.07  # piper_sdk GripperCtrl accepts 0..70 000 (0.001 mm): a bound, not a robot's stroke


def _scalar_or_array(v: np.ndarray):
    """0-d results come back as Python scalars, arrays stay arrays."""
    return v.item() if v.ndim == 0 else v


def rad_to_sdk_joint(rad):
    """Radians -> SDK int (0.001 deg). Scalars give int, arrays give int64 arrays."""
    return _scalar_or_array(np.rint(np.asarray(rad, dtype=np.float64) * RAD_TO_MDEG).astype(np.int64))


def sdk_joint_to_rad(mdeg):
    return _scalar_or_array(np.asarray(mdeg, dtype=np.float64) / RAD_TO_MDEG)


def gripper_norm_to_m(g, stroke_max_m: float):
    """Normalised gripper opening [0, 1] -> stroke in metres."""
    return _scalar_or_array(np.asarray(g, dtype=np.float64) * stroke_max_m)


def gripper_m_to_norm(m, stroke_max_m: float):
    return _scalar_or_array(np.asarray(m, dtype=np.float64) / stroke_max_m)


def gripper_m_to_sdk(m):
    """Stroke in metres -> SDK int (0.001 mm)."""
    return _scalar_or_array(np.rint(np.asarray(m, dtype=np.float64) * M_TO_UM).astype(np.int64))


def gripper_sdk_to_m(um):
    return _scalar_or_array(np.asarray(um, dtype=np.float64) / M_TO_UM)


def gripper_norm_to_sdk(g, stroke_max_m: float):
    return gripper_m_to_sdk(gripper_norm_to_m(g, stroke_max_m))


def gripper_sdk_to_norm(um, stroke_max_m: float):
    return gripper_m_to_norm(gripper_sdk_to_m(um), stroke_max_m)


def gripper_stroke_to_finger_m(stroke_m):
    """Total stroke -> travel of each of the two URDF prismatic fingers."""
    return _scalar_or_array(np.asarray(stroke_m, dtype=np.float64) / 2.0)


def _milli(x):
    return _scalar_or_array(np.rint(np.asarray(x, dtype=np.float64) * 1000.0).astype(np.int64))


def sdk_speed_to_rad_s(v):
    """Motor speed feedback (0x251-0x256, int 0.001 rad/s) -> rad/s."""
    return _scalar_or_array(np.asarray(v, dtype=np.float64) / 1000.0)


def rad_s_to_sdk_speed(w):
    """rad/s -> int 0.001 rad/s (motor speed feedback, max joint speed)."""
    return _milli(w)


def rad_s2_to_sdk_acc(a):
    """rad/s^2 -> int 0.001 rad/s^2 (max joint acceleration)."""
    return _milli(a)


def nm_to_sdk_effort(nm):
    """Gripper effort N*m -> int 0.001 N*m (GripperCtrl)."""
    return _milli(nm)


def rad_to_sdk_decideg(rad):
    """Radians -> int 0.1 degree (the motor angle-limit reply 0x473)."""
    return _scalar_or_array(np.rint(np.degrees(np.asarray(rad, dtype=np.float64)) * 10.0).astype(np.int64))
