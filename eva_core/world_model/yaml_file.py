"""A world-model YAML file: a `world_model:` section, as written beside a checkpoint
(checkpoints/demo/world_model_grpo.yaml), whose relative paths are relative to the file.

    cfg, path = read_world_model_yaml("checkpoints/demo")   # the directory's first of YAML_NAMES

Torch-free. ConfigError (one line naming the file) for a missing section or a bad key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eva_core.config import ConfigError
from eva_core.world_model.config import WorldModelConfig

# the keys that name files or directories; a relative one is resolved against the YAML's directory
PATH_KEYS = ("model_dir", "ckpt", "lora", "transformer_dir", "vae_dir", "reward_idm", "light_decoder")
YAML_NAMES = ("world_model_grpo.yaml", "world_model_sft.yaml", "world_model.yaml")
NOT_PATHS = {"reward_idm": ("random_tiny",)}


def resolve_paths(section: Mapping[str, Any], base: str | Path) -> dict[str, Any]:
    """`section` with its relative PATH_KEYS values (a str, or each str of a `lora` list) under `base`."""
    base = Path(base)

    def one(key, v):
        if not isinstance(v, str) or Path(v).is_absolute() or v in NOT_PATHS.get(key, ()):
            return v
        return str((base / v).resolve())

    out = dict(section)
    for key in PATH_KEYS:
        v = out.get(key)
        out[key] = [one(key, x) for x in v] if isinstance(v, list) else one(key, v)
    return {k: v for k, v in out.items() if k in section}


def find_world_model_yaml(path: str | Path) -> Path:
    """`path` itself, or the first of YAML_NAMES in the directory `path`."""
    p = Path(path)
    if p.is_dir():
        found = [p / n for n in YAML_NAMES if (p / n).is_file()]
        if not found:
            raise FileNotFoundError(f"{p}: no {' / '.join(YAML_NAMES)} in this directory")
        return found[0]
    if not p.is_file():
        raise FileNotFoundError(f"{p}: world-model config not found")
    return p


def read_world_model_yaml(path: str | Path, **overrides: Any) -> tuple[WorldModelConfig, Path]:
    """(the validated config, the YAML file) of a file or checkpoint directory; `overrides` (keys
    of the section, their paths as given) replace the file's values."""
    from eva_core import yaml_io

    p = find_world_model_yaml(path)
    data = yaml_io.load(p.read_text()) or {}
    section = data.get("world_model") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(str(p), "", "world_model", "missing (expected a world_model: section)")
    section = {**resolve_paths(section, p.parent), **overrides}
    return WorldModelConfig.from_dict(section, source=str(p), section="world_model"), p
