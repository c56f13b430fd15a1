"""The node registry: every eva node kind, in one place.

    kind -> NodeKind("module:NodeClass", "module:ConfigClass", console script, composed by eva-bringup)

The kind is also the node's default name and its params-file section. It feeds eva-bringup
(eva_ros/bringup.py), the config check (eva_ros.node_config.SECTIONS), setup.py's console scripts
(each runs `<node module>:main`) and the parameter tables of docs/ros_interface.md
(tools/gen_param_docs.py). Standard library only: setup.py loads this file by its path, where
neither numpy nor rclpy may be installed, so classes are named, not imported.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple


class NodeKind(NamedTuple):
    target: str              # "module:Class" of the rclpy node
    config: str              # "module:Class" of its params section (an eva_core.config.Section)
    script: str              # console script that runs the node alone (`<node module>:main`)
    bringup: bool = True     # eva-bringup can compose it

    def config_class(self):
        return _resolve(self.config)

    def main(self) -> str:
        """The console script's entry point, "module:main"."""
        return self.target.partition(":")[0] + ":main"


NODE_KINDS: dict[str, NodeKind] = {
    "camera": NodeKind("eva_ros.nodes.camera_node:CameraNode", "eva_ros.node_config:CameraConfig",
                       "eva-camera-node"),
    "planner": NodeKind("eva_ros.nodes.planner_node:PlannerNode", "eva_ros.node_config:PlannerNodeConfig",
                        "eva-planner-node"),
    "idm_action": NodeKind("eva_ros.nodes.idm_action_node:IDMActionNode", "eva_ros.node_config:IDMActionConfig",
                           "eva-idm-action-node"),
    "controller": NodeKind("eva_ros.nodes.controller_node:ControllerNode", "eva_ros.node_config:ControllerConfig",
                           "eva-controller-node"),
    # their own processes (no eva-bringup report): the teleoperation leader arms and the recorder
    "leader_arm": NodeKind("eva_ros.nodes.leader_arm_node:LeaderArmNode", "eva_ros.node_config:LeaderArmConfig",
                           "eva-leader-arm-node", bringup=False),
    "eva_record": NodeKind("eva_ros.bag_recorder:BagRecorderNode", "eva_ros.node_config:RecordConfig",
                           "eva-record", bringup=False),
}


def bringup_kinds() -> list[str]:
    """The kinds eva-bringup composes, in registry order."""
    return [kind for kind, k in NODE_KINDS.items() if k.bringup]


def console_scripts() -> dict[str, str]:
    """script -> "module:main" of every node (setup.py)."""
    return {k.script: k.main() for k in NODE_KINDS.values() if k.script}


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def node_class(entry: NodeKind | str):
    """The node class of a registry entry (or of a plain "module:Class")."""
    return _resolve(entry if isinstance(entry, str) else entry.target)
