"""`WorldModel`: the object the planner calls. Image + instruction (+ history) -> a video chunk.

    wm = WorldModel.from_config({"kind": "tiny"})
    frames = wm.generate(image, "pick up the cup", history=None, seed=0)   # (T, H, W, 3) uint8

The returned chunk starts with the conditioning context: frame 0 reproduces the current image
without history; with history (the previous frames at `fps`, oldest first) the clip starts with
the last 4 history frames and the current image sits at index 4. `wm.last_info["context_frames"]`
says where the predicted future starts.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from eva_core.world_model import cache, encoders, lora, sampler
from eva_core.world_model.calls import CallCounter
from eva_core.world_model.best_of import best_of_n
from eva_core.world_model.checkpoint import cast_like_diffusers
from eva_core.world_model.config import WorldModelConfig
from eva_core.world_model.loading import WanComponents, load_components, resolve_device, resolve_dtype

VAE_T = 4  # VAE temporal stride
VAE_S = 8  # VAE spatial stride


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class WorldModel:
    def __init__(self, cfg: WorldModelConfig, components: WanComponents, embodiment=None):
        self.cfg = cfg
        self.embodiment = embodiment  # reward limits for best-of-N (None: the default embodiment)
        self._scorer = None
        self.c = components
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self._place_components()
        self.light_decoder = None   # cfg.decoder light: decode_latents goes through it instead of the VAE
        if cfg.decoder == "light":
            from eva_core.world_model.light_decoder import load_for_vae

            self.light_decoder = load_for_vae(cfg.light_decoder, self.c.vae, self.device)
        self.prompts = encoders.PromptEncoder(self.c.tokenizer, self.c.text_encoder, cfg.text_len)
        self.last_timing: dict[str, float] = {}
        self.last_info: dict[str, Any] = {}
        self.calls = CallCounter(self.c.transformer)   # transformer evaluations, per generate()
        self.cache_info: dict[str, Any] = {"kind": "none"}

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | WorldModelConfig, embodiment=None) -> "WorldModel":
        cfg = WorldModelConfig.from_dict(cfg)
        wm = cls(cfg, load_components(cfg), embodiment=embodiment)
        adapters = [cfg.lora] if isinstance(cfg.lora, str) else list(cfg.lora or [])
        if len(adapters) > 1 and not cfg.merge_lora:
            raise ValueError("world model: several 'lora' adapters need 'merge_lora: true' (merged in order)")
        for path in adapters:  # e.g. [SFT adapter, GRPO adapter]: each merged before the next loads
            lora.load_lora(wm.transformer, path)
            if cfg.merge_lora:
                lora.merge_lora(wm.transformer)
        wm.cache_info = cache.enable(wm, cfg.cache)   # after the LoRA: MagCache calibrates on the final model
        return wm

    def _place_components(self) -> None:
        c, dev, dt = self.c, self.device, self.dtype
        for m in (c.transformer, c.text_encoder, c.image_encoder, c.vae):
            m.requires_grad_(False)
        if c.transformer.dtype != dt and self.cfg.kind == "tiny":
            cast_like_diffusers(c.transformer, dt)
        if self.cfg.vae_tiling:
            c.vae.enable_tiling()
        if self.cfg.cpu_offload and dev.type == "cuda":
            # one component on the GPU at a time, moved in pipeline order (accelerate hooks)
            from accelerate import cpu_offload_with_hook

            hook = None
            for m in (c.text_encoder, c.image_encoder, c.transformer, c.vae):
                _, hook = cpu_offload_with_hook(m, dev, prev_module_hook=hook)
        else:
            for m in (c.transformer, c.text_encoder, c.image_encoder, c.vae):
                m.to(dev)

    # ---- properties the planner reads ----------------------------------------------------
    @property
    def transformer(self):
        return self.c.transformer

    @property
    def fps(self) -> float:
        return float(self.cfg.fps)

    @property
    def num_frames(self) -> int:
        return int(self.cfg.num_frames)

    @property
    def height(self) -> int:
        return int(self.cfg.height)

    @property
    def width(self) -> int:
        return int(self.cfg.width)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (16, self.cfg.latent_frames, self.height // VAE_S, self.width // VAE_S)

    # ---- inputs ---------------------------------------------------------------------------
    def to_tensor(self, image: np.ndarray, what: str = "image") -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (3, height, width) float in [-1, 1]: centre crop to aspect, resize."""
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"{what}: expected an (H, W, 3) uint8 RGB array, got {arr.shape} {arr.dtype}")
        from eva_core.data.video_clips import fit_frames   # the one crop + resize (SFT clips, light decoder)

        return fit_frames(arr[None], self.height, self.width)[:, 0]

    def context_clip(self, image: np.ndarray, history: Sequence[np.ndarray] | None) -> torch.Tensor:
        """(1, 3, Tc, H, W) pixel clip for the history latents: Tc = 1 (no history) or 5."""
        frames = [self.to_tensor(image, "image")]
        if history and self.cfg.max_history_latents > 1:
            hist = [self.to_tensor(h, f"history[{i}]") for i, h in enumerate(history)][-VAE_T:]
            hist = [hist[0]] * (VAE_T - len(hist)) + hist  # pad by repeating the oldest frame
            frames = hist + frames
        return torch.stack(frames, dim=1)[None]

    def conditioning(self, instruction: str, clip: torch.Tensor) -> sampler.GuidanceInputs:
        c = self.c
        text = self.prompts(instruction)
        text_neg = self.prompts(self.cfg.neg_prompt)
        image = encoders.clip_image_features(c.image_encoder, clip[:, :, 0])  # EVA: first clip frame
        _, f, h, w = self.latent_shape
        if self.cfg.conditioning == "history":
            hist = encoders.vae_encode(c.vae, clip)
            y = torch.zeros(1, 20, f, h, w)
            y_no_hist = None
        else:  # stock Wan I2V: mask (4) + VAE latent of [image, zeros...] (16); no-history drops it
            hist = None
            video = torch.zeros(1, 3, self.num_frames, self.height, self.width)
            video[:, :, :1] = clip[:, :, -1:]
            cond = encoders.vae_encode(c.vae, video)
            mask = torch.zeros(1, 4, f, h, w)
            mask[:, :, 0] = 1.0
            y = torch.cat([mask, cond.cpu()], dim=1)
            y_no_hist = torch.zeros_like(y)
        dev = self.device
        return sampler.GuidanceInputs(
            text=text.to(dev), text_neg=text_neg.to(dev), image=image.to(dev), y=y.to(dev),
            hist_latents=None if hist is None else hist.to(dev),
            y_no_hist=None if y_no_hist is None else y_no_hist.to(dev),
        )

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, Tl, h, w) -> video (B, 3, T, H, W) float32 in [-1, 1]: the light
        decoder when cfg.decoder is light, else the VAE (generate and GRPO's reward both decode here)."""
        if self.light_decoder is not None:
            return self.light_decoder.decode(latents)
        return encoders.vae_decode(self.c.vae, latents)

    # ---- generation -----------------------------------------------------------------------
    @property
    def scorer(self):
        """The best-of-N reward scorer (IDM at cfg.reward_idm), loaded on first use."""
        if self._scorer is None:
            from eva_core.world_model.best_of import load_scorer

            if not self.cfg.reward_idm:
                raise ValueError("world model: best-of-N needs 'reward_idm' in its config")
            self._scorer = load_scorer(self.cfg.reward_idm, self.embodiment, fps=self.fps)
        return self._scorer

    @torch.no_grad()
    def generate(self, image: np.ndarray, instruction: str, history: Sequence[np.ndarray] | None = None,
                 seed: int | None = None, batched_guidance: bool = True, best_of: int | None = None) -> np.ndarray:
        """Predict a chunk: (num_frames, height, width, 3) uint8 RGB at `fps`.

        best_of N > 1 (default: cfg.best_of) draws N chunks with seeds seed, seed+1, ... and keeps
        the one with the highest executability reward; `last_info["best_of"]` has every score."""
        n = self.cfg.best_of if best_of is None else int(best_of)
        if n < 1:
            raise ValueError(f"best_of must be >= 1, got {n}")
        self.calls.reset()   # last_timing["transformer_calls"]: all candidates of this chunk
        if n == 1:
            return self._generate_one(image, instruction, history, seed, batched_guidance)
        chunk, info, timing = best_of_n(
            lambda s: self._generate_one(image, instruction, history, s, batched_guidance),
            self.scorer, n, self.cfg.seed if seed is None else seed)
        self.last_timing = {**self.last_timing, **timing}
        self.last_info = {**self.last_info, **info}
        return chunk

    def _generate_one(self, image, instruction, history, seed, batched_guidance) -> np.ndarray:
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
        seed = self.cfg.seed if seed is None else seed
        gen = torch.Generator("cpu")
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        t0 = time.perf_counter()
        clip = self.context_clip(image, history)
        inp = self.conditioning(instruction, clip)
        _sync(self.device)
        t1 = time.perf_counter()
        noise = torch.randn((1, *self.latent_shape), generator=gen, dtype=torch.float32).to(self.device)
        if self.cfg.sampler == "student":   # distilled: K one-branch calls (world_model/student.py)
            from eva_core.world_model import student

            latents = student.sample(self.c.transformer, noise, inp, student.schedule_of(self.cfg),
                                     student.history_timesteps(self.cfg)[0], generator=gen)
        else:
            latents = sampler.sample(self.c.transformer, self.c.scheduler, noise, inp, self.cfg.num_steps,
                                     self.cfg.hist_guidance, self.cfg.lang_guidance, generator=gen,
                                     batched=batched_guidance)
        _sync(self.device)
        t2 = time.perf_counter()
        video = self.decode_latents(latents)[0]  # (3, T, H, W) in [-1, 1]
        frames = encoders.video_to_frames(video)
        t3 = time.perf_counter()
        self.last_timing = {"encode": t1 - t0, "denoise": t2 - t1, "decode": t3 - t2, "total": t3 - t0,
                            "transformer_calls": self.calls.calls, "transformer_forwards": self.calls.forwards}
        self.last_info = {"context_frames": clip.shape[2], "hist_latents": inp.hist_len, "seed": seed,
                          "steps": self.cfg.student_steps if self.cfg.sampler == "student" else self.cfg.num_steps}
        return frames
