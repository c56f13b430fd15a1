"""Inverse dynamics model: video frames -> the embodiment's actions (EVA-compatible, batched).

    from eva_core.idm import IDM, IDMConfig, build_idm, load_idm, save_idm
    idm = build_idm(IDMConfig.for_embodiment(emb, variant="tiny"))
    actions = idm.predict(video)   # (T, 3, H, W) in [0, 1] -> (T, emb.action_dim)

Names import lazily (module `__getattr__`): the choice constants VARIANTS, FUSIONS, PRECISIONS
and IDMConfig come from the torch-free eva_core.idm.config; the rest loads torch on first use.
"""

from __future__ import annotations

import importlib

# name -> submodule that defines it
_HOMES = {
    "IDMConfig": "config", "VARIANTS": "config", "FUSIONS": "config", "PRECISIONS": "config",
    "IDM": "model", "build_idm": "model", "native_bf16": "model", "resolve_precision": "model",
    "SpatialSoftmax": "spatial_softmax",
    "IDMCheckpointError": "checkpoint", "load_idm": "checkpoint", "save_idm": "checkpoint",
    "export_eva_pt": "checkpoint", "load_eva_pt": "checkpoint", "load_state_dict_strict": "checkpoint",
}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
