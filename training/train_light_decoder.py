"""Train a light decoder to reproduce a world model's Wan VAE decode (latents -> VAE-decoded frames).

    python -m training.train_light_decoder --world-model checkpoints/demo --synthetic 12 --out runs/light_decoder
    python -m training.train_light_decoder --world-model wm.yaml --data /data/episodes --out runs/ld --steps 20000

Read top to bottom: arguments -> the world model's VAE (from its `world_model:` YAML or a checkpoint
directory holding world_model_grpo.yaml) -> clips of `num_frames` frames at the world model's size,
from episodes (`--data`), synthetic stick-figure episodes (`--synthetic`) or smooth random videos
(`--random`) -> VAE encode, then VAE decode: the (latents, frames) pairs -> AdamW on MSE, with a
held-out split -> save.
Outputs in --out, written to a temp directory and renamed at the end (an existing non-empty --out
is refused without --overwrite): light_decoder/ (config.json + model.safetensors), tb/
(TensorBoard), loss.png, summary.json.
The options are argparse for now; they move to the project's typed config `Section` later.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from eva_core import yaml_io
from eva_core.atomic_io import atomic_dir, write_json
from eva_core.cli import UserError, add_debug_arg, add_overwrite_arg, cli_main
from eva_core.world_model import WorldModelConfig, encoders, tiny
from eva_core.world_model.light_decoder import LightDecoder, LightDecoderConfig, save_light_decoder

PROG = "train_light_decoder"
WM_YAMLS = ("world_model_grpo.yaml", "world_model_sft.yaml", "world_model.yaml")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--world-model", required=True,
                   help="a YAML with a world_model: section, or a directory holding one of " + ", ".join(WM_YAMLS))
    d = p.add_argument_group("data (at least one)")
    d.add_argument("--data", nargs="*", default=[], help="episode .hdf5 files or directories")
    d.add_argument("--synthetic", type=int, default=0, help="N synthetic stick-figure episodes (in memory)")
    d.add_argument("--random", type=int, default=0, help="N smooth random videos of num_frames frames")
    d.add_argument("--episode-frames", type=int, default=48, help="frames per synthetic episode")
    d.add_argument("--clip-stride", type=int, default=4, help="frames between clip starts in an episode")
    d.add_argument("--val-fraction", type=float, default=0.15)
    m = p.add_argument_group("model and training")
    m.add_argument("--channels", default="64,32,16,16", help="decoder widths (latent res first; one per x2 upsampling)")
    m.add_argument("--steps", type=int, default=1000)
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument("--lr", type=float, default=2e-3)
    m.add_argument("--latent-noise", type=float, default=0.0,
                   help="std of Gaussian noise added to training latents (robustness to generated latents)")
    m.add_argument("--eval-every", type=int, default=100)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    add_overwrite_arg(p)
    add_debug_arg(p)
    a = p.parse_args(argv)
    if not (a.data or a.synthetic or a.random):
        p.error("give training frames: --data, --synthetic N and/or --random N")
    for name in ("steps", "batch_size", "eval_every", "clip_stride", "episode_frames"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not (0.0 <= a.val_fraction < 1.0) or not (a.lr > 0 and math.isfinite(a.lr)) or not a.latent_noise >= 0:
        p.error("--val-fraction must be in [0, 1), --lr > 0 and finite, --latent-noise >= 0")
    try:
        a.channels = [int(c) for c in a.channels.split(",")]
    except ValueError:
        p.error(f"--channels: expected comma-separated integers, got {a.channels!r}")
    return a


# ---- the world model's VAE ---------------------------------------------------------------------------
def world_model_config(path: str | Path) -> tuple[WorldModelConfig, Path]:
    """(config, YAML file) from a `world_model:` YAML or a directory holding one; relative
    `vae_dir`/`model_dir` are resolved against the YAML's directory."""
    p = Path(path)
    if p.is_dir():
        found = [p / n for n in WM_YAMLS if (p / n).is_file()]
        if not found:
            raise UserError(f"{p}: no {' / '.join(WM_YAMLS)} in this directory")
        p = found[0]
    if not p.is_file():
        raise FileNotFoundError(f"{p}: world-model config not found")
    data = yaml_io.load(p.read_text()) or {}
    section = data.get("world_model") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise UserError(f"{p}: world_model: missing (expected a world_model: section)")
    section = dict(section)
    for key in ("vae_dir", "model_dir"):
        v = section.get(key)
        if isinstance(v, str) and not Path(v).is_absolute():
            section[key] = str((p.parent / v).resolve())
    try:
        return WorldModelConfig.from_dict(section), p
    except (KeyError, ValueError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) else str(e)
        raise UserError(f"{p}: world_model: {msg}") from None


def load_vae(cfg: WorldModelConfig):
    """The VAE the world model decodes with (float32, eval), and nothing else of the model."""
    from diffusers import AutoencoderKLWan

    if cfg.vae_dir:
        src = Path(cfg.vae_dir)
    elif cfg.kind == "tiny":
        return tiny.build_tiny_vae(cfg.tiny)
    else:
        src = Path(cfg.model_dir) / "vae"
    if not src.is_dir():
        raise FileNotFoundError(f"world-model VAE directory not found: {src}")
    return AutoencoderKLWan.from_pretrained(src, torch_dtype=torch.float32, local_files_only=True).eval()


