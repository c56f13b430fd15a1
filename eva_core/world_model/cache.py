"""diffusers' training-free transformer caches as a world-model option (`world_model.cache`).

    cache: {kind: first_block, threshold: 0.05}         # FirstBlockCacheConfig
    cache: {kind: taylor_seer, cache_interval: 5}       # TaylorSeerCacheConfig
    cache: {kind: mag}                                  # MagCacheConfig, calibrated once at build
    cache: {kind: mag, mag_ratios: [1.0, 1.02, ...]}    # ... or with given ratios

The hooks keep one state per `transformer.cache_context(name)`; without a context the first-block
and TaylorSeer hooks raise "No cache context is set". The sampler wraps each transformer call in
`branch_context` (one name per guidance branch: cond / no_lang / no_hist; one joined name when the
branches run batched in one forward) and calls `reset` before each chunk, so no state (step
counters, cached residuals) leaks from one chunk into the next.
"""

from __future__ import annotations

import ast
import contextlib
import io

import numpy as np
import torch

from eva_core.world_model.config import CacheConfig

DEFAULT_THRESHOLD = {"first_block": 0.05, "mag": 0.06}   # diffusers' defaults
CALIBRATION_MARK = "[MagCache] Calibration Complete"      # what diffusers prints before the ratios


def enabled(transformer) -> bool:
    return bool(getattr(transformer, "is_cache_enabled", False))


def branch_context(transformer, name: str):
    """`transformer.cache_context(name)` when a cache is enabled, else a no-op context."""
    return transformer.cache_context(name) if enabled(transformer) else contextlib.nullcontext()


def reset(transformer) -> None:
    """Forget every context's cached state (call before each chunk)."""
    if enabled(transformer):
        transformer._reset_stateful_cache()


def diffusers_config(cfg: CacheConfig, num_steps: int, mag_ratios=None, calibrate: bool = False):
    """The diffusers cache config `cfg` names (None for kind none)."""
    if cfg.kind == "none":
        return None
    threshold = DEFAULT_THRESHOLD.get(cfg.kind) if cfg.threshold is None else cfg.threshold
    if cfg.kind == "first_block":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=threshold)
    if cfg.kind == "taylor_seer":
        from diffusers import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig(
            cache_interval=cfg.cache_interval, disable_cache_before_step=cfg.disable_cache_before_step,
            disable_cache_after_step=cfg.disable_cache_after_step, max_order=cfg.max_order,
            taylor_factors_dtype=getattr(torch, cfg.taylor_factors_dtype), use_lite_mode=cfg.use_lite_mode,
            cache_identifiers=list(cfg.cache_identifiers))
    from diffusers import MagCacheConfig

    return MagCacheConfig(threshold=threshold, max_skip_steps=cfg.max_skip_steps, retention_ratio=cfg.retention_ratio,
                          num_inference_steps=num_steps, calibrate=calibrate,
                          mag_ratios=None if calibrate else list(mag_ratios))


def enable(wm, cfg: CacheConfig) -> dict:
    """Enable the cache on `wm.transformer` (a WorldModel); MagCache without ratios is calibrated
    first with one generation. Returns {"kind", and for mag "mag_ratios", "calibrated"}."""
    info = {"kind": cfg.kind}
    if cfg.kind == "none":
        return info
    tr, steps = wm.transformer, wm.cfg.num_steps
    ratios = list(cfg.mag_ratios)
    if cfg.kind == "mag":
        info["calibrated"] = not ratios
        if not ratios:
            ratios = calibrate_mag(wm, cfg)
        info["mag_ratios"] = [round(float(r), 5) for r in ratios]
    tr.enable_cache(diffusers_config(cfg, steps, mag_ratios=ratios))
    return info


def calibrate_mag(wm, cfg: CacheConfig) -> list[float]:
    """MagCache's ratios for this model and step count: one generation (a grey frame, seed 0) with
    `MagCacheConfig(calibrate=True, num_inference_steps=num_steps)`; diffusers prints the ratios
    at the last step, which is where they are read from."""
    tr = wm.transformer
    tr.enable_cache(diffusers_config(cfg, wm.cfg.num_steps, calibrate=True))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            wm.generate(np.full((wm.height, wm.width, 3), 128, np.uint8), "calibrate", seed=0, best_of=1)
    finally:
        tr.disable_cache()
    text = out.getvalue()
    lines = text.splitlines()
    found = [i for i, line in enumerate(lines) if CALIBRATION_MARK in line]
    try:
        ratios = ast.literal_eval(next(ln for ln in lines[found[-1] + 1:] if ln.strip()).strip())
        ratios = [float(r) for r in ratios]
    except (IndexError, StopIteration, ValueError, SyntaxError, TypeError):
        raise RuntimeError(f"world model: MagCache calibration printed no ratios (diffusers changed its output?): "
                           f"{text[-300:]!r}") from None
    if len(ratios) != wm.cfg.num_steps or not all(np.isfinite(ratios)):
        raise RuntimeError(f"world model: MagCache calibration gave {len(ratios)} ratios for {wm.cfg.num_steps} "
                           f"steps: {ratios}")
    return ratios
