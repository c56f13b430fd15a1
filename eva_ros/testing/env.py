"""The environment of a graph: a unique DDS domain on loopback only, headless rendering."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]   # the source tree (config/, tools/, checkpoints/)
BIN = Path(sys.executable).parent            # console scripts of this interpreter
_ids = itertools.count()

# headless rendering and offline model hubs: set (if unset) for every test process and graph
HEADLESS = {"MUJOCO_GL": "egl", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def unique_domain_id() -> int:
    """1..99 (a process default from `headless_env` is 100..199): per pid and per call."""
    return (os.getpid() * 7 + next(_ids) * 13) % 99 + 1


def headless_env(environ=None) -> None:
    """Loopback-only DDS, a per-process default domain (100..199) and headless rendering, set in
    `environ` (default os.environ) where not set already (discovery range: always)."""
    environ = os.environ if environ is None else environ
    environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    for k, v in HEADLESS.items():
        environ.setdefault(k, v)


def use_domain(default: int | None = None) -> int:
    """This process joins a graph: LOCALHOST discovery and ROS_DOMAIN_ID (kept if set, else
    `default`, else 20..99 from the pid) in os.environ; returns the domain id."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"   # never multicast off this machine
    os.environ.setdefault("ROS_DOMAIN_ID", str(default if default is not None else 20 + os.getpid() % 80))
    return int(os.environ["ROS_DOMAIN_ID"])


def ros_env(domain_id: int | None = None, **extra) -> dict:
    """The environment of a child graph process: os.environ + `domain_id` (default: this
    process's, see `use_domain`), LOCALHOST discovery, unbuffered output, one OpenMP thread,
    the LARGE_DATA transport unless the environment names one (as eva-bringup does)."""
    env = dict(os.environ)
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env.update(ROS_DOMAIN_ID=str(domain_id if domain_id is not None else use_domain()),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env
