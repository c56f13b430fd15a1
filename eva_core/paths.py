"""Locate the package's share files (config/, urdf/, launch/): one rule for every caller.

`share_file(folder, name)`:
1. `name` as given (absolute, or relative to the current directory) if that file exists;
2. else `<share>/<folder>/<name>`, keeping any sub-path of a relative `name`
   (`config_path("playback/demo.mp4")` -> `<share>/config/playback/demo.mp4`; a leading
   `<folder>/` is not doubled: "config/sim.yaml" -> `<share>/config/sim.yaml`);
3. else FileNotFoundError naming both places.
A `default_suffix` (".yaml" for config names) is tried when `name` has no suffix.

`<share>` is the first of these that holds config/ and urdf/: $EVA_ROS_SHARE, the source tree
(a checkout or an editable install), the ament index (colcon install), <sys.prefix>/share/eva_ros
(pip install).
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


def share_file(folder: str, name: str | os.PathLike, default_suffix: str = "") -> Path:
    """`name` as given if it exists, else share/<folder>/<name> (see the module docstring)."""
    given = Path(name).expanduser()
    tries = [given]
    if default_suffix and given.suffix == "":
        tries.insert(0, given.with_name(given.name + default_suffix))
    for p in tries:
        if p.is_file():
            return p.absolute()
    if not given.is_absolute():
        base = share_dir() / folder
        if given.parts and given.parts[0] == folder and len(given.parts) > 1:
            tries = [Path(*p.parts[1:]) for p in tries]
        for p in tries:
            q = base / p
            if q.is_file():
                return q
        raise FileNotFoundError(f"{folder} file {str(name)!r} not found (looked at {tries[0]} and {base / tries[0]})")
    raise FileNotFoundError(f"{folder} file {str(name)!r} not found")


def config_path(name: str | os.PathLike) -> Path:
    """A file under config/; `name` may omit the .yaml suffix."""
    return share_file("config", name, ".yaml")


def urdf_path(name: str | os.PathLike) -> Path:
    return share_file("urdf", name)
