"""Topic and service names of the eva graph, in one place.

All names are relative (no leading "/"), so `--ros-args -r __ns:=/robot_a` moves a whole graph
into its own namespace and two robots share one ROS domain without cross-talk. `/diagnostics`
stays global, by ROS convention (one aggregator for every node).
"""

JOINT_STATES = "joint_states"                      # sensor_msgs/JointState, the controller's feedback
LEADER_JOINT_STATES = "leader/joint_states"        # sensor_msgs/JointState of the leader arms (teleop)
INSTRUCTION = "eva/instruction"                    # std_msgs/String, latched
PLAN_FRAMES = "eva/plan/frames"                    # sensor_msgs/Image, one generated chunk
PLAN_TRAJECTORY = "eva/plan/trajectory"            # trajectory_msgs/JointTrajectory
PLAN_SCORE = "eva/plan/score"                      # std_msgs/Float32, executability reward
CONTROLLER_COMMAND = "eva/controller/command"      # sensor_msgs/JointState, every command sent
ESTOP = "eva/estop"                                # std_srvs/Trigger
ENABLE = "eva/enable"                              # std_srvs/SetBool
REPLAN = "eva/replan"                              # std_srvs/Trigger
DIAGNOSTICS = "/diagnostics"                       # diagnostic_msgs/DiagnosticArray (global)


def camera_topic(camera_name: str) -> str:
    """The image topic of a camera, as the realsense2_camera driver names it (relative)."""
    return f"{camera_name}/color/image_raw"
