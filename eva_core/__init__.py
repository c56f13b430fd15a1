"""eva_core: the algorithms of eva_ros (no ROS imports here).

Submodules: embodiment, units, safety, idm, reward, world_model, planner, data, sim.
"""

__version__ = "0.1.0"
