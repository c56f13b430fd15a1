"""The Piper arm's CAN protocol (V2, piper_sdk 0.6.x): frame ids, byte layouts, status names.

One table used by the CAN emulator (to speak it), by tests and benchmarks (to decode what the
Piper backend put on the bus) and by the backend and `eva-check-hardware` (to name error codes).
It mirrors piper_sdk's `protocol/protocol_v2/piper_protocol_v2.py` and `piper_msgs/msg_v2`:
standard 11-bit ids, 8 data bytes, big-endian. Values are in SDK units (0.001 deg, 0.001 mm,
0.001 rad/s); conversions to SI live in eva_core/units.py.
"""

from __future__ import annotations

import struct

# -- feedback frames (arm -> host) --------------------------------------------------------------
STATUS = 0x2A1            # ctrl_mode, arm_status, mode_feed, teach, motion, traj_num, err_code u16
JOINT_FEEDBACK = (0x2A5, 0x2A6, 0x2A7)   # int32 pairs J1,J2 / J3,J4 / J5,J6 (0.001 deg)
GRIPPER_FEEDBACK = 0x2A8  # int32 stroke (0.001 mm), int16 effort (0.001 N*m), u8 status
HIGH_SPEED = tuple(range(0x251, 0x257))  # per motor: int16 speed (0.001 rad/s), int16 current, int32 pos
LOW_SPEED = tuple(range(0x261, 0x267))   # per motor: u16 volt, i16 foc temp, i8 motor temp, u8 status, u16 bus current
MOTOR_LIMITS = 0x473      # reply to 0x472: motor, max angle, min angle (0.1 deg), max speed (0.001 rad/s)
MOTOR_MAX_ACC = 0x47C     # reply to 0x472 content 2: motor, max acc (0.001 rad/s^2)
FIRMWARE = 0x4AF          # reply: ASCII chunks containing "S-V<version>"

# -- command frames (host -> arm) ----------------------------------------------------------------
MOTION_CTRL_1 = 0x150     # e-stop (0x01) / resume-reset (0x02), track ctrl, drag-teach ctrl
MOTION_CTRL_2 = 0x151     # ctrl_mode (0x01 CAN), move_mode (0x01 MOVE J), speed %, mit, ...
JOINT_CTRL = (0x155, 0x156, 0x157)       # int32 pairs of joint targets (0.001 deg)
GRIPPER_CTRL = 0x159      # int32 stroke, u16 effort, u8 code (0x01 enable), u8 set_zero
MOTOR_ENABLE = 0x471      # motor 1..6 or 7 = all, flag 0x02 enable / 0x01 disable
MOTOR_QUERY = 0x472       # motor, content (0x01 angle/speed limits, 0x02 max acc)
CRASH_PROTECTION = 0x47A  # six u8 collision-protection levels (0..8)
FIRMWARE_QUERY = 0x4AF    # data[0] = 0x01

LAYOUT = {
    STATUS: struct.Struct(">BBBBBBH"),
    **{i: struct.Struct(">ii") for i in JOINT_FEEDBACK + JOINT_CTRL},
    GRIPPER_FEEDBACK: struct.Struct(">ihBx"),
    **{i: struct.Struct(">hhi") for i in HIGH_SPEED},
    **{i: struct.Struct(">HhbBH") for i in LOW_SPEED},
    MOTOR_LIMITS: struct.Struct(">BhhHx"),
    MOTOR_MAX_ACC: struct.Struct(">BH5x"),
    MOTION_CTRL_1: struct.Struct(">BBB5x"),
    MOTION_CTRL_2: struct.Struct(">BBBBBB2x"),
    GRIPPER_CTRL: struct.Struct(">iHBB"),
    MOTOR_ENABLE: struct.Struct(">BB6x"),
    MOTOR_QUERY: struct.Struct(">BB6x"),
    CRASH_PROTECTION: struct.Struct(">6B2x"),
}

ESTOP, RESUME = 0x01, 0x02          # MOTION_CTRL_1 byte 0
CTRL_STANDBY, CTRL_CAN = 0x00, 0x01
MOVE_J = 0x01
ENABLE_FLAG, DISABLE_FLAG = 0x02, 0x01
ALL_MOTORS = 7
DRIVER_ENABLED_BIT = 1 << 6         # low-speed foc status and gripper status byte
GRIPPER_ENABLE_CODE = 0x01

CTRL_MODE_NAMES = {0x00: "standby", 0x01: "CAN command", 0x02: "teaching", 0x03: "ethernet",
                   0x04: "wifi", 0x05: "remote control", 0x06: "linkage teaching input",
                   0x07: "offline trajectory"}
ARM_STATUS_NAMES = {
    0x00: "normal", 0x01: "emergency stop", 0x02: "no IK solution", 0x03: "singularity",
    0x04: "target exceeds a joint limit", 0x05: "joint communication error",
    0x06: "joint brake not released", 0x07: "collision", 0x08: "overspeed during drag teaching",
    0x09: "joint status error", 0x0A: "other error", 0x0B: "teaching record",
    0x0C: "teaching execution", 0x0D: "teaching pause", 0x0E: "main controller NTC over temperature",
    0x0F: "release resistor NTC over temperature",
}
# arm_status values that are modes, not faults
BENIGN_ARM_STATUS = {0x00, 0x0B, 0x0C, 0x0D}


def err_code_names(err_code: int) -> list[str]:
    """Names of the bits set in the status frame's u16 err_code (piper_sdk arm_feedback_status.py)."""
    names = [f"joint {j + 1} communication error" for j in range(6) if err_code & (1 << j)]
    names += [f"joint {j + 1} over its angle limit" for j in range(6) if err_code & (1 << (8 + j))]
    unknown = err_code & ~0x3F3F
    if unknown:
        names.append(f"unknown error bits 0x{unknown:04X}")
    return names


def describe_fault(arm_status: int, err_code: int) -> str:
    """'' when the status frame reports no fault, else one line naming it with the raw codes."""
    parts = []
    if arm_status not in BENIGN_ARM_STATUS:
        parts.append(f"{ARM_STATUS_NAMES.get(arm_status, 'unknown status')} (arm_status 0x{arm_status:02X})")
    if err_code:
        parts.append(f"{', '.join(err_code_names(err_code))} (err_code 0x{err_code:04X})")
    return "; ".join(parts)


def pack(can_id: int, *values) -> bytes:
    return LAYOUT[can_id].pack(*values)


def unpack(can_id: int, data) -> tuple:
    return LAYOUT[can_id].unpack(bytes(data))


def firmware_frames(version: str) -> list[bytes]:
    """The 0x4AF reply chunks for a firmware string such as 'S-V1.6-3' (8 bytes each)."""
    raw = b"\x00\x00" + version.encode("ascii")
    raw += b"\x00" * (-len(raw) % 8)
    return [raw[i:i + 8] for i in range(0, len(raw), 8)]
