"""Configuration of the Wan2.1 I2V world model: `WorldModelConfig`, a typed `Section`.

    cfg = WorldModelConfig.from_dict(yaml_section, source="run.yaml", section="world_model")

`from_dict` fills the keys a mapping leaves out from its kind's preset (`KIND_PRESETS`: kind
"tiny", the default, starts from the small CPU-fast sizes of `tiny_default`), then the field
defaults (EVA's, FACTS.md §4). Torch-free: node_config and the training CLIs check configs here.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from eva_core.config import Section, param

KINDS = ("tiny", "diffusers", "lightning")   # built in; eva_core.world_model.registry may add more
SCHEDULERS = ("unipc", "euler", "step_distill")   # step_distill: lightx2v's 4-step schedule (loading.py)
SAMPLERS = ("guided", "student")     # student: a distilled K-step, one-branch model (world_model/student.py)
CONDITIONINGS = ("history", "wan_i2v")
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")   # loading.resolve_dtype
DECODERS = ("vae", "light")   # light: eva_core.world_model.light_decoder (a small VAE-decoder copy)
CACHE_KINDS = ("none", "first_block", "taylor_seer", "mag")   # diffusers' caches (world_model/cache.py)
WAN_TAYLOR_MODULES = r"blocks\.\d+\.(attn1|attn2|ffn)"   # TaylorSeer: each block's attention and MLP outputs

# keys a kind starts from when a mapping does not set them (before the field defaults)
KIND_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(height=64, width=64, num_frames=9, fps=16.0, scheduler="euler", num_steps=4, seed=0),
}


@dataclass
class TinyConfig(Section):
    """Sizes of the tiny random components (kind "tiny"); the architecture stays the real I2V one.
    The defaults generate one 64x64x9 chunk with 4 steps in a fraction of a second on one CPU core."""

    num_layers: int = param(2, "transformer blocks", ge=1)
    num_attention_heads: int = param(2, "attention heads", ge=1)
    attention_head_dim: int = param(12, "width of one attention head", ge=1)
    ffn_dim: int = param(32, "transformer feed-forward width", ge=1)
    text_dim: int = param(32, "UMT5 d_model (the text embedding width)", ge=1)
    image_dim: int = param(16, "CLIP hidden size (the image embedding width)", ge=1)
    freq_dim: int = param(32, "timestep embedding width", ge=1)
    vae_base_dim: int = param(8, "base channels of the causal Wan VAE", ge=1)
    clip_image_size: int = param(32, "CLIP input size", unit="px", ge=1)
    clip_patch_size: int = param(16, "CLIP patch size", unit="px", ge=1)
    seed: int = param(0, "torch seed of the random weights (+0 transformer, +1 VAE, +2 text, +3 image)")


@dataclass
class CacheConfig(Section):
    """diffusers' training-free transformer caches (`transformer.enable_cache`), see cache.py.
    Keys of another kind than `kind` must stay at their defaults."""

    kind: str = param("none", "none | first_block | taylor_seer | mag", choices=CACHE_KINDS)
    threshold: float | None = param(
        None, "first_block: relative change of the first block's residual below which the other blocks are "
              "reused (null: 0.05); mag: accumulated error allowed before recomputing (null: 0.06)", ge=0)
    cache_interval: int = param(5, "taylor_seer: a full computation every this many steps", ge=1)
    disable_cache_before_step: int = param(3, "taylor_seer: full computations before this step", ge=0)
    disable_cache_after_step: int | None = param(None, "taylor_seer: full computations from this step on", ge=0)
    max_order: int = param(1, "taylor_seer: order of the Taylor expansion", ge=0)
    taylor_factors_dtype: str = param("bfloat16", "taylor_seer: dtype of the stored Taylor factors",
                                      choices=("bfloat16", "float32"))
    use_lite_mode: bool = param(False, "taylor_seer: the lite variant (skip blocks, predict proj_out only)")
    cache_identifiers: list[str] = param(
        [WAN_TAYLOR_MODULES], "taylor_seer: regexes (re.fullmatch) of the modules whose outputs are predicted; "
                              "diffusers' default ('^blocks.*attn') matches no Wan module (attn1, attn2)")
    max_skip_steps: int = param(3, "mag: most consecutive steps skipped", ge=1)
    retention_ratio: float = param(0.2, "mag: fraction of the first steps never skipped", ge=0, le=1)
    mag_ratios: list[float] = param(
        [], "mag: per-step residual magnitude ratios; empty: calibrated once at build (one generation, "
            "calibrate=True, num_inference_steps=num_steps)")

    KIND_KEYS = {"first_block": ("threshold",),
                 "taylor_seer": ("cache_interval", "disable_cache_before_step", "disable_cache_after_step",
                                 "max_order", "taylor_factors_dtype", "use_lite_mode", "cache_identifiers"),
                 "mag": ("threshold", "max_skip_steps", "retention_ratio", "mag_ratios")}

    def validate(self) -> None:
        own = set(self.KIND_KEYS.get(self.kind, ()))
        for f in dataclasses.fields(self):
            if f.name == "kind" or f.name in own:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if getattr(self, f.name) != default:
                users = [k for k, keys in self.KIND_KEYS.items() if f.name in keys]
                self.error(f.name, f"applies to cache kind {' or '.join(users)}, not {self.kind!r}")
        if any(r <= 0 for r in self.mag_ratios):
            self.error("mag_ratios", "must all be > 0")
        for pattern in self.cache_identifiers:
            try:
                re.compile(pattern)
            except re.error as exc:
                self.error("cache_identifiers", f"{pattern!r} is not a regex: {exc}")


@dataclass
class WorldModelConfig(Section):
    """Everything `WorldModel.from_config` needs (or a registered kind's builder).

    kind:
      "tiny"       random tiny components built in code (tests, CPU demo)
      "diffusers"  `model_dir` is a diffusers Wan I2V directory (transformer/, vae/, text_encoder/, ...)
      "lightning"  `model_dir` as above for VAE/encoders/tokenizer, plus `ckpt`: an LVP/EVA Lightning
                   `.ckpt` (converted on load) or a transformer directory made by `eva-convert-ckpt`
    or a kind registered in eva_core.world_model.registry. Read configs with `from_dict` (kind
    presets apply); direct construction `WorldModelConfig(...)` uses the plain field defaults.
    """

    kind: str = param("tiny", "tiny | diffusers | lightning (or a kind registered in eva_core.world_model.registry)")
    model_dir: str | None = param(None, "diffusers Wan I2V directory (kinds diffusers, lightning)")
    ckpt: str | None = param(None, "kind lightning: an LVP/EVA .ckpt or a directory made by eva-convert-ckpt")
    trust_pickle: bool = param(False, "kind lightning: allow a .ckpt holding non-tensor objects")
    lora: str | list[str] | None = param(
        None, "LoRA adapter directory loaded at start; a list is merged in order (SFT, then GRPO)")
    merge_lora: bool = param(True, "merge the LoRA adapter(s) into the transformer")
    transformer_dir: str | None = param(
        None, "fine-tuned transformer directory (diffusers layout, eva-train-sft full mode) replacing the base one")
    vae_dir: str | None = param(None, "VAE directory (diffusers AutoencoderKLWan) replacing the base VAE")
    decoder: str = param("vae", "latents -> frames: vae (the Wan VAE decoder) | light (the light decoder "
                                "at 'light_decoder'; the VAE still encodes the history)", choices=DECODERS)
    light_decoder: str | None = param(None, "decoder light: a light-decoder directory (config.json + "
                                            "model.safetensors, made by training/train_light_decoder.py)")

    # Rejection sampling (the baseline EVA argues against)
    best_of: int = param(1, "draw this many chunks and keep the one with the highest executability reward", ge=1)
    reward_idm: str | None = param(
        None, "IDM that scores best-of candidates: checkpoint directory or EVA .pt ('random_tiny': tests only)")

    # Output video (EVA: 480x640, 49 frames at 16 fps)
    height: int = param(480, "frame height (multiple of 16)", unit="px", gt=0)
    width: int = param(640, "frame width (multiple of 16)", unit="px", gt=0)
    num_frames: int = param(49, "frames per chunk (4k+1: the Wan VAE's temporal stride is 4)", ge=1)
    fps: float = param(16.0, "frame rate of the generated video", unit="Hz", gt=0)

    # Sampler
    scheduler: str = param("unipc", "unipc | euler (flow matching)", choices=SCHEDULERS)
    num_steps: int = param(40, "sampling steps", ge=1)
    shift: float = param(3.0, "flow shift of the scheduler", gt=0)
    hist_guidance: float = param(1.5, "history guidance scale")
    lang_guidance: float = param(2.5, "language guidance scale")
    neg_prompt: str = param("", "the no-language branch prompt")
    max_history_latents: int = param(2, "history latent frames (EVA: 1 or 2)", choices=(1, 2))
    conditioning: str = param(
        "history", "history: EVA/LVP diffusion forcing; wan_i2v: stock Wan I2V (mask + first-frame latent)",
        choices=CONDITIONINGS)
    text_len: int = param(512, "text context tokens (diffusers' Wan attention hard-codes 512)", choices=(512,))
    sampler: str = param(
        "guided", "guided: the scheduler with EVA's guidance branches; student: a distilled K-step, one-branch "
        "model (eva-train-distill)", choices=SAMPLERS)
    student_steps: int = param(4, "sampler student: transformer calls per chunk", ge=1, le=4)
    student_timesteps: list[float] | None = param(
        None, "sampler student: its timesteps in (0, 1000], decreasing (default: student.py's schedule for "
        "student_steps)")
    cache: CacheConfig = param(CacheConfig, "diffusers' training-free transformer cache (kind none: off)")

    # Runtime
    device: str = param("auto", "torch device; auto: cuda if available else cpu")
    dtype: str = param("auto", "auto: bfloat16 on cuda, float32 on cpu", choices=DTYPES)
    cpu_offload: bool = param(False, "accelerate model CPU offload (one component on the GPU at a time)")
    vae_tiling: bool = param(False, "tiled VAE decoding")
    seed: int | None = param(None, "default seed when generate(seed=None)")

    tiny: TinyConfig = param(TinyConfig, "kind tiny: sizes of the random components")

    @classmethod
    def tiny_default(cls, **overrides: Any) -> "WorldModelConfig":
        """A config that generates a chunk on CPU in well under a second (kind "tiny"'s preset)."""
        return cls.from_dict({"kind": "tiny", **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | "WorldModelConfig" | None = None, *,
                  source: str = "<dict>", section: str = "") -> "WorldModelConfig":
        """Validated config (an instance is returned as is); keys left out come from the kind's
        preset, then the field defaults. Raises ConfigError."""
        if isinstance(data, cls):
            return data
        if isinstance(data, Mapping):
            kind = data.get("kind", cls.__dataclass_fields__["kind"].default)
            data = {**(KIND_PRESETS.get(kind, {}) if isinstance(kind, str) else {}), **data}
        return super().from_dict(data, source=source, section=section)

    @classmethod
    def doc_rows(cls, prefix: str = "") -> list[dict]:
        """As Section's, with the defaults a mapping gets: kind tiny's preset (other kinds: in the doc)."""
        rows = super().doc_rows(prefix)
        preset = KIND_PRESETS[cls.__dataclass_fields__["kind"].default]
        for row in rows:
            key = row["key"][len(prefix):]
            if key in preset:
                row["doc"] += f"; kinds other than tiny: {row['default']}"
                row["default"] = preset[key]
        return rows

    def validate(self) -> None:
        from eva_core.world_model.registry import kinds

        known = kinds()
        if self.kind not in known:
            self.error("kind", f"must be one of {list(known)}, got {self.kind!r}")
        if self.kind in ("diffusers", "lightning") and not self.model_dir:
            self.error("model_dir", f"kind {self.kind!r} needs 'model_dir'")
        if self.kind == "lightning" and not self.ckpt:
            self.error("ckpt", "kind 'lightning' needs 'ckpt' (a .ckpt file or converted dir)")
        if (self.num_frames - 1) % 4:
            self.error("num_frames", f"must be 4k+1 (Wan VAE temporal stride 4), got {self.num_frames}")
        for key in ("height", "width"):
            if getattr(self, key) % 16:
                self.error(key, f"must be a multiple of 16, got {getattr(self, key)}")
        if self.decoder == "light" and not self.light_decoder:
            self.error("light_decoder", "decoder 'light' needs 'light_decoder' (a light-decoder directory)")
        if self.decoder == "vae" and self.light_decoder:
            self.error("light_decoder", "set, but decoder is 'vae' (set decoder: light to decode with it)")
        if self.best_of > 1 and not self.reward_idm:
            self.error("best_of", "best_of > 1 needs 'reward_idm' (the IDM that scores the candidates)")
        if self.student_timesteps is not None:
            ts = [float(t) for t in self.student_timesteps]
            if not 1 <= len(ts) <= 4 or any(not 0 < t <= 1000 for t in ts) or any(a <= b for a, b in zip(ts, ts[1:])):
                self.error("student_timesteps", f"must be 1 to 4 decreasing timesteps in (0, 1000], got {ts}")
            if len(ts) != self.student_steps:
                self.error("student_timesteps", f"has {len(ts)} entries but student_steps is {self.student_steps}")
        if self.sampler == "student" and self.cache.kind != "none":
            self.error("cache", "a cache skips work between a guided sampler's many steps; a student "
                       f"(sampler student) makes {self.student_steps} calls: set cache.kind none")

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // 4 + 1

