#!/usr/bin/env python3
"""Generate urdf/cobot_magic.urdf: two AgileX Piper arms on the Cobot Magic base.

Each arm chain is the vendor's modified-DH model (piper_sdk C_PiperForwardKinematics with
dh_is_offset=1, piper_sdk/kinematics/piper_fk.py) written as URDF joints: joint i sits at RotX(alpha_i) TransX(a_i)
TransZ(d_i) RotZ(theta_offset_i) from link i-1 and turns about its own z. Limits are the
piper_sdk joint-limit table; velocities are the vendor max speeds. Geometry is primitive.

Run: python tools/make_cobot_magic_urdf.py  (rewrites urdf/cobot_magic.urdf atomically)
     python tools/make_cobot_magic_urdf.py --arms left --name single_piper \
         --out tests/fixtures/single_piper/single_piper.urdf   (the 7-D single-arm test fixture)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eva_core.atomic_io import write_text  # noqa: E402

MM = 1e-3
DEG = math.pi / 180.0
# Modified DH (Craig), piper_sdk dh_is_offset=1
A = [0.0, 0.0, 285.03, -21.98, 0.0, 0.0]
ALPHA = [0.0, -90.0, 0.0, 90.0, -90.0, 90.0]
THETA0 = [0.0, -172.22, -102.78, 0.0, 0.0, 0.0]
D = [123.0, 0.0, 0.0, 250.75, 0.0, 91.0]
# piper_sdk C_PiperParamManager joint-limit table (rad)
LIMITS = [(-2.6179, 2.6179), (0.0, 3.14), (-2.967, 0.0), (-1.745, 1.745), (-1.22, 1.22), (-2.09439, 2.09439)]
MAX_SPEED_DEG_S = [180.0, 195.0, 180.0, 225.0, 225.0, 225.0]
EFFORT = [100.0] * 6
LINK_MASS = [0.71, 1.17, 0.50, 0.38, 0.38, 0.007]  # kg, approximate
GRIPPER_BASE_MASS = 0.45
FINGER_MASS = 0.025
FINGER_LIMIT = 0.038  # m, each finger (SDK stroke 0..0.07 = two fingers)
ARM_MOUNTS = {"left": (0.0, 0.30, 0.0), "right": (0.0, -0.30, 0.0)}


def rot_x(t):
    c, s = math.cos(t), math.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(t):
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rpy_of(R: np.ndarray) -> tuple[float, float, float]:
    """URDF fixed-axis rpy with R = Rz(yaw) Ry(pitch) Rx(roll)."""
    pitch = math.atan2(-R[2, 0], math.hypot(R[0, 0], R[1, 0]))
    if abs(math.cos(pitch)) < 1e-9:
        return math.atan2(-R[1, 2], R[1, 1]), pitch, 0.0
    return math.atan2(R[2, 1], R[2, 2]), pitch, math.atan2(R[1, 0], R[0, 0])


def fmt(v) -> str:
    return " ".join(f"{x:.9g}" if abs(x) > 1e-12 else "0" for x in v)


def dh_origin(i: int):
    """xyz (m) and rpy of joint i+1 relative to link i (link 0 = arm base)."""
    al, a, d, th = ALPHA[i] * DEG, A[i] * MM, D[i] * MM, THETA0[i] * DEG
    xyz = rot_x(al) @ np.array([a, 0.0, d])
    return xyz, rpy_of(rot_x(al) @ rot_z(th))


def inertial(mass: float, size: tuple[float, float, float], xyz=(0, 0, 0)) -> str:
    x, y, z = size
    ixx, iyy, izz = (mass / 12 * (y * y + z * z), mass / 12 * (x * x + z * z), mass / 12 * (x * x + y * y))
    return (f'    <inertial><origin xyz="{fmt(xyz)}" rpy="0 0 0"/><mass value="{mass}"/>'
            f'<inertia ixx="{ixx:.6g}" ixy="0" ixz="0" iyy="{iyy:.6g}" iyz="0" izz="{izz:.6g}"/></inertial>')


def segment_visual(vec: np.ndarray, radius: float, material: str) -> str:
    """A cylinder from the link origin to `vec` (the next joint), or a sphere if vec is ~0."""
    n = float(np.linalg.norm(vec))
    if n < 1e-6:
        geo, origin = f'<sphere radius="{radius * 1.2:.4g}"/>', '<origin xyz="0 0 0" rpy="0 0 0"/>'
    else:
        z = vec / n  # rotate the cylinder's z onto vec
        pitch, yaw = math.acos(max(-1.0, min(1.0, z[2]))), math.atan2(z[1], z[0])
        origin = f'<origin xyz="{fmt(vec / 2)}" rpy="0 {pitch:.9g} {yaw:.9g}"/>'
        geo = f'<cylinder radius="{radius}" length="{n:.6g}"/>'
    return (f"    <visual>{origin}<geometry>{geo}</geometry><material name=\"{material}\"/></visual>\n"
            f"    <collision>{origin}<geometry>{geo}</geometry></collision>")


def arm(side: str) -> str:
    out = []
    mx, my, mz = ARM_MOUNTS[side]
    base = f"{side}_base_link"
    out.append(f'  <joint name="{side}_mount" type="fixed"><parent link="base_link"/><child link="{base}"/>'
               f'<origin xyz="{mx} {my} {mz}" rpy="0 0 0"/></joint>')
    out.append(f'  <link name="{base}">\n'
               f'    <visual><origin xyz="0 0 0.03" rpy="0 0 0"/><geometry><cylinder radius="0.05" length="0.06"/></geometry><material name="dark"/></visual>\n'
               f'    <collision><origin xyz="0 0 0.03" rpy="0 0 0"/><geometry><cylinder radius="0.05" length="0.06"/></geometry></collision>\n'
               f'{inertial(0.6, (0.1, 0.1, 0.06), (0, 0, 0.03))}\n  </link>')
    parent = base
    for i in range(6):
        xyz, rpy = dh_origin(i)
        child = f"{side}_link{i + 1}" if i < 5 else f"{side}_flange"
        lo, hi = LIMITS[i]
        out.append(
            f'  <joint name="{side}_joint{i + 1}" type="revolute"><parent link="{parent}"/><child link="{child}"/>'
            f'<origin xyz="{fmt(xyz)}" rpy="{fmt(rpy)}"/><axis xyz="0 0 1"/>'
            f'<limit lower="{lo}" upper="{hi}" effort="{EFFORT[i]}" velocity="{MAX_SPEED_DEG_S[i] * DEG:.6f}"/></joint>')
        nxt = dh_origin(i + 1)[0] if i < 5 else np.array([0.0, 0.0, 0.0])
        size = tuple(float(max(abs(c), 0.06)) for c in nxt)
        out.append(f'  <link name="{child}">\n{segment_visual(nxt, 0.035, "grey")}\n'
                   f'{inertial(LINK_MASS[i] + (GRIPPER_BASE_MASS if i == 5 else 0.0), size, tuple(nxt / 2))}\n  </link>')
        parent = child
    # gripper: a palm fixed to the flange and two prismatic fingers (finger 2 mimics finger 1)
    out.append(f'  <joint name="{side}_palm_joint" type="fixed"><parent link="{side}_flange"/><child link="{side}_palm"/>'
               f'<origin xyz="0 0 0.03" rpy="0 0 0"/></joint>')
    out.append(f'  <link name="{side}_palm">\n'
               f'    <visual><geometry><box size="0.05 0.10 0.06"/></geometry><material name="dark"/></visual>\n'
               f'    <collision><geometry><box size="0.05 0.10 0.06"/></geometry></collision>\n'
               f'{inertial(0.05, (0.05, 0.1, 0.06))}\n  </link>')
    for k, (name, sign) in enumerate(((f"{side}_gripper", 1), (f"{side}_gripper_finger2", -1))):
        mimic = f'<mimic joint="{side}_gripper" multiplier="-1" offset="0"/>' if k else ""
        lo, hi = (0.0, FINGER_LIMIT) if sign > 0 else (-FINGER_LIMIT, 0.0)
        link = f"{side}_finger{k + 1}"
        out.append(f'  <joint name="{name}" type="prismatic"><parent link="{side}_palm"/><child link="{link}"/>'
                   f'<origin xyz="0 0 0.06" rpy="0 0 0"/><axis xyz="0 1 0"/>'
                   f'<limit lower="{lo}" upper="{hi}" effort="10" velocity="0.1"/>{mimic}</joint>')
        out.append(f'  <link name="{link}">\n'
                   f'    <visual><origin xyz="0 {sign * 0.005} 0.02" rpy="0 0 0"/><geometry><box size="0.02 0.01 0.05"/></geometry><material name="grey"/></visual>\n'
                   f'    <collision><origin xyz="0 {sign * 0.005} 0.02" rpy="0 0 0"/><geometry><box size="0.02 0.01 0.05"/></geometry></collision>\n'
                   f'{inertial(FINGER_MASS, (0.02, 0.01, 0.05), (0, sign * 0.005, 0.02))}\n  </link>')
    out.append(camera(f"cam_{side}_wrist", f"{side}_flange", (0.0, 0.07, 0.02), (0.0, -math.pi / 2, 0.0)))
    return "\n".join(out)


def camera(name: str, parent: str, xyz, rpy) -> str:
    """A camera body link (x forward) and its optical frame (z forward, x right, y down)."""
    return (f'  <joint name="{name}_joint" type="fixed"><parent link="{parent}"/><child link="{name}_link"/>'
            f'<origin xyz="{fmt(xyz)}" rpy="{fmt(rpy)}"/></joint>\n'
            f'  <link name="{name}_link">\n'
            f'    <visual><geometry><box size="0.025 0.09 0.025"/></geometry><material name="dark"/></visual>\n'
            f'{inertial(0.072, (0.025, 0.09, 0.025))}\n  </link>\n'
            f'  <joint name="{name}_optical_joint" type="fixed"><parent link="{name}_link"/><child link="{name}_optical_frame"/>'
            f'<origin xyz="0 0 0" rpy="{fmt((-math.pi / 2, 0.0, -math.pi / 2))}"/></joint>\n'
            f'  <link name="{name}_optical_frame"/>')


def build(name: str = "cobot_magic", sides: tuple[str, ...] = ("left", "right")) -> str:
    parts = [
        '<?xml version="1.0"?>',
        "<!-- Generated by tools/make_cobot_magic_urdf.py; edit the generator, not this file. -->",
        f'<robot name="{name}">',
        '  <material name="grey"><color rgba="0.75 0.75 0.78 1"/></material>',
        '  <material name="dark"><color rgba="0.15 0.15 0.17 1"/></material>',
        '  <link name="base_link">\n'
        '    <visual><origin xyz="-0.1 0 -0.02" rpy="0 0 0"/><geometry><box size="0.4 0.9 0.04"/></geometry><material name="dark"/></visual>\n'
        '    <collision><origin xyz="-0.1 0 -0.02" rpy="0 0 0"/><geometry><box size="0.4 0.9 0.04"/></geometry></collision>\n'
        f'{inertial(20.0, (0.4, 0.9, 0.04), (-0.1, 0, -0.02))}\n  </link>',
        '  <joint name="mast_joint" type="fixed"><parent link="base_link"/><child link="mast_link"/><origin xyz="-0.25 0 0" rpy="0 0 0"/></joint>',
        '  <link name="mast_link">\n'
        '    <visual><origin xyz="0 0 0.3" rpy="0 0 0"/><geometry><box size="0.04 0.04 0.6"/></geometry><material name="dark"/></visual>\n'
        '    <collision><origin xyz="0 0 0.3" rpy="0 0 0"/><geometry><box size="0.04 0.04 0.6"/></geometry></collision>\n'
        f'{inertial(1.5, (0.04, 0.04, 0.6), (0, 0, 0.3))}\n  </link>',
        camera("cam_high", "mast_link", (0.05, 0.0, 0.62), (0.0, 0.75, 0.0)),
        *(arm(side) for side in sides),
        "</robot>",
        "",
    ]
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", nargs="+", choices=sorted(ARM_MOUNTS), default=["left", "right"],
                    help="which Piper arms to include (default: both)")
    ap.add_argument("--name", default="cobot_magic", help="<robot name>")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "urdf" / "cobot_magic.urdf")
    args = ap.parse_args(argv)
    write_text(args.out, build(args.name, tuple(args.arms)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
