"""Wan2.1 image-to-video world model through diffusers (EVA/LVP checkpoints, LoRA, guided sampler).

    from eva_core.world_model import WorldModel, WorldModelConfig
    wm = WorldModel.from_config({"kind": "tiny"})          # or "diffusers" / "lightning"
    frames = wm.generate(image, "pick up the cup")         # (T, H, W, 3) uint8 at wm.fps

Modules: config (WorldModelConfig, a typed Section), registry (kind -> builder, the VideoModel
protocol), build (build_world_model), tiny (random tiny components), checkpoint (Lightning -> diffusers),
loading (the three loading paths), convert (eva-convert-ckpt), lora (peft adapters),
encoders (text/CLIP/VAE), sampler (3-branch guided sampler), sde (Flow-GRPO SDE step), model,
best_of (best-of-N around any VideoModel).
Imports torch only when `WorldModel` (or a torch module) is first used: configs check without it.
"""

from eva_core.world_model.config import TinyConfig, WorldModelConfig
from eva_core.world_model.build import build_world_model
from eva_core.world_model.registry import VideoModel, register

__all__ = ["TinyConfig", "VideoModel", "WorldModel", "WorldModelConfig", "build_world_model", "register"]


def __getattr__(name: str):
    if name == "WorldModel":
        from eva_core.world_model.model import WorldModel

        return WorldModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
