"""Episode data: one Episode type, HDF5 readers (ALOHA/Cobot Magic, RoboTwin), our writer, LeRobot
v3.0 datasets in and out, one entry (`load_episodes`) for any mix of them, and a synthetic dataset
whose frames are a known function of the joint angles."""

from eva_core.data.episode import Episode
from eva_core.data.hdf5_io import (
    EpisodeFormatError,
    detect_layout,
    find_episode_files,
    find_robotwin_episodes,
    read_aloha_hdf5,
    read_episode,
    read_robotwin_hdf5,
    write_episode,
    write_robotwin_hdf5,
)
from eva_core.data.load import EpisodeRef, find_episodes, load_episodes, read_ref
from eva_core.data.synthetic import make_synthetic_dataset, render_frame, synthetic_episode

__all__ = [
    "Episode", "EpisodeFormatError", "detect_layout", "find_episode_files", "find_robotwin_episodes",
    "read_aloha_hdf5", "read_episode", "read_robotwin_hdf5", "write_episode", "write_robotwin_hdf5",
    "make_synthetic_dataset", "render_frame", "synthetic_episode",
    "EpisodeRef", "find_episodes", "load_episodes", "read_ref",
]
