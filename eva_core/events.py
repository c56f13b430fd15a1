"""Every diagnostic event kind, defined once (the `event` key of an event's status on /diagnostics).

- `Reject`: why a decoded chunk produced no trajectory (eva_core.chunk_decoding, in idm_action);
- `EventKind`: the control loop's events (eva_core.control, in the controller);
- `NodeEvent`: what the ROS adapters and the camera sources report themselves (camera, planner,
  leader arm, any node).
`Event` is all of them, under the same member names; `EVENT_DOCS` says what each means
(docs/ros_interface.md's table is generated from it). A new kind is one line in its group and one
in EVENT_DOCS. Standard library only (no ROS, no torch).
"""

from __future__ import annotations

from enum import Enum


class Reject(str, Enum):
    """Why a chunk produced no trajectory (the values are the diagnostic event kinds)."""
    BAD_CHUNK = "bad_chunk"
    NONFINITE_FRAMES = "nonfinite_frames"
    NONFINITE_ACTIONS = "nonfinite_actions"
    LOW_REWARD = "low_reward"
    NO_JOINT_STATE = "no_joint_state"
    STALE_JOINT_STATE = "stale_joint_state"
    SAFETY_REJECTED = "safety_rejected"
    ACTIONS_OUT_OF_LIMITS = "actions_out_of_limits"


class EventKind(str, Enum):
    """Events of the control loop (the adapter publishes each as a diagnostics event of that name)."""
    ESTOP = "estop"
    ENABLE_FAILED = "enable_failed"
    WATCHDOG_FEEDBACK = "watchdog_feedback_timeout"
    WATCHDOG_TRAJECTORY = "watchdog_trajectory_timeout"
    BACKEND_FAULT = "backend_fault"
    CONTROL_ERROR = "control_error"
    EXECUTOR_STOPPED = "executor_stopped"
    REJECTED_TRAJECTORY = "rejected_trajectory"   # also the planner's, for a malformed trajectory message
    TRAJECTORY_EXPIRED = "trajectory_expired"
    REJECTED_COMMAND = "rejected_command"


class TrajectoryRejection(str, Enum):
    """Why the controller rejected a whole trajectory: the `reason` value of its rejected_trajectory event."""
    OUT_OF_LIMITS = "out_of_limits"        # a point beyond the position limits by more than limit_tolerance
    UNKNOWN_JOINT = "unknown_joint"        # a joint the embodiment does not own (ros2_controllers' JTC)
    DUPLICATE_JOINT = "duplicate_joint"    # a joint listed twice: which value wins would be undefined
    MISSING_JOINT = "missing_joint"
    NONFINITE = "nonfinite"                # NaN/inf positions
    WRONG_SIZE = "wrong_size"              # positions of another width than the embodiment's
    STAMP_OFFSET = "stamp_offset"          # stamped beyond max_stamp_offset from now
    TOO_LONG = "too_long"                  # lasts beyond max_trajectory_duration
    MALFORMED = "malformed"                # no points, bad timing or metadata


class NodeEvent(str, Enum):
    """Events the ROS adapters and the hardware backends report themselves."""
    # camera
    READ_ERROR = "read_error"
    CAMERA_DROPPED = "camera_dropped"            # RealSense watchdog (eva_ros/backends/realsense.py)
    CAMERA_RECONNECTED = "camera_reconnected"
    CAMERA_RECONNECT_FAILED = "camera_reconnect_failed"
    LEADER_SILENT = "leader_silent"              # leader_arm_node: a leader arm sends no frames
    # camera, planner
    NONFINITE_FRAME = "nonfinite_frame"
    # planner
    BAD_FRAME = "bad_frame"
    BAD_OBSERVATION = "bad_observation"         # a frame of the wrong resolution or too large
    STALE_OBSERVATION = "stale_observation"
    PLANNING_ERROR = "planning_error"
    NONFINITE_PLAN = "nonfinite_plan"
    # any node
    BAD_JOINT_STATE = "bad_joint_state"
    CALLBACK_ERROR = "callback_error"


