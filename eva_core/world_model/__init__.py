"""Wan2.1 image-to-video world model through diffusers (EVA/LVP checkpoints, LoRA, guided sampler).

    from eva_core.world_model import WorldModel, WorldModelConfig
    wm = WorldModel.from_config({"kind": "tiny"})          # or "diffusers" / "lightning"
    frames = wm.generate(image, "pick up the cup")         # (T, H, W, 3) uint8 at wm.fps

Modules: config (dataclass), tiny (random tiny components), checkpoint (Lightning -> diffusers),
loading (the three loading paths), convert (eva-convert-ckpt), lora (peft adapters),
encoders (text/CLIP/VAE), sampler (3-branch guided sampler), sde (Flow-GRPO SDE step), model.
"""

from eva_core.world_model.config import WorldModelConfig
from eva_core.world_model.model import WorldModel

__all__ = ["WorldModel", "WorldModelConfig"]
