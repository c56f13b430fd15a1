"""Params files of a graph: config/base.yaml + an overlay + per-run overrides, as one file."""

from __future__ import annotations

from pathlib import Path

import yaml

from eva_ros.testing.env import REPO


def write_params(path: Path, base: str | Path | None = "loopback.yaml", overrides: dict | None = None) -> Path:
    """A params file: config/base.yaml + `base` (a str: a name under config/; a Path: that file; eva_ros.params.
    params_layers) with `overrides` ({node: {param: value}}) merged in; None: the overrides alone."""
    from eva_ros.params import merge, merged_sections, params_layers

    layer = base if isinstance(base, Path) else REPO / "config" / str(base)   # a str: a name under config/
    data = merged_sections(params_layers(layer)) if base else {}
    for node, params in (overrides or {}).items():
        merge(data.setdefault(node, {}).setdefault("ros__parameters", {}), params)
    # relative data paths in the base resolve against the repo's config/
    cam = data.get("camera", {}).get("ros__parameters", {}).get("source_options", {})
    if "path" in cam and not Path(cam["path"]).is_absolute():
        cam["path"] = str(REPO / "config" / cam["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
