"""Train the inverse dynamics model on robot episodes (`eva-train-idm`).

Read top to bottom: arguments -> setup (output checks, embodiment) -> episode files -> model ->
episodes (bad files reported and skipped) -> split by episode -> normalisation stats -> AdamW +
cosine/warmup -> loop (augment, SmoothL1 on normalised actions) -> evaluate -> save.
accelerate makes the same script run on CPU, one GPU or many (`accelerate launch`).

    eva-train-idm --synthetic 24 --variant tiny --out runs/idm_synth --epochs 30   # CPU demo
    eva-train-idm --data /data/episodes --variant resnet18 --out runs/idm_r18 --flip 0.5
    eva-train-idm --resume auto --out runs/idm_r18            # continue from the newest checkpoint
    eva-train-idm --overwrite --synthetic 24 --out runs/idm_synth  # replace it (swapped in when complete)
    eva-train-idm --eval-only runs/idm_r18/idm --data ... --export-eva runs/idm_r18/IDM.pt
    eva-train-idm --config idm.yaml --set lr=3e-4 --out runs/idm   # IDMTrainConfig keys, one per flag

Settings: IDMTrainConfig defaults < --config YAML < --set key=value < the flags given; a typo,
wrong type or out-of-range value is a one-line error before any work.

A non-empty --out is refused unless --resume or --overwrite; every input (--data, --init,
--resume, --eval-only) is checked before anything is written.
Outputs in --out: idm/ (safetensors + config.json + normalisation), checkpoints/step_*/ (resume),
tb/ (TensorBoard), loss.png, eval.json, and optionally an EVA-layout .pt (--export-eva).
Errors are one line naming the file (exit 2; --debug shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from eva_core.atomic_io import atomic_path, write_json
from eva_core.cli import UserError, add_debug_arg, check_writable
from eva_core.config import ConfigError, Section, param
from eva_core.data import detect_layout, find_episodes, make_synthetic_dataset, read_ref
from eva_core.data.episode import limits_problem
from eva_core.embodiment import DEFAULT_EMBODIMENT, Embodiment, load_embodiment
from eva_core.idm import FUSIONS, IDM, IDMConfig, VARIANTS, build_idm, export_eva_pt, load_idm, save_idm
from eva_core.idm.checkpoint import read_safetensors
from eva_core.idm.model import resize_square
from eva_core.images import normalize_imagenet, to_uint8
from training.common import (EpochSampler, apply_overrides, check_inputs, epoch_passes, latest_checkpoint, load_config,
                             prepare_output_dir, read_checkpoint, resume_from, run_cli, save_checkpoint)

JOINT_TOL, GRIPPER_TOL = 0.05, 0.5  # EVA's accuracy thresholds (rad; normalised gripper)
PROG = "eva-train-idm"


@dataclass
class IDMTrainConfig(Section):
    """Every setting of eva-train-idm, flat: a key per command-line flag (`--batch-size` is
    `batch_size`). Read from --config YAML, then --set key=value, then the flags given."""

    # data
    data: list[str] = param([], "episode .hdf5 files, directories or LeRobot v3.0 roots (ALOHA/Cobot Magic, RoboTwin, ours)")
    embodiment: str = param(DEFAULT_EMBODIMENT, "name under config/ or a YAML path (action layout)")
    synthetic: int = param(0, "generate N synthetic episodes into OUT/synthetic_data and train on them", ge=0)
    synthetic_frames: int = param(64, "frames per synthetic episode", ge=1)
    synthetic_size: int = param(64, "side of the synthetic frames", unit="px", ge=1)
    camera: str | None = param(None, "camera to train on, a name or a LeRobot key (default: the file's primary camera)")
    fps: float | None = param(None, "override the episodes' frame rate (RoboTwin has none)", unit="Hz", gt=0)
    grippers_in_metres: bool = param(False, "ALOHA files store gripper strokes in metres (Cobot Magic): divide "
                                            "by the embodiment's strokes")
    val_frac: float = param(0.2, "fraction of EPISODES held out for validation", ge=0)
    strict: bool = param(False, "a bad episode file is fatal (default: report it and skip it)")
    limit_tolerance: float = param(0.1, "an episode whose qpos/action leave the embodiment's position limits by "
                                        "more than this is skipped (rad; grippers: normalised)", ge=0, le=10)
    # model
    variant: str = param("resnet18", "IDM variant", choices=VARIANTS)
    image_size: int | None = param(None, "input side (default: the variant's)", unit="px", ge=1)
    fusion: str | None = param(None, "early: frames stacked on channels (EVA); late: shared per-frame encoder "
                                     "(default: the variant's)", choices=FUSIONS)
    backbone_weights: str | None = param(None, "local torchvision ResNet .pth for the backbone (never downloaded)")
    init: str | None = param(None, "start from an IDM checkpoint (our dir or EVA .pt)")
    # optimisation
    epochs: int = param(20, "passes over the training frames", ge=1)
    max_steps: int | None = param(None, "total optimiser steps (overrides epochs)", ge=1)
    batch_size: int = param(32, "windows per step", ge=1)
    lr: float = param(1e-3, "AdamW learning rate", ge=0)
    weight_decay: float = param(1e-4, "AdamW weight decay", ge=0)
    warmup_frac: float = param(0.1, "fraction of the steps in linear warmup (then cosine)", ge=0)
    smooth_l1_beta: float = param(1.0, "SmoothL1 beta", ge=0)
    color_jitter: float = param(0.2, "max brightness/contrast/saturation jitter; widens from 0 over the first half",
                                ge=0)
    flip: float = param(0.0, "probability of a horizontal flip that mirrors the arms (the embodiment's "
                             "mirror_permutation)", ge=0)
    seed: int = param(0, "seed")
    # run
    out: str = param("", "output directory (required)")
    resume: str | None = param(None, "'auto' (newest in OUT/checkpoints) or a checkpoint directory")
    overwrite: bool = param(False, "replace a non-empty OUT (swapped in only once the new run is complete)")
    eval_every: int = param(200, "steps between evaluations", ge=1)
    save_every: int = param(500, "steps between resumable checkpoints", ge=1)
    keep: int = param(2, "resumable checkpoints to keep (0: all)", ge=0)
    log_every: int = param(10, "steps between logged losses", ge=1)
    export_eva: str | None = param(None, "also write the EVA-layout .pt here")
    eval_only: str | None = param(None, "evaluate this IDM checkpoint on the val split and exit")
    threads: int | None = param(None, "torch CPU threads", ge=1)
    cpu: bool = param(False, "force CPU even if a GPU is present")
    mixed_precision: str = param("no", "accelerate mixed precision", choices=("no", "fp16", "bf16"))
    num_workers: int = param(0, "DataLoader worker processes", ge=0)
    no_progress: bool = param(False, "no progress bars")


def parse_args(argv=None) -> IDMTrainConfig:
    """The checked config: IDMTrainConfig defaults < --config YAML < --set < the flags given."""
    S = argparse.SUPPRESS  # a flag not given leaves the config's value
    p = argparse.ArgumentParser(prog=PROG, description="Train the EVA-style inverse dynamics model "
                                "(frames -> the embodiment's action vector).", argument_default=S)
    c = p.add_argument_group("config")
    c.add_argument("--config", default=None, help="YAML of IDMTrainConfig keys (a key per flag: batch_size, ...)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    d = p.add_argument_group("data")
    d.add_argument("--data", nargs="*", help="episode .hdf5 files, directories or LeRobot v3.0 roots (ALOHA/Cobot Magic, RoboTwin, ours)")
    d.add_argument("--embodiment", help="name under config/ or a YAML path (action layout)")
    d.add_argument("--synthetic", type=int, help="generate N synthetic episodes into OUT/synthetic_data and train on them")
    d.add_argument("--synthetic-frames", type=int)
    d.add_argument("--synthetic-size", type=int)
    d.add_argument("--camera", help="camera to train on, a name or a LeRobot key (default: the file's primary camera)")
    d.add_argument("--fps", type=float, help="override the episodes' frame rate (RoboTwin has none)")
    d.add_argument("--grippers-in-metres", action="store_true",
                   help="ALOHA files store gripper strokes in metres (Cobot Magic): divide by the embodiment's strokes")
    d.add_argument("--val-frac", type=float, help="fraction of EPISODES held out for validation")
    d.add_argument("--strict", action="store_true", help="a bad episode file is fatal (default: report it and skip it)")
    d.add_argument("--limit-tolerance", type=float, help="skip an episode whose qpos/action leave the embodiment's "
                   "position limits by more than this (rad; grippers: normalised; default 0.1)")
    m = p.add_argument_group("model")
    m.add_argument("--variant", choices=VARIANTS)
    m.add_argument("--image-size", type=int, help="input side (default: the variant's)")
    m.add_argument("--fusion", choices=FUSIONS,
                   help="early: frames stacked on channels (EVA); late: shared per-frame encoder (default: the variant's)")
    m.add_argument("--backbone-weights", help="local torchvision ResNet .pth for the backbone (never downloaded)")
    m.add_argument("--init", help="start from an IDM checkpoint (our dir or EVA .pt)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int)
    o.add_argument("--max-steps", type=int, help="total optimiser steps (overrides --epochs)")
    o.add_argument("--batch-size", type=int)
    o.add_argument("--lr", type=float)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--warmup-frac", type=float)
    o.add_argument("--smooth-l1-beta", type=float)
    o.add_argument("--color-jitter", type=float, help="max brightness/contrast/saturation jitter; widens from 0 over the first half")
    o.add_argument("--flip", type=float,
                   help="probability of a horizontal flip that mirrors the arms (the embodiment's mirror_permutation)")
    o.add_argument("--seed", type=int)
    r = p.add_argument_group("run")
    r.add_argument("--out", help="output directory (required)")
    r.add_argument("--resume", help="'auto' (newest in OUT/checkpoints) or a checkpoint directory")
    r.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty OUT (swapped in only once the new run is complete)")
    r.add_argument("--eval-every", type=int, help="steps between evaluations")
    r.add_argument("--save-every", type=int, help="steps between resumable checkpoints")
    r.add_argument("--keep", type=int, help="resumable checkpoints to keep")
    r.add_argument("--log-every", type=int)
    r.add_argument("--export-eva", help="also write the EVA-layout .pt here")
    r.add_argument("--eval-only", help="evaluate this IDM checkpoint on the val split and exit")
    r.add_argument("--threads", type=int, help="torch CPU threads")
    r.add_argument("--cpu", action="store_true", help="force CPU even if a GPU is present")
    r.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"))
    r.add_argument("--num-workers", type=int)
    r.add_argument("--no-progress", action="store_true")
    add_debug_arg(r)
    ns = vars(p.parse_args(argv))
    config, overrides = ns.pop("config"), ns.pop("set")
    ns.pop("debug", None)
    cfg = load_config(IDMTrainConfig, config, overrides) if config else \
        IDMTrainConfig.from_dict(apply_overrides({}, overrides), source="--set")
    if ns:  # the flags given, checked by name (e.g. "command line: batch_size: must be >= 1, got 0")
        cfg = IDMTrainConfig.from_dict({**cfg.to_dict(), **ns}, source="command line")
    if not cfg.out:
        raise ConfigError(config or "command line", "", "out", "required: the output directory (--out DIR)")
    return cfg


# ---- data ------------------------------------------------------------------------------------
def split_by_episode(n: int, val_frac: float, seed: int, groups: list | None = None) -> tuple[list[int], list[int]]:
    """Whole episodes go to train or val (never frames of one episode to both). With `groups`
    (a key per episode), whole groups do: an episode and its copies (a VAE round trip) stay together."""
    keys = list(range(n)) if groups is None else list(groups)
    if len(keys) != n:
        raise ValueError(f"groups: {len(keys)} keys for {n} episodes")
    uniq = list(dict.fromkeys(keys))
    if len(uniq) < 2:
        raise ValueError(f"need at least 2 episodes for a train/val split, got {len(uniq)}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_val = min(len(uniq) - 1, max(1, round(len(uniq) * val_frac)))
    val = {uniq[i] for i in order[:n_val]}
    return [i for i in range(n) if keys[i] not in val], [i for i in range(n) if keys[i] in val]


def read_kwargs(path, args, emb: Embodiment) -> dict:
    """Reader options: only the training camera is decoded (saves memory on 3-camera files)."""
    kw = {"camera": args.camera, "cameras": []}
    if args.fps:
        kw["fps"] = args.fps
    if args.grippers_in_metres and not path.is_lerobot and detect_layout(path.path) == "aloha":
        kw["grippers_in_metres"] = emb
    return kw


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, S, S) uint8, resized as IDM.preprocess does."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    return torch.cat([to_uint8(resize_square(c.float().div_(255.0), size)) for c in x.split(64)])


@dataclass
class Clips:
    """The readable episodes, resized to the model input, and the files that were skipped."""

    frames: list = field(default_factory=list)   # (N, 3, S, S) uint8 tensors
    actions: list = field(default_factory=list)  # (N, D) arrays
    files: list = field(default_factory=list)
    groups: list = field(default_factory=list)   # the episode each file is (or was derived from)
    skipped: list = field(default_factory=list)  # (file, reason)

    def summary(self) -> str:
        kept = f"{len(self.files)} of {len(self.files) + len(self.skipped)} episode files"
        if not self.skipped:
            return f"read {kept}"
        return f"read {kept}; skipped {len(self.skipped)}: " + "; ".join(reason for _, reason in self.skipped)


def load_clips(files, size: int, args, emb: Embodiment) -> Clips:
    """Read each episode and keep only its frames resized to the model input (memory stays small).

    A file that cannot be used (unreadable, wrong layout or dims, bad images, NaN actions, no
    frames, qpos/action outside the embodiment's limits) is reported by name and skipped; with
    --strict it is fatal.
    """
    clips = Clips()
    for f in tqdm(files, desc="reading episodes", disable=args.no_progress):
        try:
            ep = read_ref(f, embodiment=emb, **read_kwargs(f, args, emb))
            if ep.action.shape[1] != emb.action_dim:
                raise ValueError(f"{f}: action has {ep.action.shape[1]} dims, embodiment {emb.name!r} "
                                 f"has {emb.action_dim}")
            beyond = limits_problem(ep, emb, args.limit_tolerance)
            if beyond:
                raise ValueError(f"{f}: {beyond}")
        except (ValueError, OSError, KeyError) as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            msg = msg if str(f) in msg else f"{f}: {msg}"
            if args.strict:
                raise UserError(f"{msg} (--strict)") from e
            print(f"{PROG}: skipping {msg}", file=sys.stderr)
            clips.skipped.append((str(f), msg))
            continue
        clips.frames.append(resize_frames(ep.frames, size))
        clips.actions.append(ep.action)
        clips.files.append(str(f))
        clips.groups.append(ep.meta.get("derived_from") or str(Path(str(f)).resolve()))
    return clips


class WindowDataset(Dataset):
    """Every frame t of every clip: the uint8 window frames[t+offsets] (clamped) and action[t]."""

    def __init__(self, frames, actions, offsets):
        self.frames = list(frames)
        self.actions = [torch.as_tensor(a, dtype=torch.float32) for a in actions]
        self.offsets = torch.tensor(offsets)
        self.index = [(e, t) for e, a in enumerate(self.actions) for t in range(len(a))]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        e, t = self.index[i]
        idx = (t + self.offsets).clamp(0, len(self.actions[e]) - 1)
        return self.frames[e][idx], self.actions[e][t]


def augment(x: torch.Tensor, actions: torch.Tensor, jitter: float, flip_p: float, gen: torch.Generator,
            mirror: np.ndarray | None = None):
    """x (B, k, 3, S, S) float [0, 1]: per-sample colour jitter (the same for the k frames of a
    window) and an optional horizontal flip whose action is permuted by `mirror` (the
    embodiment's mirror_permutation: two arms swap; one arm: identity)."""
    b = x.shape[0]
    if jitter > 0:
        u = lambda: (1.0 + jitter * (2 * torch.rand(b, 1, 1, 1, 1, generator=gen) - 1)).to(x.device)  # noqa: E731
        x = x * u()  # brightness
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        x = (x - mean) * u() + mean  # contrast
        gray = (0.299 * x[:, :, 0:1] + 0.587 * x[:, :, 1:2] + 0.114 * x[:, :, 2:3])
        x = (x - gray) * u() + gray  # saturation
        x = x.clamp(0, 1)
    if flip_p > 0:
        if mirror is None:
            raise ValueError("augment: a flip needs the embodiment's mirror_permutation")
        flip = (torch.rand(b, generator=gen) < flip_p).to(x.device)
        if flip.any():
            x = torch.where(flip.view(b, 1, 1, 1, 1), x.flip(-1), x)
            mirrored = actions[:, torch.tensor(np.array(mirror), device=actions.device)]
            actions = torch.where(flip.view(b, 1), mirrored, actions)
    return x, actions


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div_(255.0)


def model_input(x: torch.Tensor) -> torch.Tensor:
    """(B, k, 3, S, S) [0, 1] -> (B, 3k, S, S) ImageNet-normalised, as IDM.preprocess does."""
    return normalize_imagenet(x).flatten(1, 2)


# ---- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: IDM, loader, device, train_mean: torch.Tensor, emb: Embodiment) -> dict:
    """Per-joint MAE, EVA accuracy (joints within 0.05 rad, grippers within 0.5), and the
    predict-the-train-mean baseline on the same frames. Non-finite predictions are an error."""
    model.eval()
    preds, targets = [], []
    for x, a in loader:
        preds.append(model.denormalize(model(model_input(to_unit(x.to(device))))).float().cpu())
        targets.append(a.float().cpu())
    model.train()
    pred, tgt = torch.cat(preds), torch.cat(targets)
    if not torch.isfinite(pred).all():
        raise UserError("the IDM predicts NaN/inf on the validation split (training diverged? lower --lr)")
    err = (pred - tgt).abs()
    base_err = (train_mean.cpu().float() - tgt).abs()
    names, joints = emb.joint_names, torch.from_numpy(~emb.is_gripper)
    tol = torch.where(joints, JOINT_TOL, GRIPPER_TOL)
    ok = err <= tol
    return {
        "frames": int(len(tgt)),
        "mae": float(err.mean()), "baseline_mae": float(base_err.mean()),
        "mae_joints": float(err[:, joints].mean()),
        "baseline_mae_joints": float(base_err[:, joints].mean()),
        "accuracy_per_dim": float(ok.float().mean()),  # fraction of (frame, dim) within tolerance
        "accuracy_all_dims": float(ok.all(dim=1).float().mean()),  # frames with every dim within tolerance
        "per_joint_mae": {n: float(v) for n, v in zip(names, err.mean(0))},
        "per_joint_baseline_mae": {n: float(v) for n, v in zip(names, base_err.mean(0))},
    }


# ---- checkpoints (training/common.save_checkpoint in the IDM's layout: safetensors + JSON) -------
def checkpoint(acc, out: Path, raw: IDM, optimizer, scheduler, step: int, epoch: int, history: dict, keep: int) -> Path:
    """checkpoints/step_N/: idm/, optimizer.safetensors (its tensors) and state.json (step, epoch,
    history, the optimizer's param groups and scalars, the scheduler). Call it on every process."""
    tensors, scalars = {}, {}
    opt_sd = optimizer.state_dict()
    for pid, st in opt_sd["state"].items():
        for name, v in st.items():
            (tensors if torch.is_tensor(v) else scalars)[f"{pid}.{name}"] = v.detach().cpu().contiguous() if torch.is_tensor(v) else v
    extra = {"epoch": epoch, "param_groups": opt_sd["param_groups"], "optimizer_scalars": scalars,
             "scheduler": scheduler.state_dict(), "history": history}

    def write(tmp: Path) -> None:
        save_idm(raw, tmp / "idm")
        save_file(tensors, str(tmp / "optimizer.safetensors"))

    return save_checkpoint(acc, out, step, extra, keep, save_state=write)


def load_checkpoint(path: Path) -> tuple[int, dict, dict, dict]:
    """(step, state.json extras, optimizer state dict, scheduler state dict) of a resumable
    checkpoint; the model itself is loaded with load_idm(path / "idm")."""
    for name in ("state.json", "optimizer.safetensors", "idm"):
        if not (path / name).exists():
            raise UserError(f"{path}: not a resumable checkpoint (missing {name})")
    step, state = read_checkpoint(path)
    try:
        opt_state: dict = {}
        for key, v in {**read_safetensors(path / "optimizer.safetensors"), **state["optimizer_scalars"]}.items():
            pid, name = key.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = v
        return step, state, {"state": opt_state, "param_groups": state["param_groups"]}, state["scheduler"]
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise UserError(f"{path / 'state.json'}: not a trainer state ({type(e).__name__}: {e})") from e


def plot_history(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    if history["train"]:
        s, loss = zip(*history["train"])
        ax[0].plot(s, loss, lw=1)
    ax[0].set(title="train SmoothL1 (normalised)", xlabel="step", yscale="log")
    if history["val"]:
        s, mae, base = zip(*history["val"])
        ax[1].plot(s, mae, "o-", label="IDM")
        ax[1].plot(s, base, "--", label="predict-the-mean")
        ax[1].legend()
    ax[1].set(title="val MAE (action units)", xlabel="step")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# ---- stages --------------------------------------------------------------------------------------
def check_outputs(args) -> Path:
    """Fail before any work if an output cannot be written (--out, --export-eva)."""
    out = check_writable(args.out, kind="dir")
    if args.export_eva:
        check_writable(args.export_eva, kind="file")
    return out


def load_source(args, emb: Embodiment, resume: Path | None) -> IDM | None:
    """The --eval-only, resumed or --init model, loaded (so checked) before any output is written;
    None for a fresh model."""
    if not (args.eval_only or resume is not None or args.init):
        return None
    source = args.eval_only or (resume / "idm" if resume is not None else args.init)
    model = load_idm(source)
    check_action_dim(model, emb, source)
    return model


def check_action_dim(model: IDM, emb: Embodiment, source) -> None:
    if model.config.action_dim != emb.action_dim:
        raise UserError(f"{source}: the IDM outputs {model.config.action_dim} dims, embodiment "
                        f"{emb.name!r} has {emb.action_dim}")


def episode_files(args, out: Path, acc, emb: Embodiment) -> list[Path]:
    data = list(args.data)
    if args.synthetic:
        if acc.is_main_process:
            make_synthetic_dataset(out / "synthetic_data", args.synthetic, args.synthetic_frames,
                                   args.synthetic_size, seed=args.seed, progress=not args.no_progress, embodiment=emb)
        acc.wait_for_everyone()
        data.append(str(out / "synthetic_data"))
    files = find_episodes(*data, embodiment=emb)
    if not files:
        raise UserError("no episodes: pass --data DIR/FILES or --synthetic N")
    return files


def build_model(args, emb: Embodiment, source: IDM | None, n_files: int) -> IDM:
    """`source` (load_source's model), else a fresh one; its output must be the embodiment's
    action vector."""
    if source is not None:
        return source
    model = build_idm(IDMConfig.for_embodiment(
        emb, variant=args.variant, image_size=args.image_size, fusion=args.fusion,
        backbone_weights=args.backbone_weights, extra={"train_files": n_files}))
    check_action_dim(model, emb, "--variant")
    return model


def split_clips(clips: Clips, args):
    if len(clips.files) < 2:
        raise UserError(f"need at least 2 readable episodes for a train/val split; {clips.summary()}")
    train_ids, val_ids = split_by_episode(len(clips.files), args.val_frac, args.seed, clips.groups)
    pick = lambda ids: ([clips.frames[i] for i in ids], [clips.actions[i] for i in ids])  # noqa: E731
    return train_ids, val_ids, pick(train_ids), pick(val_ids)


def set_train_stats(model: IDM, train_actions: np.ndarray, args, resumed: bool) -> None:
    """Normalisation stats of the train split, unless the model brings its own (resume, --init
    with stats, --eval-only). An EVA .pt without stats loads as mean 0 / std 1."""
    unset = bool(torch.all(model.action_mean == 0) and torch.all(model.action_std == 1))
    if not (args.eval_only or resumed) and (not args.init or unset):
        model.set_normalization(train_actions.mean(0), np.maximum(train_actions.std(0), 1e-3))  # floor: constant dims


def train_loop(args, acc, model, raw, optimizer, scheduler, train_dl, val_dl, train_mean, emb, out: Path,
               step: int, epoch: int, history: dict, total: int) -> tuple[dict | None, int]:
    aug_gen = torch.Generator()
    mirror = emb.mirror_permutation
    bar = tqdm(total=total, initial=step, desc="train idm", disable=args.no_progress or not acc.is_main_process)
    model.train()
    metrics = None
    # exact resume: the loader's order depends on (seed, epoch) and the resumed pass skips the
    # batches already used; augmentation and dropout draw from per-step seeds
    for epoch, passes in epoch_passes(acc, train_dl, step, 1, max(1, len(train_dl))):
        if step >= total:
            break
        for x, a in passes:
            step_seed = args.seed * 1_000_003 + step * 997 + acc.process_index
            aug_gen.manual_seed(step_seed)
            torch.manual_seed(step_seed)
            jitter = args.color_jitter * min(1.0, step / max(1.0, 0.5 * total))  # widens over training
            x, a = augment(to_unit(x), a, jitter, args.flip, aug_gen, mirror)
            with acc.autocast():
                pred = model(model_input(x))
                loss = F.smooth_l1_loss(pred.float(), raw.normalize_actions(a), beta=args.smooth_l1_beta)
            if not torch.isfinite(loss):
                raise UserError(f"the training loss is {float(loss)} at step {step + 1} (lower --lr?); "
                                f"the last checkpoint is in {out / 'checkpoints'}")
            optimizer.zero_grad(set_to_none=True)
            acc.backward(loss)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == total:
                lv = float(acc.gather(loss.detach()).mean())
                history["train"].append((step, lv))
                acc.log({"train/loss": lv, "train/lr": scheduler.get_last_lr()[0], "train/jitter": jitter}, step=step)
                bar.set_postfix(loss=f"{lv:.4f}")
            if acc.is_main_process and (step % args.eval_every == 0 or step == total):
                metrics = evaluate(raw, val_dl, acc.device, train_mean, emb)
                history["val"].append((step, metrics["mae"], metrics["baseline_mae"]))
                acc.log({"val/mae": metrics["mae"], "val/baseline_mae": metrics["baseline_mae"],
                         "val/accuracy_per_dim": metrics["accuracy_per_dim"]}, step=step)
                plot_history(history, out / "loss.png")
            if step % args.save_every == 0 or step == total:
                checkpoint(acc, out, raw, optimizer, scheduler, step, epoch, history, args.keep)
            if step >= total:
                break
    bar.close()
    return metrics, step


def make_loaders(args, cfg: IDMConfig, train, val) -> tuple[DataLoader, DataLoader]:
    """Window datasets of the (frames, actions) lists; the train loader shuffles (seeded)."""
    train_ds = WindowDataset(*train, cfg.frame_offsets)
    val_ds = WindowDataset(*val, cfg.frame_offsets)
    train_dl = DataLoader(train_ds, batch_size=args.batch_size, sampler=EpochSampler(len(train_ds), args.seed),
                          drop_last=len(train_ds) > args.batch_size, num_workers=args.num_workers)
    val_dl = DataLoader(val_ds, batch_size=args.batch_size * 2, shuffle=False, num_workers=args.num_workers)
    return train_dl, val_dl


def restore(resumed, resume: Path | None, optimizer, scheduler, acc) -> tuple[int, int, dict]:
    """(step, epoch, history): zeros for a fresh run, else the checkpoint's (optimizer and
    scheduler state loaded through training/common.resume_from)."""
    if resumed is None:
        return 0, 0, {"train": [], "val": []}
    _, _, opt_sd, sched_sd = resumed

    def load(path: Path) -> None:
        try:
            optimizer.load_state_dict(opt_sd)
            scheduler.load_state_dict(sched_sd)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: optimizer/scheduler state does not match the model: {e}") from e

    step, state = resume_from(acc, resume, load_state=load)
    try:
        epoch, history = int(state["epoch"]), state["history"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{resume / 'state.json'}: not a trainer state ({type(e).__name__}: {e})") from e
    acc.print(f"resumed from {resume} at step {step}")
    return step, epoch, history


def save_outputs(args, out: Path, raw: IDM, optimizer, step: int, history: dict, metrics: dict, info: dict) -> None:
    """idm/, the optional EVA .pt, eval.json and loss.png (each written atomically)."""
    cfg = raw.config
    save_idm(raw, out / "idm", extra={"step": step, "val_mae": metrics["mae"], "embodiment": info["embodiment"]})
    if args.export_eva:
        export_eva_pt(raw, args.export_eva, optimizer_state=optimizer.state_dict(), step=step)
    write_json(out / "eval.json", {"step": step, **info, "variant": cfg.variant, "fusion": cfg.fusion,
                                   "image_size": cfg.image_size, **metrics})
    plot_history(history, out / "loss.png")
    print(f"val MAE {metrics['mae']:.4f} vs predict-the-mean {metrics['baseline_mae']:.4f} "
          f"(joints {metrics['mae_joints']:.4f} vs {metrics['baseline_mae_joints']:.4f}); "
          f"accuracy per dim {metrics['accuracy_per_dim']:.3f}, all dims {metrics['accuracy_all_dims']:.3f}")


# ---- main ------------------------------------------------------------------------------------------
def run(argv=None) -> dict:
    """Train (or --eval-only) and return the final validation metrics."""
    args = parse_args(argv)
    check_outputs(args)
    emb = load_embodiment(args.embodiment)
    # every input is checked before anything is written: data paths, checkpoint, --init model
    if args.data:
        find_episodes(*args.data, embodiment=emb)  # a missing path or bad dataset is an error here
    check_inputs(**{"--backbone-weights": args.backbone_weights})
    resume = latest_checkpoint(Path(args.out)) if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    resumed = load_checkpoint(resume) if resume is not None else None
    source = load_source(args, emb, resume)
    run_dir = prepare_output_dir(args.out, resume=bool(args.resume), overwrite=args.overwrite, flag="--out")
    out = run_dir.path

    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_cosine_schedule_with_warmup

    if args.threads:
        torch.set_num_threads(args.threads)
    acc = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision, log_with="tensorboard", project_dir=str(out))
    set_seed(args.seed)

    files = episode_files(args, out, acc, emb)
    model = build_model(args, emb, source, len(files))
    cfg = model.config
    clips = load_clips(files, cfg.image_size, args, emb)
    acc.print(clips.summary())
    train_ids, val_ids, (train_frames, train_acts), (val_frames, val_acts) = split_clips(clips, args)
    train_actions = np.concatenate(train_acts)
    train_mean = torch.as_tensor(train_actions.mean(0), dtype=torch.float32)
    set_train_stats(model, train_actions, args, resumed is not None)
    train_dl, val_dl = make_loaders(args, cfg, (train_frames, train_acts), (val_frames, val_acts))
    skipped = [f for f, _ in clips.skipped]

    if args.eval_only:
        model = model.to(acc.device)
        metrics = evaluate(model, val_dl, acc.device, train_mean, emb)
        write_json(out / "eval.json", {"checkpoint": args.eval_only, "skipped_files": skipped, **metrics})
        if args.export_eva:
            export_eva_pt(model, args.export_eva)
        acc.print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=1))
        acc.end_training()
        if acc.is_main_process:
            run_dir.commit()
        return metrics

    total = args.max_steps or args.epochs * max(1, len(train_dl))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_frac * total), total)
    step, epoch, history = restore(resumed, resume, optimizer, scheduler, acc)
    model, optimizer, train_dl = acc.prepare(model, optimizer, train_dl)
    raw = acc.unwrap_model(model)
    hparams = {k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool))}
    # a resumed run's TensorBoard drops the killed run's events past the checkpoint
    purge = {"tensorboard": {"purge_step": step + 1 if step else 0}} if args.resume else {}
    acc.init_trackers("tb", config=hparams, init_kwargs=purge)

    metrics, step = train_loop(args, acc, model, raw, optimizer, scheduler, train_dl, val_dl, train_mean, emb, out,
                               step, epoch, history, total)
    if acc.is_main_process:
        if metrics is None:  # resumed at the end: evaluate once
            metrics = evaluate(raw, val_dl, acc.device, train_mean, emb)
        info = {"embodiment": emb.name, "train_episodes": len(train_ids), "val_episodes": len(val_ids),
                "train_frames": len(train_dl.dataset), "skipped_files": skipped}
        save_outputs(args, out, raw, optimizer, step, history, metrics, info)
    acc.end_training()
    if acc.is_main_process:
        run_dir.commit()
    return metrics


def main(argv=None) -> int:
    """Console entry point (`eva-train-idm`): one-line errors, exit 2; --debug for the traceback."""
    return run_cli(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
