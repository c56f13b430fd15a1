"""Inverse dynamics model: video frames -> the embodiment's actions (EVA-compatible, batched).

    from eva_core.idm import IDM, IDMConfig, build_idm, load_idm, save_idm
    idm = build_idm(IDMConfig.for_embodiment(emb, variant="tiny"))
    actions = idm.predict(video)   # (T, 3, H, W) in [0, 1] -> (T, emb.action_dim)
"""

from eva_core.idm.checkpoint import (
    IDMCheckpointError,
    export_eva_pt,
    load_eva_pt,
    load_idm,
    load_state_dict_strict,
    save_idm,
)
from eva_core.idm.config import FUSIONS, VARIANTS, IDMConfig
from eva_core.idm.model import IDM, PRECISIONS, build_idm, native_bf16, resolve_precision
from eva_core.idm.spatial_softmax import SpatialSoftmax

__all__ = [
    "IDM", "IDMConfig", "VARIANTS", "FUSIONS", "PRECISIONS", "native_bf16", "resolve_precision", "SpatialSoftmax", "IDMCheckpointError", "build_idm", "load_idm",
    "save_idm", "export_eva_pt", "load_eva_pt", "load_state_dict_strict",
]
