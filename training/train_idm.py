"""Train the inverse dynamics model on robot episodes (`eva-train-idm`).

Read top to bottom: arguments -> episodes -> split by episode -> model + normalisation stats ->
AdamW + cosine/warmup -> loop (augment, SmoothL1 on normalised actions) -> evaluate -> save.
accelerate makes the same script run on CPU, one GPU or many (`accelerate launch`).

    eva-train-idm --synthetic 24 --variant tiny --out runs/idm_synth --epochs 30   # CPU demo
    eva-train-idm --data /data/cobot_magic --variant resnet18 --out runs/idm_r18 --flip 0.5
    eva-train-idm --resume auto --out runs/idm_r18            # continue from the newest checkpoint
    eva-train-idm --eval-only runs/idm_r18/idm --data ... --export-eva runs/idm_r18/IDM.pt

Outputs in --out: idm/ (safetensors + config.json + normalisation), checkpoints/step_*/ (resume),
tb/ (TensorBoard), loss.png, eval.json, and optionally an EVA-layout .pt (--export-eva).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from eva_core.atomic_io import atomic_dir, write_json
from eva_core.data import detect_layout, find_episode_files, make_synthetic_dataset, read_episode
from eva_core.embodiment import load_embodiment
from eva_core.idm import FUSIONS, IDM, IDMConfig, VARIANTS, build_idm, export_eva_pt, load_idm, save_idm
from eva_core.idm.model import resize_square

JOINT_TOL, GRIPPER_TOL = 0.05, 0.5  # EVA's accuracy thresholds (rad; normalised gripper)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the EVA-style inverse dynamics model (frames -> 14-D actions).")
    d = p.add_argument_group("data")
    d.add_argument("--data", nargs="*", default=[], help="episode .hdf5 files or directories (ALOHA/Cobot Magic, RoboTwin, ours)")
    d.add_argument("--synthetic", type=int, default=0, help="generate N synthetic episodes into OUT/synthetic_data and train on them")
    d.add_argument("--synthetic-frames", type=int, default=64)
    d.add_argument("--synthetic-size", type=int, default=64)
    d.add_argument("--camera", default=None, help="camera to train on (default: the file's primary camera)")
    d.add_argument("--fps", type=float, default=None, help="override the episodes' frame rate (RoboTwin has none)")
    d.add_argument("--gripper-stroke-m", type=float, default=None,
                   help="ALOHA files with gripper strokes in metres (Cobot Magic: 0.07): normalise them to [0, 1]")
    d.add_argument("--val-frac", type=float, default=0.2, help="fraction of EPISODES held out for validation")
    m = p.add_argument_group("model")
    m.add_argument("--variant", choices=VARIANTS, default="resnet18")
    m.add_argument("--image-size", type=int, default=None, help="input side (default: the variant's)")
    m.add_argument("--fusion", choices=FUSIONS, default=None,
                   help="early: frames stacked on channels (EVA); late: shared per-frame encoder (default: the variant's)")
    m.add_argument("--backbone-weights", default=None, help="local torchvision ResNet .pth for the backbone (never downloaded)")
    m.add_argument("--init", default=None, help="start from an IDM checkpoint (our dir or EVA .pt)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=20)
    o.add_argument("--max-steps", type=int, default=None, help="total optimiser steps (overrides --epochs)")
    o.add_argument("--batch-size", type=int, default=32)
    o.add_argument("--lr", type=float, default=1e-3)
    o.add_argument("--weight-decay", type=float, default=1e-4)
    o.add_argument("--warmup-frac", type=float, default=0.1)
    o.add_argument("--smooth-l1-beta", type=float, default=1.0)
    o.add_argument("--color-jitter", type=float, default=0.2, help="max brightness/contrast/saturation jitter; widens from 0 over the first half")
    o.add_argument("--flip", type=float, default=0.0, help="probability of a horizontal flip that swaps the two arms")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--resume", default=None, help="'auto' (newest in OUT/checkpoints) or a checkpoint directory")
    r.add_argument("--eval-every", type=int, default=200, help="steps between evaluations")
    r.add_argument("--save-every", type=int, default=500, help="steps between resumable checkpoints")
    r.add_argument("--keep", type=int, default=2, help="resumable checkpoints to keep")
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--export-eva", default=None, help="also write the EVA-layout .pt here")
    r.add_argument("--eval-only", default=None, help="evaluate this IDM checkpoint on the val split and exit")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    r.add_argument("--cpu", action="store_true", help="force CPU even if a GPU is present")
    r.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    r.add_argument("--num-workers", type=int, default=0)
    r.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ---- data ------------------------------------------------------------------------------------
def split_by_episode(n: int, val_frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Whole episodes go to train or val (never frames of one episode to both)."""
    if n < 2:
        raise ValueError(f"need at least 2 episodes for a train/val split, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_frac)))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def read_kwargs(path, args) -> dict:
    """Reader options: only the training camera is decoded (saves memory on 3-camera files)."""
    kw = {"camera": args.camera, "cameras": []}
    if args.fps:
        kw["fps"] = args.fps
    if args.gripper_stroke_m and detect_layout(path) == "aloha":
        kw["gripper_stroke_m"] = args.gripper_stroke_m
    return kw


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, S, S) uint8, resized as IDM.preprocess does."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    out = [resize_square(c.float(), size) for c in x.split(64)]
    return torch.cat(out).round_().clamp_(0, 255).to(torch.uint8)


