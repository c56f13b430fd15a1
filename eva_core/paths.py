"""Locate the package's share files (config/, urdf/, launch/).

Order: $EVA_ROS_SHARE, the ament index (colcon install), <prefix>/share/eva_ros (pip
install), then the source tree (editable install / checkout).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "eva_ros"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("EVA_ROS_SHARE")
    if env:
        out.append(Path(env))
    out.append(_SOURCE_ROOT)
    try:  # ament_index_python ships with the ROS wheels; optional here
        from ament_index_python.packages import get_package_share_directory

        out.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # noqa: BLE001 - not installed via colcon
        pass
    out.append(Path(sys.prefix) / "share" / PACKAGE)
    return out


def share_dir() -> Path:
    """The first candidate that holds config/ and urdf/."""
    for c in _candidates():
        if (c / "config").is_dir() and (c / "urdf").is_dir():
            return c
    raise FileNotFoundError(
        "eva_ros share files (config/, urdf/) not found; looked in: "
        + ", ".join(str(c) for c in _candidates())
        + ". Set EVA_ROS_SHARE to the directory that holds them."
    )


def _share_file(folder: str, name: str, default_suffix: str = "") -> Path:
    """`name` as given if it exists, else share/<folder>/<name> (with `default_suffix` added)."""
    p = Path(name)
    if default_suffix and p.suffix == "" and not p.exists():
        p = p.with_suffix(default_suffix)
    if p.exists():
        return p
    q = share_dir() / folder / p.name
    if not q.exists():
        raise FileNotFoundError(f"{folder} file {name!r} not found (looked at {p} and {q})")
    return q


def config_path(name: str) -> Path:
    """A file under config/; `name` may omit the .yaml suffix."""
    return _share_file("config", name, ".yaml")


def urdf_path(name: str) -> Path:
    return _share_file("urdf", name)
