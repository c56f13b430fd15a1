"""Shared plumbing of the training scripts (sft.py, grpo.py, train_idm.py, generate.py).

Configs are `eva_core.config.Section`s read from YAML with `--set section.key=value` overrides:
a typo, wrong type or out-of-range value at any depth is a one-line `ConfigError` before any
work. Also: the one CLI wrapper, output-directory rules (never destroy an existing run: resume
it or refuse), resumable checkpoints, and atomic mp4 writing.
"""

from __future__ import annotations

from dataclasses import dataclass

import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import yaml

from eva_core import yaml_io
from eva_core.atomic_io import atomic_path
from eva_core.cli import OutputDir, UserError, cli_main, overwrite_sibling
from eva_core.cli import prepare_output_dir as cli_prepare_output_dir
from eva_core.config import ConfigError, Section, param

@dataclass
class OptimSection(Section):
    """The optimiser keys every world-model trainer shares (SFT, GRPO, distil); a trainer's own
    section extends it and redeclares a field only to change its default."""

    lora_rank: int = param(32, "LoRA rank", ge=1)
    lora_alpha: float = param(32.0, "LoRA alpha", gt=0)
    lr: float = param(2e-4, "AdamW learning rate", gt=0)
    betas: list[float] = param([0.9, 0.999], "AdamW betas")
    weight_decay: float = param(1e-4, "AdamW weight decay", ge=0)
    grad_clip: float = param(1.0, "gradient-norm clip", gt=0)
    mixed_precision: str = param("auto", "auto: bf16 on GPU, no on CPU", choices=("auto", "no", "bf16", "fp16"))
    gradient_checkpointing: bool = param(True, "recompute activations in the backward pass")
    seed: int = param(0, "seed")

    def validate(self):
        if len(self.betas) != 2:
            self.error("betas", f"expected 2 values, got {self.betas}")



def run_cli(prog: str, fn, argv=None) -> int:
    """eva_core.cli.cli_main around `fn(argv)` (one-line errors, exit 2; --debug shows tracebacks).

    `fn`'s return value (a path, a summary) is for Python callers; the exit status is 0."""
    return cli_main(prog, lambda a: (fn(a), None)[1], argv)