# ---- clips -------------------------------------------------------------------------------------------
def clip_tensor(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, height, width) in [-1, 1]: centre crop to aspect, then resize
    (the world model's `to_tensor`, per frame)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    h, w = x.shape[-2:]
    target = width / height
    if w / h > target:
        nw = max(1, round(h * target))
        x = x[..., (w - nw) // 2:(w - nw) // 2 + nw]
    elif w / h < target:
        nh = max(1, round(w / target))
        x = x[..., (h - nh) // 2:(h - nh) // 2 + nh, :]
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
    return x.permute(1, 0, 2, 3)


def random_video(frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour fields drifting over time, (T, H, W, 3) uint8."""
    lo = torch.from_numpy(rng.standard_normal((1, 3, 3, 5, 5)).astype(np.float32))
    v = F.interpolate(lo, size=(frames, height, width), mode="trilinear", align_corners=False)[0]
    v = (v - v.min()) / (v.max() - v.min() + 1e-6)
    return (v.permute(1, 2, 3, 0).numpy() * 255).round().astype(np.uint8)


def episode_videos(a, cfg: WorldModelConfig) -> list[np.ndarray]:
    vids = []
    if a.data:
        from eva_core.data import find_episode_files, read_episode

        files = find_episode_files(*a.data)
        if not files:
            raise UserError(f"no episode files under {a.data}")
        for f in tqdm(files, desc="reading episodes", disable=a.no_progress):
            vids.append(read_episode(f).frames)
    if a.synthetic:
        from eva_core.data import synthetic_episode
        from eva_core.embodiment import load_embodiment

        emb = load_embodiment()
        size = max(cfg.height, cfg.width)
        for i in range(a.synthetic):
            vids.append(synthetic_episode(emb, max(a.episode_frames, cfg.num_frames), size, cfg.fps,
                                          seed=a.seed * 1000 + i).frames)
    rng = np.random.default_rng(a.seed)
    vids += [random_video(cfg.num_frames, cfg.height, cfg.width, rng) for _ in range(a.random)]
    return vids


def clips_of(videos: list[np.ndarray], cfg: WorldModelConfig, stride: int) -> list[torch.Tensor]:
    out = []
    for v in videos:
        for s in range(0, len(v) - cfg.num_frames + 1, stride):
            out.append(clip_tensor(v[s:s + cfg.num_frames], cfg.height, cfg.width))
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
def train(a, out: Path, lat, target, val_lat, val_target, device) -> dict:
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(a.seed)
    cfg = LightDecoderConfig(latent_channels=lat.shape[1], channels=a.channels)
    model = LightDecoder(cfg).to(device).train()
    if model.num_frames(lat.shape[2]) != target.shape[2] or lat.shape[-1] * cfg.spatial_stride != target.shape[-1]:
        raise UserError(f"--channels {a.channels}: decodes {tuple(lat.shape[2:])} latents to "
                        f"{model.num_frames(lat.shape[2])} frames at stride {cfg.spatial_stride}, but the VAE gives "
                        f"{tuple(target.shape[2:])}")
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    warm = min(50, a.steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
    writer = SummaryWriter(str(out / "tb"))
    g = torch.Generator().manual_seed(a.seed)
    train_hist, val_hist = [], []
    bar = tqdm(range(1, a.steps + 1), desc="train light decoder", disable=a.no_progress)
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
            raise UserError(f"training diverged at step {step} (loss {lv}); lower --lr")
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
    out = Path(a.out)
    overwrite = a.overwrite or (out.is_dir() and not any(out.iterdir()))  # an empty --out is fine
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    cfg, cfg_file = world_model_config(a.world_model)
    with atomic_dir(out, overwrite=overwrite) as tmp:  # refuses an existing --out before any work
        t0 = time.perf_counter()
        vae = load_vae(cfg).to(device)
        clips = clips_of(episode_videos(a, cfg), cfg, a.clip_stride)
        rng = np.random.default_rng(a.seed)
        order = rng.permutation(len(clips))
        n_val = int(round(a.val_fraction * len(clips))) if len(clips) > 1 else 0
        val_ids, train_ids = order[:n_val], order[n_val:]
        lat, target = vae_pairs(vae, [clips[i] for i in train_ids], progress=not a.no_progress)
        if n_val:
            val_lat, val_target = vae_pairs(vae, [clips[i] for i in val_ids], progress=not a.no_progress)
        else:
            val_lat, val_target = lat[:0], target[:0]
        del vae
        result = train(a, tmp, lat, target, val_lat, val_target, device)
        summary = {"world_model": str(cfg_file), "latent_shape": list(lat.shape[1:]), "frames_shape": list(target.shape[1:]),
                   "clips_train": int(len(train_ids)), "clips_val": int(n_val), "steps": a.steps,
                   "seconds": time.perf_counter() - t0, **result}
        write_json(tmp / "summary.json", summary)
    print(f"{PROG}: {len(train_ids)} train / {n_val} held-out clips; MSE {result['train_mse_first10']:.4g} -> "
          f"{result['train_mse_last10']:.4g}" + (f", held-out {result['val_mse']:.4g} (PSNR {result['val_psnr']:.1f} dB)"
                                                 if result["val_mse"] is not None else "") + f"; wrote {out}")
    return out


def main(argv=None) -> int:
    return cli_main(PROG, lambda av: (run(av), 0)[1], argv)


if __name__ == "__main__":
    raise SystemExit(main())
