"""Configuration of the Wan2.1 I2V world model (one dataclass, built from a dict or YAML)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

KINDS = ("tiny", "diffusers", "lightning")


@dataclass
class WorldModelConfig:
    """Everything `WorldModel.from_config` needs. Defaults follow EVA (FACTS.md §4).

    kind:
      "tiny"       random tiny components built in code (tests, CPU demo)
      "diffusers"  `model_dir` is a diffusers Wan I2V directory (transformer/, vae/, text_encoder/, ...)
      "lightning"  `model_dir` as above for VAE/encoders/tokenizer, plus `ckpt`: an LVP/EVA Lightning
                   `.ckpt` (converted on load) or a transformer directory made by `eva-convert-ckpt`
    """

    kind: str = "tiny"
    model_dir: str | None = None
    ckpt: str | None = None
    trust_pickle: bool = False  # only for `kind="lightning"` with a .ckpt holding non-tensor objects
    # optional LoRA adapter directory loaded (and optionally merged) at start; a list of them is
    # merged in order (an SFT adapter, then the GRPO adapter trained on top of it)
    lora: str | list | None = None
    merge_lora: bool = True
    # optional fine-tuned transformer directory (diffusers layout, what `eva-train-sft` writes in
    # full mode) that replaces the base transformer of any kind
    transformer_dir: str | None = None
    vae_dir: str | None = None  # optional VAE directory (diffusers AutoencoderKLWan) replacing the base VAE

    # Rejection sampling (the baseline EVA argues against): draw `best_of` chunks and keep the one
    # with the highest executability reward, scored by the IDM at `reward_idm` (a checkpoint
    # directory or EVA .pt; `"random_tiny"` builds an untrained tiny IDM, for tests only)
    best_of: int = 1
    reward_idm: str | None = None

    # Output video (EVA: 480x640, 49 frames at 16 fps)
    height: int = 480
    width: int = 640
    num_frames: int = 49
    fps: float = 16.0

    # Sampler
    scheduler: str = "unipc"  # "unipc" or "euler" (flow matching)
    num_steps: int = 40
    shift: float = 3.0
    hist_guidance: float = 1.5
    lang_guidance: float = 2.5
    neg_prompt: str = ""  # the "no-language" branch prompt
    max_history_latents: int = 2  # EVA: 1 or 2 history latent frames
    # "history": EVA/LVP diffusion forcing (history latents in the noisy stream, the 20 extra
    #            input channels are zero); "wan_i2v": stock Wan I2V (mask + first-frame latent)
    conditioning: str = "history"
    text_len: int = 512  # diffusers' Wan attention hard-codes a 512-token text context

    # Runtime
    device: str = "auto"  # "auto" -> cuda if available else cpu
    dtype: str = "auto"  # "auto" -> bfloat16 on cuda, float32 on cpu
    cpu_offload: bool = False  # accelerate model CPU offload (one component on the GPU at a time)
    vae_tiling: bool = False
    seed: int | None = None  # default seed when generate(seed=None)

    # Tiny-model sizes (kind="tiny" only); the architecture stays the real I2V one
    tiny: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def tiny_default(cls, **overrides: Any) -> "WorldModelConfig":
        """A config that generates a chunk on CPU in well under a second."""
        base = dict(kind="tiny", height=64, width=64, num_frames=9, fps=16.0,
                    scheduler="euler", num_steps=4, seed=0)
        base.update(overrides)
        return cls.from_dict(base)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | "WorldModelConfig") -> "WorldModelConfig":
        if isinstance(data, cls):
            return data
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise KeyError(f"unknown world-model config key(s): {unknown}; valid keys: {sorted(names)}")
        cfg = cls(**dict(data))
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"world-model config 'kind' must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("diffusers", "lightning") and not self.model_dir:
            raise ValueError(f"world-model kind {self.kind!r} needs 'model_dir'")
        if self.kind == "lightning" and not self.ckpt:
            raise ValueError("world-model kind 'lightning' needs 'ckpt' (a .ckpt file or converted dir)")
        if self.scheduler not in ("unipc", "euler"):
            raise ValueError(f"'scheduler' must be 'unipc' or 'euler', got {self.scheduler!r}")
        if self.conditioning not in ("history", "wan_i2v"):
            raise ValueError(f"'conditioning' must be 'history' or 'wan_i2v', got {self.conditioning!r}")
        if (self.num_frames - 1) % 4:
            raise ValueError(f"'num_frames' must be 4k+1 (Wan VAE temporal stride 4), got {self.num_frames}")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"'height'/'width' must be multiples of 16, got {self.height}x{self.width}")
        if self.num_steps < 1:
            raise ValueError("'num_steps' must be >= 1")
        if self.text_len != 512:
            raise ValueError("'text_len' must be 512: diffusers' Wan I2V attention splits image/text tokens at "
                             f"seq_len - 512 (got {self.text_len})")
        if not isinstance(self.best_of, int) or isinstance(self.best_of, bool) or self.best_of < 1:
            raise ValueError(f"'best_of' must be an integer >= 1, got {self.best_of!r}")
        if self.best_of > 1 and not self.reward_idm:
            raise ValueError("'best_of' > 1 needs 'reward_idm' (the IDM that scores the candidates)")
        if self.max_history_latents not in (1, 2):
            raise ValueError("'max_history_latents' must be 1 or 2")

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // 4 + 1