# ---- config ---------------------------------------------------------------------------------
def load_yaml(path) -> dict:
    path = Path(path)
    try:
        data = yaml_io.load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "", "", f"not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "", "top level must be a mapping of sections")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`section.key=value` (value parsed as YAML) into the nested mapping."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError("--set", "", item, "expected section.key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.split(".")
        node = data
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError("--set", ".".join(parts[:i]), p, f"not a section ({item!r})")
        node[parts[-1]] = yaml_io.load(raw)
    return data


def load_config(cls, path, overrides=None):
    """Section `cls` from a YAML file plus `--set` overrides, checked at every depth."""
    return cls.from_dict(apply_overrides(load_yaml(path), overrides), source=str(path))


def world_model_config(model: Mapping, source: str = "<dict>", section: str = "model", **extra):
    """The WorldModelConfig of a training config's `model:` mapping (+ `extra` keys); keys left out
    come from the kind's preset (kind tiny, the default: tiny_default's sizes). Raises ConfigError."""
    from eva_core.world_model.config import WorldModelConfig

    return WorldModelConfig.from_dict({**model, **extra}, source=source, section=section)


# ---- output directory and checkpoints ---------------------------------------------------------
def prepare_output_dir(out: Path, resume: bool = False, overwrite: bool = False,
                       flag: str = "--output-dir") -> OutputDir:
    """eva_core.cli.prepare_output_dir (a non-empty run needs --resume or --overwrite; --overwrite
    builds in a sibling that `OutputDir.commit()` swaps in); write into the returned `.path`.

    Under `accelerate launch` only rank 0 checks and creates it (before the process group exists,
    which every rank then joins): a rank checking after another has begun writing saw "not empty".
    The others only compute the same paths (the old run stays in place until the commit)."""
    if int(os.environ.get("RANK", "0")) == 0:
        return cli_prepare_output_dir(out, resume=resume, overwrite=overwrite, flag=flag)
    final = Path(out)
    used = overwrite and final.is_dir() and any(final.iterdir())
    return OutputDir(final, overwrite_sibling(final) if used else final)


def check_inputs(**paths) -> None:
    """Every input path named (flag or config key -> path; None skipped) exists, before any output."""
    for name, p in paths.items():
        for one in ([] if p is None else p if isinstance(p, (list, tuple)) else [p]):
            if not Path(one).exists():
                raise UserError(f"{name}: {one}: no such file or directory")


def model_inputs(model: Mapping, section: str = "model") -> dict:
    """The paths a `model:` mapping reads (for check_inputs), keyed `section.key`."""
    keys = ("model_dir", "ckpt", "lora", "transformer_dir", "vae_dir", "reward_idm", "light_decoder")
    return {f"{section}.{k}": model[k] for k in keys
            if model.get(k) is not None and not (k == "reward_idm" and model[k] == "random_tiny")}


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop the rows of `path` past `step` (the killed run's rows after the checkpoint resumed),
    atomically; a missing file stays missing."""
    from eva_core.atomic_io import write_text

    path = Path(path)
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and int(json.loads(line).get("step", 0)) <= step]
    write_text(path, "".join(line + "\n" for line in keep))


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch): accelerate's loader calls set_epoch before
    each pass, so a resumed run replays the same order (and skip_first_batches the used part)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


def epoch_passes(accelerator, loader, step: int, batches_per_step: int, steps_per_epoch: int):
    """(epoch, loader) pairs from optimiser step `step` on: each pass over `loader` set to its
    epoch, the first one past the batches that steps 1..`step` used (exact resume)."""
    epoch, done = divmod(step, steps_per_epoch)
    skip = done * batches_per_step
    while True:
        loader.set_epoch(epoch)
        yield epoch, accelerator.skip_first_batches(loader, skip) if skip else loader
        epoch, skip = epoch + 1, 0


def checkpoints(out: Path) -> list[Path]:
    root = Path(out) / "checkpoints"
    return sorted((p for p in root.glob("step_*") if (p / "state.json").is_file()), key=lambda p: p.name)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest resumable checkpoint of run `out`, None for a run without checkpoints; step
    directories that none of them resumes (e.g. an older layout's trainer_state.json) are an
    error, not a fresh start over the run."""
    found = checkpoints(out)
    if found:
        return found[-1]
    stale = sorted(p for p in (Path(out) / "checkpoints").glob("step_*") if p.is_dir())
    if stale:
        raise ValueError(f"{stale[-1]}: not a resumable checkpoint (missing state.json; "
                         "written by an older version?); resume it with that version or use --overwrite")
    return None


def save_checkpoint(accelerator, out: Path, step: int, extra: dict, keep: int = 2, save_state=None) -> Path:
    """checkpoints/step_N: the training state and state.json ({"step": N, **extra}), written
    beside and then renamed; only the newest `keep` stay. Call it on every process.

    The state is accelerator.save_state, or `save_state(dir)` on the main process for a trainer
    with its own layout (eva-train-idm: safetensors + JSON)."""
    root = Path(out) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    if save_state is None:
        accelerator.save_state(str(tmp))
    elif accelerator.is_main_process:
        tmp.mkdir(parents=True)
        save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps({"step": step, **extra}) + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_checkpoint(path: Path) -> tuple[int, dict]:
    """(step, extra) of a checkpoint's state.json; a missing or bad one is a one-line error."""
    state_file = Path(path) / "state.json"
    if not state_file.is_file():
        raise ValueError(f"{path}: not a resumable checkpoint (missing state.json)")
    try:
        state = json.loads(state_file.read_text())
        return int(state.pop("step")), state
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{state_file}: not a checkpoint state ({type(e).__name__}: {e})") from None


def resume_from(accelerator, checkpoint: Path | None, load_state=None) -> tuple[int, dict]:
    """Load `checkpoint` (accelerator.load_state, or `load_state(dir)`); (step, extra), or
    (0, {}) without one."""
    if checkpoint is None:
        return 0, {}
    step, extra = read_checkpoint(checkpoint)
    (load_state or (lambda p: accelerator.load_state(str(p))))(checkpoint)
    return step, extra


def write_rank_digest(accelerator, params, out: Path) -> str:
    """Every process writes ranks/rank_N.json with a SHA-256 of its trainable weights, so a run
    (and the 2-process test) can check that data-parallel replicas stayed identical."""
    import hashlib

    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    d = Path(out) / "ranks"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"rank_{accelerator.process_index}.json").write_text(
        json.dumps({"rank": accelerator.process_index, "processes": accelerator.num_processes,
                    "weights_sha256": digest}) + "\n")
    return digest


def load_emb(name: str | None):
    """The embodiment named in a config (None: the default one)."""
    from eva_core.embodiment import DEFAULT_EMBODIMENT, load_embodiment

    return load_embodiment(name or DEFAULT_EMBODIMENT)


# ---- media -------------------------------------------------------------------------------------
def write_mp4(path, frames: np.ndarray, fps: float) -> Path:
    """(T, H, W, 3) uint8 -> mp4 (H.264 via imageio-ffmpeg), atomically."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".tmp.mp4") as tmp:
        imageio.mimwrite(str(tmp), list(np.asarray(frames)), fps=float(fps), codec="libx264",
                         macro_block_size=1, ffmpeg_log_level="error")
    return path


def append_jsonl(path, obj: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
