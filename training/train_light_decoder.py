"""Train a light decoder to reproduce a world model's Wan VAE decode (latents -> VAE-decoded frames).

    python -m training.train_light_decoder --config config/training/light_decoder_demo.yaml --out runs/light_decoder
    python -m training.train_light_decoder --set world_model=checkpoints/demo --set data.random=12 --out runs/ld
    python -m training.train_light_decoder --config ld.yaml --set train.steps=20000 --set data.sources=[/data/eps] --out runs/ld

Read top to bottom: config (LightDecoderTrainConfig: YAML < --set; a typo is a one-line error before
the output is touched) -> the world model's VAE (from its `world_model:` YAML or a checkpoint
directory holding world_model_grpo.yaml) -> clips of `num_frames` frames at the world model's size,
from episodes (`data.sources`), synthetic stick-figure episodes (`data.synthetic`) or smooth random
videos (`data.random`) -> VAE encode, then VAE decode: the (latents, frames) pairs -> AdamW on MSE,
with a held-out split -> save.
Outputs in --out, written to a temp directory and renamed at the end (an existing non-empty --out
is refused without --overwrite): light_decoder/ (config.json + model.safetensors), tb/
(TensorBoard), loss.png, summary.json, config.yaml (the resolved config).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from eva_core.atomic_io import atomic_dir, write_json, write_text
from eva_core.cli import UserError, add_debug_arg, add_overwrite_arg, cli_main
from eva_core.config import Section, param
from eva_core.data.video_clips import fit_frames
from eva_core.world_model import WorldModelConfig, encoders
from eva_core.world_model.light_decoder import LightDecoder, LightDecoderConfig, save_light_decoder
from eva_core.world_model.loading import load_vae
from eva_core.world_model.yaml_file import read_world_model_yaml
from training.common import apply_overrides, check_inputs, load_config

PROG = "train_light_decoder"


# ---- config ------------------------------------------------------------------------------------------
@dataclass
class DataSection(Section):
    sources: list[str] = param([], "episode .hdf5 files or directories")
    synthetic: int = param(0, "N synthetic stick-figure episodes (in memory)", ge=0)
    random: int = param(0, "N smooth random videos of num_frames frames", ge=0)
    episode_frames: int = param(48, "frames per synthetic episode", ge=1)
    clip_stride: int = param(4, "frames between clip starts in an episode", ge=1)
    val_fraction: float = param(0.15, "held-out fraction of the clips", ge=0, lt=1)


@dataclass
class TrainSection(Section):
    channels: list[int] = param([64, 32, 16, 16], "decoder widths (latent resolution first; one per x2 upsampling)")
    steps: int = param(1000, "optimiser steps", ge=1)
    batch_size: int = param(8, "clips per step", ge=1)
    lr: float = param(2e-3, "AdamW peak learning rate (warm-up, then cosine)", gt=0)
    latent_noise: float = param(0.0, "std of Gaussian noise added to training latents (robustness to "
                                     "generated latents)", ge=0)
    eval_every: int = param(100, "steps between held-out evaluations", ge=1)
    seed: int = param(0, "torch / numpy seed (clip split, batches, synthetic data)")
    device: str = param("auto", "auto (cuda if available), cpu, cuda, cuda:1 ...")

    def validate(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            self.error("channels", f"must list positive widths, got {self.channels}")


@dataclass
class LightDecoderTrainConfig(Section):
    """The whole light-decoder trainer config (config/training/light_decoder_demo.yaml)."""

    world_model: str = param("", "a YAML with a world_model: section, or a checkpoint directory holding "
                                 "world_model_grpo.yaml / world_model_sft.yaml / world_model.yaml")
    data: DataSection = param(DataSection, "where the training frames come from")
    train: TrainSection = param(TrainSection, "decoder size and optimiser")

    def validate(self) -> None:
        if not self.world_model:
            self.error("world_model", "required: the world model whose VAE decode is reproduced")
        d = self.data
        if not (d.sources or d.synthetic or d.random):
            self.error("data", "give training frames: sources, synthetic N and/or random N")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML with world_model / data / train (LightDecoderTrainConfig)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    add_overwrite_arg(p)
    add_debug_arg(p)
    return p.parse_args(argv)


def read_config(a: argparse.Namespace) -> LightDecoderTrainConfig:
    """YAML (optional) < --set; ConfigError names the file (or --set) and the key."""
    if a.config:
        return load_config(LightDecoderTrainConfig, a.config, a.set)
    return LightDecoderTrainConfig.from_dict(apply_overrides({}, a.set), source="--set")


# ---- the world model's VAE ---------------------------------------------------------------------------
def world_model_config(path: str | Path) -> tuple[WorldModelConfig, Path]:
    """(config, YAML file) from a `world_model:` YAML or a checkpoint directory (paths resolved)."""
    try:
        return read_world_model_yaml(path)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None


# ---- clips -------------------------------------------------------------------------------------------
def random_video(frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour fields drifting over time, (T, H, W, 3) uint8."""
    lo = torch.from_numpy(rng.standard_normal((1, 3, 3, 5, 5)).astype(np.float32))
    v = F.interpolate(lo, size=(frames, height, width), mode="trilinear", align_corners=False)[0]
    v = (v - v.min()) / (v.max() - v.min() + 1e-6)
    return (v.permute(1, 2, 3, 0).numpy() * 255).round().astype(np.uint8)


