"""Shared plumbing of the world-model training scripts (sft.py, grpo.py, generate.py).

Strict YAML configs (unknown keys are one-line errors naming file, section and key, with a
nearest-key hint), `--set section.key=value` overrides, output-directory rules (never destroy an
existing run: resume it or refuse), resumable accelerate checkpoints, and atomic mp4 writing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from eva_core import yaml_io

from eva_core.atomic_io import atomic_path


class TrainConfigError(ValueError):
    """A bad training config value: str(exc) is one line naming file, section and key."""


def run_cli(prog: str, fn, argv=None) -> int:
    """eva_core.cli.cli_main when present (one-line errors, exit 2; --debug shows tracebacks).

    `fn`'s return value (a path, a summary) is for Python callers; the exit status is 0."""
    inner = fn
    fn = lambda a: (inner(a), None)[1]  # noqa: E731
    try:
        from eva_core.cli import cli_main
    except ImportError:  # the shared helper is not there: the same behaviour, locally
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = "--debug" in argv
        argv = [a for a in argv if a != "--debug"]
        try:
            fn(argv)
            return 0
        except (ValueError, OSError, KeyError) as e:
            if debug:
                raise
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"{prog}: {msg}", file=sys.stderr)
            return 2
    return cli_main(prog, fn, argv)


# ---- config ---------------------------------------------------------------------------------
def section_from_dict(cls, data: Any, source: str, section: str):
    """Build dataclass `cls` from a mapping: unknown keys, wrong types and non-finite floats fail."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TrainConfigError(f"{source}: {section}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise TrainConfigError(f"{source}: {section}: {key}: unknown key{hint}")
    kw = {}
    for key, value in data.items():
        default = getattr(cls(), key) if _has_default(fields[key]) else None
        kw[key] = _check_type(value, default, source, section, key)
    try:
        obj = cls(**kw)
    except (TypeError, ValueError) as e:
        raise TrainConfigError(f"{source}: {section}: {e}") from None
    check = getattr(obj, "validate", None)
    if check:
        try:
            check()
        except ValueError as e:
            raise TrainConfigError(f"{source}: {section}: {e}") from None
    return obj


def _has_default(f) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _check_type(value, default, source, section, key):
    where = f"{source}: {section}: {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TrainConfigError(f"{where}: expected true/false, got {value!r}")
    elif isinstance(default, (int, float)) and default is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise TrainConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise TrainConfigError(f"{where}: must be finite, got {value!r}")
    elif isinstance(default, str) and value is not None and not isinstance(value, str):
        raise TrainConfigError(f"{where}: expected a string, got {value!r}")
    elif isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise TrainConfigError(f"{where}: expected a list, got {value!r}")
    return value


def load_yaml(path) -> dict:
    path = Path(path)
    try:
        data = yaml_io.load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise TrainConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: top level must be a mapping of sections")
    return data


def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """`section.key=value` (value parsed as YAML) into the nested mapping."""
    for item in overrides or []:
        if "=" not in item:
            raise TrainConfigError(f"--set {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise TrainConfigError(f"--set {item!r}: {p} is not a section")
        node[parts[-1]] = yaml_io.load(raw)
    return data


def load_sections(path, schema: dict, overrides=None) -> dict:
    """{section: dataclass} from a YAML file; sections not in `schema` are errors."""
    source = str(path)
    data = apply_overrides(load_yaml(path), overrides, source)
    for name in data:
        if name not in schema:
            near = difflib.get_close_matches(name, list(schema), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise TrainConfigError(f"{source}: {name}: unknown section{hint}")
    out = {}
    for name, cls in schema.items():
        if cls is dict:
            out[name] = dict(data.get(name) or {})
        else:
            out[name] = section_from_dict(cls, data.get(name), source, name)
    return out


def config_to_dict(sections: dict) -> dict:
    return {k: (v if isinstance(v, dict) else dataclasses.asdict(v)) for k, v in sections.items()}


# ---- output directory and checkpoints ---------------------------------------------------------
def prepare_output_dir(out: Path, resume: bool) -> None:
    """A new run needs an absent or empty directory; an existing run is only ever resumed.

    Under `accelerate launch` only rank 0 checks and creates it (before the process group exists,
    which every rank then joins): a rank checking after another has begun writing saw "not empty"."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output-dir {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise FileExistsError(f"--output-dir {out}: not empty; pass --resume to continue that run "
                              "or choose a new directory (existing runs are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write_probe"
    probe.write_text("")
    probe.unlink()


def checkpoints(out: Path) -> list[Path]:
    root = Path(out) / "checkpoints"
    return sorted((p for p in root.glob("step_*") if (p / "state.json").is_file()), key=lambda p: p.name)


def save_checkpoint(accelerator, out: Path, step: int, extra: dict, keep: int = 2) -> Path:
    """accelerator.save_state into checkpoints/step_N (written beside, then renamed)."""
    root = Path(out) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
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


def resume_from(accelerator, out: Path) -> tuple[int, dict]:
    """Load the newest checkpoint of `out` (step, extra), or (0, {}) if there is none."""
    found = checkpoints(out)
    if not found:
        return 0, {}
    accelerator.load_state(str(found[-1]))
    state = json.loads((found[-1] / "state.json").read_text())
    return int(state.pop("step")), state


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