GROUPS = (NodeEvent, Reject, EventKind)
# every kind; Event("estop") is Event.ESTOP, and each member equals its group's member ("estop")
Event = Enum("Event", [(m.name, m.value) for group in GROUPS for m in group], type=str, module=__name__)
Event.__doc__ = "Every diagnostic event kind (NodeEvent, Reject and EventKind under their own names)."

EVENT_DOCS = {
    Event.READ_ERROR: "the camera source raised while reading a frame",
    Event.CAMERA_DROPPED: "no frames for frame_timeout; the source resets the camera and reopens it",
    Event.CAMERA_RECONNECTED: "the camera delivers frames again after a reset and reopen",
    Event.CAMERA_RECONNECT_FAILED: "the camera did not come back within reconnect_timeout; retried on the next read",
    Event.LEADER_SILENT: "a leader (master) arm sends no frames (silent until moved) or stopped; nothing published",
    Event.NONFINITE_FRAME: "a frame with NaN/inf pixels was dropped",
    Event.BAD_FRAME: "an image message that cannot be decoded was dropped",
    Event.BAD_OBSERVATION: "a camera frame of another resolution than the camera's, or larger than max_frame_bytes, "
                           "was dropped before any copy (rate-limited: one event per second)",
    Event.STALE_OBSERVATION: "the newest camera frame is older than max_obs_age; no chunk planned",
    Event.PLANNING_ERROR: "world-model generation failed; the planner retries",
    Event.NONFINITE_PLAN: "the generated frames hold NaN/inf; the chunk was dropped",
    Event.BAD_JOINT_STATE: "a malformed joint_states message was ignored",
    Event.CALLBACK_ERROR: "a callback raised on a message; the message was dropped, the node lives on",
    Event.BAD_CHUNK: "a chunk message with bad frames or metadata was rejected",
    Event.NONFINITE_FRAMES: "a chunk with NaN/inf frames was rejected",
    Event.NONFINITE_ACTIONS: "the IDM produced NaN/inf actions; no trajectory",
    Event.LOW_REWARD: "the chunk's executability reward is below reward_threshold; replanning",
    Event.NO_JOINT_STATE: "no joint state yet; no trajectory",
    Event.STALE_JOINT_STATE: "no joint state within max_state_age of the observation; no trajectory",
    Event.SAFETY_REJECTED: "the safety filter rejected the chunk; no trajectory",
    Event.ACTIONS_OUT_OF_LIMITS: "the IDM's actions lie beyond the position limits by more than "
                                 "action_limit_tolerance of a joint's range; no trajectory",
    Event.ESTOP: "e-stop requested; commands stopped until eva/enable",
    Event.ENABLE_FAILED: "the backend did not confirm enable",
    Event.WATCHDOG_FEEDBACK: "backend feedback older than feedback_timeout; stopped (latched)",
    Event.WATCHDOG_TRAJECTORY: "no trajectory for trajectory_timeout; holding the last safe target",
    Event.BACKEND_FAULT: "the backend reports a fault or disabled itself; latched until eva/enable",
    Event.CONTROL_ERROR: "a control tick failed; e-stopped (latched)",
    Event.EXECUTOR_STOPPED: "an executor thread died; the controller e-stopped the backend",
    Event.REJECTED_TRAJECTORY: "a trajectory was rejected whole and not executed; the arm holds (controller; its "
                               "`reason` value: out_of_limits (a point beyond the position limits by more than "
                               "limit_tolerance, naming the point, joint and value), unknown_joint, duplicate_joint, "
                               "missing_joint, nonfinite, wrong_size, stamp_offset, too_long, malformed), or a "
                               "malformed one was not counted (planner)",
    Event.TRAJECTORY_EXPIRED: "a trajectory ended before it arrived",
    Event.REJECTED_COMMAND: "the final safety filter rejected a command; not sent",
}