def episode_videos(d: DataSection, cfg: WorldModelConfig, seed: int, progress: bool = True) -> list[np.ndarray]:
    vids = []
    if d.sources:
        from eva_core.data import find_episode_files, read_episode

        files = find_episode_files(*d.sources)
        if not files:
            raise UserError(f"data.sources: no episode files under {d.sources}")
        for f in tqdm(files, desc="reading episodes", disable=not progress):
            vids.append(read_episode(f).frames)
    if d.synthetic:
        from eva_core.data import synthetic_episode
        from eva_core.embodiment import load_embodiment

        emb = load_embodiment()
        size = max(cfg.height, cfg.width)
        for i in range(d.synthetic):
            vids.append(synthetic_episode(emb, max(d.episode_frames, cfg.num_frames), size, cfg.fps,
                                          seed=seed * 1000 + i).frames)
    rng = np.random.default_rng(seed)
    vids += [random_video(cfg.num_frames, cfg.height, cfg.width, rng) for _ in range(d.random)]
    return vids


def clips_of(videos: list[np.ndarray], cfg: WorldModelConfig, stride: int) -> list[torch.Tensor]:
    out = []
    for v in videos:
        for s in range(0, len(v) - cfg.num_frames + 1, stride):
            out.append(fit_frames(v[s:s + cfg.num_frames], cfg.height, cfg.width))
    if not out:
        raise UserError(f"no clip of {cfg.num_frames} frames in the given videos (too short)")
    return out


@torch.no_grad()
def vae_pairs(vae, clips: list[torch.Tensor], batch: int = 4, progress: bool = True):
    """(normalised latents, VAE-decoded frames) for each clip, on the CPU."""
    lats, targets = [], []
    for i in tqdm(range(0, len(clips), batch), desc="VAE encode+decode", disable=not progress):
        lat = encoders.vae_encode(vae, torch.stack(clips[i:i + batch]))
        targets.append(encoders.vae_decode(vae, lat).cpu())
        lats.append(lat.cpu())
    return torch.cat(lats), torch.cat(targets)


def psnr(mse: float) -> float:
    """Frames in [-1, 1] (peak-to-peak 2)."""
    return float("inf") if mse <= 0 else 10 * math.log10(4.0 / mse)


@torch.no_grad()
def evaluate(model: LightDecoder, lat: torch.Tensor, target: torch.Tensor, batch: int = 8) -> float:
    model.eval()
    dev = next(model.parameters()).device
    se = sum(F.mse_loss(model.decode(lat[i:i + batch].to(dev)), target[i:i + batch].to(dev), reduction="sum").item()
             for i in range(0, len(lat), batch))
    model.train()
    return se / target.numel()