class WindowDataset(Dataset):
    """Every frame t of every clip: the uint8 window frames[t+offsets] (clamped) and action[t].

    clips: list of (frames (N, 3, S, S) uint8 tensor, actions (N, D) array), already resized.
    """

    def __init__(self, clips, offsets):
        self.frames = [f for f, _ in clips]
        self.actions = [torch.as_tensor(a, dtype=torch.float32) for _, a in clips]
        self.offsets = torch.tensor(offsets)
        self.index = [(e, t) for e, a in enumerate(self.actions) for t in range(len(a))]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        e, t = self.index[i]
        idx = (t + self.offsets).clamp(0, len(self.actions[e]) - 1)
        return self.frames[e][idx], self.actions[e][t]


def load_clips(files, size: int, args, dof: int) -> list:
    """Read each episode and keep only its frames resized to the model input (memory stays small)."""
    clips = []
    for f in tqdm(files, desc="reading episodes", disable=args.no_progress):
        ep = read_episode(f, **read_kwargs(f, args))
        if ep.action.shape[1] != dof:
            raise SystemExit(f"{f}: action has {ep.action.shape[1]} dims, the embodiment has {dof}")
        clips.append((resize_frames(ep.frames, size), ep.action))
    return clips


def augment(x: torch.Tensor, actions: torch.Tensor, jitter: float, flip_p: float, gen: torch.Generator):
    """x (B, k, 3, S, S) float [0, 1]: per-sample colour jitter (the same for the k frames of a
    window) and an optional horizontal flip that swaps the left/right arm halves of the action."""
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
        flip = (torch.rand(b, generator=gen) < flip_p).to(x.device)
        if flip.any():
            x = torch.where(flip.view(b, 1, 1, 1, 1), x.flip(-1), x)
            half = actions.shape[1] // 2
            swapped = torch.cat([actions[:, half:], actions[:, :half]], dim=1)
            actions = torch.where(flip.view(b, 1), swapped, actions)
    return x, actions


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div_(255.0)


def normalise_pixels(model: IDM, x: torch.Tensor) -> torch.Tensor:
    """(B, k, 3, S, S) [0, 1] -> (B, 3k, S, S) ImageNet-normalised."""
    mean, std = model.pixel_mean.unsqueeze(1), model.pixel_std.unsqueeze(1)
    return ((x - mean) / std).flatten(1, 2)


