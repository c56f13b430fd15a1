"""eva_ros: ament_python package that also installs with pip (`pip install -e .`)."""

from glob import glob
import importlib.util
import os

from setuptools import find_packages, setup

PACKAGE = "eva_ros"


def share_tree(folder):
    """data_files entries that mirror `folder` under share/eva_ros/."""
    entries = {}
    for path in glob(os.path.join(folder, "**", "*"), recursive=True):
        if os.path.isfile(path) and "__pycache__" not in path:
            dest = os.path.join("share", PACKAGE, os.path.dirname(path))
            entries.setdefault(dest, []).append(path)
    return sorted(entries.items())


def node_scripts():
    """script -> "module:main" of every node, from the node registry (eva_ros/registry.py, loaded by
    its path: standard library only, so nothing of the package or its dependencies is imported)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eva_ros", "registry.py")
    spec = importlib.util.spec_from_file_location("_eva_node_registry", path)
    registry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(registry)
    return registry.console_scripts()


NODES = node_scripts()
CLIS = {
    "eva-bringup": "eva_ros.bringup:main",
    "eva-check-hardware": "eva_ros.hardware_check:main",
    "eva-demo": "eva_ros.demo.cli:main",
    "eva-check-embodiment": "eva_core.embodiment_cli:main",
    "eva-train-idm": "training.train_idm:main",
    "eva-convert-ckpt": "eva_core.world_model.convert:main",
    "eva-train-sft": "training.sft:main",
    "eva-train-grpo": "training.grpo:main",
    "eva-train-distill": "training.distill:main",
    "eva-generate": "training.generate:main",
    "eva-sim-demos": "eva_core.sim.demos_cli:main",
    "eva-bag-to-episodes": "eva_core.data.rosbag_episodes:main",
    "eva-convert-episodes": "eva_core.data.convert_episodes:main",
    "eva-view-episode": "eva_core.data.view_episode:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["eva_core", "eva_core.*", "eva_ros", "eva_ros.*", "training", "training.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        *share_tree("launch"),
        *share_tree("urdf"),
        *share_tree("config"),
        *share_tree("rviz"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="eva_ros developers",
    maintainer_email="eva-ros@example.com",
    description="EVA closed-loop control: Wan2.1 world model + IDM on the AgileX Cobot Magic, with ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={"console_scripts": [f"{k} = {v}" for k, v in {**NODES, **CLIS}.items()]},
)