def plot_losses(train: list, val: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy([s for s, _ in train], [v for _, v in train], lw=1, label="train MSE")
    if val:
        ax.semilogy([s for s, _ in val], [v for _, v in val], "o-", label="held-out MSE")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE to the VAE decode")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- training ----------------------------------------------------------------------------------------
def train(a: TrainSection, out: Path, lat, target, val_lat, val_target, device, progress: bool = True) -> dict:
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(a.seed)
    cfg = LightDecoderConfig(latent_channels=lat.shape[1], channels=a.channels)
    model = LightDecoder(cfg).to(device).train()
    if model.num_frames(lat.shape[2]) != target.shape[2] or lat.shape[-1] * cfg.spatial_stride != target.shape[-1]:
        raise UserError(f"train.channels {a.channels}: decodes {tuple(lat.shape[2:])} latents to "
                        f"{model.num_frames(lat.shape[2])} frames at stride {cfg.spatial_stride}, but the VAE gives "
                        f"{tuple(target.shape[2:])}")
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    warm = min(50, a.steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
    writer = SummaryWriter(str(out / "tb"))
    g = torch.Generator().manual_seed(a.seed)
    train_hist, val_hist = [], []
    bar = tqdm(range(1, a.steps + 1), desc="train light decoder", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(lat), (min(a.batch_size, len(lat)),), generator=g)
        x, y = lat[idx].to(device), target[idx].to(device)
        if a.latent_noise:
            x = x + a.latent_noise * torch.randn(x.shape, generator=g).to(device)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = loss.item()
        if not math.isfinite(lv):
            raise UserError(f"training diverged at step {step} (loss {lv}); lower train.lr")
        train_hist.append((step, lv))
        writer.add_scalar("train/mse", lv, step)
        writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
        if len(val_lat) and (step % a.eval_every == 0 or step == a.steps):
            val_hist.append((step, evaluate(model, val_lat, val_target)))
            writer.add_scalar("val/mse", val_hist[-1][1], step)
            writer.add_scalar("val/psnr", psnr(val_hist[-1][1]), step)
        bar.set_postfix(mse=f"{lv:.4g}", val=f"{val_hist[-1][1]:.4g}" if val_hist else "-")
    writer.close()
    model.eval()
    save_light_decoder(model.cpu(), out / "light_decoder")
    plot_losses(train_hist, val_hist, out / "loss.png")
    first = float(np.mean([v for _, v in train_hist[:10]]))
    last = float(np.mean([v for _, v in train_hist[-10:]]))
    return {"train_mse_first10": first, "train_mse_last10": last, "val_mse": val_hist[-1][1] if val_hist else None,
            "val_psnr": psnr(val_hist[-1][1]) if val_hist else None, "params": sum(p.numel() for p in model.parameters()),
            "config": cfg.to_dict(), "train_history": train_hist, "val_history": val_hist}


def run(argv=None) -> Path:
    a = parse_args(argv)
    c = read_config(a)   # a typo: one line, before the output is touched
    t, d = c.train, c.data
    out = Path(a.out)
    overwrite = a.overwrite or (out.is_dir() and not any(out.iterdir()))  # an empty --out is fine
    device = torch.device("cuda" if t.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if t.device == "auto" else t.device))
    cfg, cfg_file = world_model_config(c.world_model)
    check_inputs(**{"data.sources": d.sources})
    with atomic_dir(out, overwrite=overwrite) as tmp:  # refuses an existing --out before any work
        t0 = time.perf_counter()
        vae = load_vae(cfg).to(device)
        clips = clips_of(episode_videos(d, cfg, t.seed, not a.no_progress), cfg, d.clip_stride)
        rng = np.random.default_rng(t.seed)
        order = rng.permutation(len(clips))
        n_val = int(round(d.val_fraction * len(clips))) if len(clips) > 1 else 0
        val_ids, train_ids = order[:n_val], order[n_val:]
        lat, target = vae_pairs(vae, [clips[i] for i in train_ids], progress=not a.no_progress)
        if n_val:
            val_lat, val_target = vae_pairs(vae, [clips[i] for i in val_ids], progress=not a.no_progress)
        else:
            val_lat, val_target = lat[:0], target[:0]
        del vae
        result = train(t, tmp, lat, target, val_lat, val_target, device, progress=not a.no_progress)
        summary = {"world_model": str(cfg_file), "latent_shape": list(lat.shape[1:]), "frames_shape": list(target.shape[1:]),
                   "clips_train": int(len(train_ids)), "clips_val": int(n_val), "steps": t.steps,
                   "seconds": time.perf_counter() - t0, **result}
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "config.yaml", yaml.safe_dump(c.to_dict(), sort_keys=False))
    print(f"{PROG}: {len(train_ids)} train / {n_val} held-out clips; MSE {result['train_mse_first10']:.4g} -> "
          f"{result['train_mse_last10']:.4g}" + (f", held-out {result['val_mse']:.4g} (PSNR {result['val_psnr']:.1f} dB)"
                                                 if result["val_mse"] is not None else "") + f"; wrote {out}")
    return out


def main(argv=None) -> int:
    return cli_main(PROG, lambda av: (run(av), 0)[1], argv)


if __name__ == "__main__":
    raise SystemExit(main())