# ---- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: IDM, loader, device, train_mean: torch.Tensor, emb) -> dict:
    """Per-joint MAE, EVA accuracy (joints within 0.05 rad, grippers within 0.5), and the
    predict-the-train-mean baseline on the same frames. `emb` names the dims and marks the grippers."""
    model.eval()
    preds, targets = [], []
    for x, a in loader:
        x = normalise_pixels(model, to_unit(x.to(device)))
        preds.append(model.denormalize(model(x)).float().cpu())
        targets.append(a.float().cpu())
    model.train()
    pred, tgt = torch.cat(preds), torch.cat(targets)
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
        "accuracy_all_dims": float(ok.all(dim=1).float().mean()),  # frames with all 14 within tolerance
        "per_joint_mae": {n: float(v) for n, v in zip(names, err.mean(0))},
        "per_joint_baseline_mae": {n: float(v) for n, v in zip(names, base_err.mean(0))},
    }


# ---- checkpoints (safetensors + JSON, resumable) -------------------------------------------------
def save_checkpoint(ckpt_dir: Path, model: IDM, optimizer, scheduler, step: int, epoch: int, history: dict, keep: int):
    tensors, scalars = {}, {}
    opt_sd = optimizer.state_dict()
    for pid, st in opt_sd["state"].items():
        for name, v in st.items():
            (tensors if torch.is_tensor(v) else scalars)[f"{pid}.{name}"] = v.detach().cpu().contiguous() if torch.is_tensor(v) else v
    state = {"step": step, "epoch": epoch, "param_groups": opt_sd["param_groups"], "optimizer_scalars": scalars,
             "scheduler": scheduler.state_dict(), "history": history}
    dest = ckpt_dir / f"step_{step:08d}"
    with atomic_dir(dest) as tmp:
        save_idm(model, tmp / "idm")
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1) + "\n")
    for old in sorted(ckpt_dir.glob("step_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def load_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(trainer state, optimizer state dict, scheduler state dict) of a resumable checkpoint;
    the model itself is loaded with load_idm(path / "idm")."""
    for name in ("trainer_state.json", "optimizer.safetensors", "idm"):
        if not (path / name).exists():
            raise SystemExit(f"{path}: not a resumable checkpoint (missing {name})")
    state = json.loads((path / "trainer_state.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    opt_state: dict = {}
    for key, v in {**tensors, **state["optimizer_scalars"]}.items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = v
    return state, {"state": opt_state, "param_groups": state["param_groups"]}, state["scheduler"]


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    return ckpts[-1] if ckpts else None


def plot_history(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eva_core.atomic_io import atomic_path

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


# ---- main ------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    """Console entry point (`eva-train-idm`)."""
    run(argv)


def run(argv=None) -> dict:
    """Train (or --eval-only) and return the final validation metrics."""
    args = parse_args(argv)
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_cosine_schedule_with_warmup

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    acc = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision, log_with="tensorboard", project_dir=str(out))
    set_seed(args.seed)
    emb = load_embodiment()

    # Episode files -> split by episode.
    if args.synthetic:
        if acc.is_main_process:
            make_synthetic_dataset(out / "synthetic_data", args.synthetic, args.synthetic_frames,
                                   args.synthetic_size, seed=args.seed, progress=not args.no_progress)
        acc.wait_for_everyone()
        args.data = [*args.data, str(out / "synthetic_data")]
    files = find_episode_files(*args.data)
    if not files:
        raise SystemExit("no episodes: pass --data DIR/FILES or --synthetic N")
    train_ids, val_ids = split_by_episode(len(files), args.val_frac, args.seed)

    # Model: fresh, from --init, or from a resumable checkpoint.
    resume = latest_checkpoint(out) if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    resumed = load_checkpoint(resume) if resume is not None else None  # validates it before any work
    if args.eval_only:
        model = load_idm(args.eval_only)
    elif resume is not None:
        model = load_idm(resume / "idm")
    elif args.init:
        model = load_idm(args.init)
    else:
        model = build_idm(IDMConfig(variant=args.variant, image_size=args.image_size, fusion=args.fusion,
                                    backbone_weights=args.backbone_weights, extra={"train_files": len(files)}))
    cfg = model.config
    clips = load_clips(files, cfg.image_size, args, emb.dof)
    train_actions = np.concatenate([clips[i][1] for i in train_ids])
    train_mean = torch.as_tensor(train_actions.mean(0), dtype=torch.float32)
    unset = bool(torch.all(model.action_mean == 0) and torch.all(model.action_std == 1))  # e.g. an EVA .pt without stats
    if not (args.eval_only or resume is not None) and (not args.init or unset):  # stats of the train split
        model.set_normalization(train_actions.mean(0), np.maximum(train_actions.std(0), 1e-3))  # floor: constant dims
    train_ds = WindowDataset([clips[i] for i in train_ids], cfg.frame_offsets)
    val_ds = WindowDataset([clips[i] for i in val_ids], cfg.frame_offsets)
    gen = torch.Generator().manual_seed(args.seed)
    train_dl = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, drop_last=len(train_ds) > args.batch_size,
                          num_workers=args.num_workers, generator=gen)
    val_dl = DataLoader(val_ds, batch_size=args.batch_size * 2, shuffle=False, num_workers=args.num_workers)

    if args.eval_only:
        model = model.to(acc.device)
        metrics = evaluate(model, val_dl, acc.device, train_mean, emb)
        write_json(out / "eval.json", {"checkpoint": args.eval_only, **metrics})
        if args.export_eva:
            export_eva_pt(model, args.export_eva)
        acc.print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=1))
        acc.end_training()
        return metrics

    total = args.max_steps or args.epochs * max(1, len(train_dl))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_frac * total), total)
    step, epoch, history = 0, 0, {"train": [], "val": []}
    if resumed is not None:
        state, opt_sd, sched_sd = resumed
        optimizer.load_state_dict(opt_sd)
        scheduler.load_state_dict(sched_sd)
        step, epoch, history = state["step"], state["epoch"], state["history"]
        acc.print(f"resumed from {resume} at step {step}")
    model, optimizer, train_dl = acc.prepare(model, optimizer, train_dl)
    raw = acc.unwrap_model(model)
    hparams = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
    acc.init_trackers("tb", config=hparams)
    aug_gen = torch.Generator().manual_seed(args.seed + step)

    bar = tqdm(total=total, initial=step, desc="train idm", disable=args.no_progress or not acc.is_main_process)
    model.train()
    metrics = None
    while step < total:
        for x, a in train_dl:
            jitter = args.color_jitter * min(1.0, step / max(1.0, 0.5 * total))  # widens over training
            x, a = augment(to_unit(x), a, jitter, args.flip, aug_gen)
            with acc.autocast():
                pred = model(normalise_pixels(raw, x))
                loss = F.smooth_l1_loss(pred.float(), raw.normalize_actions(a), beta=args.smooth_l1_beta)
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
            if acc.is_main_process and (step % args.save_every == 0 or step == total):
                save_checkpoint(out / "checkpoints", raw, optimizer, scheduler, step, epoch, history, args.keep)
            if step >= total:
                break
        epoch += 1
    bar.close()

    if acc.is_main_process:
        if metrics is None:  # resumed at the end: evaluate once
            metrics = evaluate(raw, val_dl, acc.device, train_mean, emb)
        save_idm(raw, out / "idm", extra={"step": step, "val_mae": metrics["mae"]})
        if args.export_eva:
            export_eva_pt(raw, args.export_eva, optimizer_state=optimizer.state_dict(), step=step)
        summary = {"step": step, "train_episodes": len(train_ids), "val_episodes": len(val_ids),
                   "train_frames": len(train_ds), "variant": cfg.variant, "fusion": cfg.fusion, "image_size": cfg.image_size, **metrics}
        write_json(out / "eval.json", summary)
        plot_history(history, out / "loss.png")
        acc.print(f"val MAE {metrics['mae']:.4f} vs predict-the-mean {metrics['baseline_mae']:.4f} "
                  f"(joints {metrics['mae_joints']:.4f} vs {metrics['baseline_mae_joints']:.4f}); "
                  f"accuracy per dim {metrics['accuracy_per_dim']:.3f}, all dims {metrics['accuracy_all_dims']:.3f}")
    acc.end_training()
    return metrics


if __name__ == "__main__":
    main()
