"""Train a light decoder to reproduce a world model's Wan VAE decode (latents -> VAE-decoded frames).

    python -m training.train_light_decoder --config config/training/light_decoder_demo.yaml --out runs/light_decoder
    python -m training.train_light_decoder --set world_model=checkpoints/demo --set data.random=12 --out runs/ld
    python -m training.train_light_decoder --config ld.yaml --set train.steps=20000 --set data.sources=[/data/eps] --out runs/ld

Read top to bottom: config (LightDecoderTrainConfig: YAML < --set; a typo is a one-line error before
the output is touched) -> the world model's VAE (from its `world_model:` YAML or a checkpoint
directory holding world_model_grpo.yaml) -> clips of `num_frames` frames at the world model's size,
from episodes (`data.sources`), the twin's scripted demos (`data.twin`, rendered in memory),
synthetic stick-figure episodes (`data.synthetic`) or smooth random videos (`data.random`) -> VAE
encode -> plus the latents of chunks world models GENERATE from the twin's first frames
(`data.twin.generate`: what the planner decodes when deployed) -> VAE decode of every latent: the
(latents, frames) pairs -> AdamW on MSE + `train.idm_weight` x the IDM-consistency loss (a frozen
IDM's normalised actions on the light frames vs on the VAE frames, Huber), with a held-out split -> save.
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
class TwinSection(Section):
    tasks: list[str] = param([], "twin tasks (eva_core.sim.registry) whose reset frames feed the data")
    reset_seeds: list[int] = param([], "twin reset seeds (the benches hold out 100 and above)")
    demos: bool = param(False, "VAE-encode each seed's scripted demo (rendered in memory at the model's size)")
    generate: list[str] = param([], "world-model YAMLs (or checkpoint dirs) that generate chunks from each reset "
                                    "frame; their latents are decoded (what the deployed planner decodes)")
    gen_seeds: int = param(2, "chunks per reset frame and generating model", ge=1)

    def validate(self) -> None:
        if (self.demos or self.generate) and not (self.tasks and self.reset_seeds):
            self.error("tasks", "demos / generate need twin tasks and reset_seeds")


@dataclass
class DataSection(Section):
    sources: list[str] = param([], "episode .hdf5 files or directories")
    synthetic: int = param(0, "N synthetic stick-figure episodes (in memory)", ge=0)
    random: int = param(0, "N smooth random videos of num_frames frames", ge=0)
    episode_frames: int = param(48, "frames per synthetic episode", ge=1)
    clip_stride: int = param(4, "frames between clip starts in an episode", ge=1)
    val_fraction: float = param(0.15, "held-out fraction of the clips", ge=0, lt=1)
    twin: TwinSection = param(TwinSection, "the digital twin's tasks: scripted demos and generated chunks")


@dataclass
class TrainSection(Section):
    channels: list[int] = param([64, 32, 16, 16], "decoder widths (latent resolution first; one per x2 upsampling)")
    steps: int = param(1000, "optimiser steps", ge=1)
    batch_size: int = param(8, "clips per step", ge=1)
    lr: float = param(2e-3, "AdamW peak learning rate (warm-up, then cosine)", gt=0)
    latent_noise: float = param(0.0, "std of Gaussian noise added to training latents (robustness to "
                                     "generated latents)", ge=0)
    idm: str = param("", "a frozen IDM (eva_core.idm checkpoint dir) for the IDM-consistency loss")
    idm_weight: float = param(0.0, "weight of the IDM-consistency loss: Huber between the IDM's normalised "
                                   "actions on light-decoded and on VAE-decoded frames (0: off)", ge=0)
    eval_every: int = param(100, "steps between held-out evaluations", ge=1)
    seed: int = param(0, "torch / numpy seed (clip split, batches, synthetic data)")
    device: str = param("auto", "auto (cuda if available), cpu, cuda, cuda:1 ...")
    threads: int = param(0, "CPU threads for torch (torch.set_num_threads); 0: torch's default", ge=0)

    def validate(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            self.error("channels", f"must list positive widths, got {self.channels}")
        if self.idm_weight > 0 and not self.idm:
            self.error("idm", "idm_weight > 0 needs an IDM checkpoint directory")


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
        if not (d.sources or d.synthetic or d.random or d.twin.demos or d.twin.generate):
            self.error("data", "give training frames: sources, synthetic N and/or random N (or data.twin demos / "
                               "generate)")


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
    if d.twin.demos:
        from eva_core.embodiment import load_embodiment
        from eva_core.sim.idm_replay import ground_truth_demos

        emb = load_embodiment()
        for task in tqdm(d.twin.tasks, desc="twin demos", disable=not progress):
            vids += [ep.frames for _, ep in ground_truth_demos(task, emb, d.twin.reset_seeds, cfg.fps,
                                                                (cfg.height, cfg.width))]
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
def vae_pairs_of(vae, lat: torch.Tensor, batch: int = 8, progress: bool = True) -> torch.Tensor:
    """The VAE decode of each normalised latent, on the CPU: the light decoder's targets."""
    return torch.cat([encoders.vae_decode(vae, lat[i:i + batch]).cpu()
                      for i in tqdm(range(0, len(lat), batch), desc="VAE decode", disable=not progress)])


@torch.no_grad()
def generated_latents(t: TwinSection, cfg: WorldModelConfig, progress: bool = True) -> torch.Tensor:
    """Latents of the chunks each `t.generate` model makes from each twin reset frame (+ instruction),
    `gen_seeds` seeds each: what a deployed planner hands its decoder. (N, 16, Tl, h, w) on the CPU."""
    if not t.generate:
        return torch.zeros(0)
    from eva_core.world_model import WorldModel
    from training.distill import twin_first_frames

    prompts = twin_first_frames(t.tasks, t.reset_seeds, cfg.height, cfg.width, "cam_high")
    lats = []
    for path in t.generate:
        gcfg, _ = read_world_model_yaml(path, decoder="vae", light_decoder=None)
        if (gcfg.height, gcfg.width, gcfg.num_frames) != (cfg.height, cfg.width, cfg.num_frames):
            raise UserError(f"data.twin.generate: {path}: makes {gcfg.num_frames}x{gcfg.height}x{gcfg.width} "
                            f"chunks, the decoder's world model {cfg.num_frames}x{cfg.height}x{cfg.width}")
        wm = WorldModel.from_config(gcfg)

        def keep(x, wm=wm):   # latents only: the VAE decodes them later, batched
            lats.append(x.detach().cpu())
            return torch.zeros(x.shape[0], 3, wm.num_frames, wm.height, wm.width)

        wm.decode_latents = keep
        for frame, text in tqdm(prompts, desc=f"generate ({Path(path).name})", disable=not progress):
            for s in range(t.gen_seeds):
                wm.generate(frame, text, seed=s)
    return torch.cat(lats)


# ---- the IDM-consistency loss ------------------------------------------------------------------------
ACTIVE_STD = 1e-2   # IDM action dims with a smaller normalisation std never moved in its data (std floor 1e-3)


def load_frozen_idm(path: str, device):
    from eva_core.idm import load_idm

    try:
        idm = load_idm(path)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"train.idm: {e}") from None
    idm = idm.to(device).eval().requires_grad_(False)
    active = idm.action_std > ACTIVE_STD
    if not bool(active.any()):
        raise UserError(f"train.idm: {path}: no action dim with normalisation std > {ACTIVE_STD}")
    return idm, active


def idm_outputs(idm, video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B, T, action_dim) normalised IDM outputs, differentiable in `video`
    (the windows and preprocessing of `IDM.predict`)."""
    b, _, t, h, w = video.shape
    frames = idm.preprocess(((video.clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w))
    idx = idm.window_indices(t)
    idx = (idx.unsqueeze(0) + torch.arange(0, b * t, t).view(-1, 1, 1)).flatten(0, 1).to(frames.device)
    x = frames[idx.reshape(-1)].reshape(idx.shape[0], -1, *frames.shape[-2:])
    return idm(x).reshape(b, t, -1)


def idm_loss(idm, active, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Huber between the IDM's normalised actions on `out` and on `target` frames (active dims)."""
    with torch.no_grad():
        ref = idm_outputs(idm, target)
    return F.smooth_l1_loss(idm_outputs(idm, out)[..., active], ref[..., active], beta=0.1)


def psnr(mse: float) -> float:
    """Frames in [-1, 1] (peak-to-peak 2)."""
    return float("inf") if mse <= 0 else 10 * math.log10(4.0 / mse)


@torch.no_grad()
def evaluate(model: LightDecoder, lat: torch.Tensor, target: torch.Tensor, batch: int = 8, idm=None) -> dict:
    """Held-out MSE to the VAE frames; with `idm`, the mean |IDM actions (light) − IDM actions (VAE)|
    in the IDM's action units (rad), all dims."""
    model.eval()
    dev = next(model.parameters()).device
    se, ae = 0.0, []
    for i in range(0, len(lat), batch):
        out, ref = model.decode(lat[i:i + batch].to(dev)), target[i:i + batch].to(dev)
        se += F.mse_loss(out, ref, reduction="sum").item()
        if idm is not None:
            ae.append((idm.denormalize(idm_outputs(idm, out)) - idm.denormalize(idm_outputs(idm, ref))).abs().cpu())
    model.train()
    res = {"mse": se / target.numel()}
    if ae:
        res["idm_action_error"] = torch.cat(ae).mean().item()
    return res


def plot_losses(train: list, val: list, path: Path, idm_hist: list | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy([s for s, _ in train], [v for _, v in train], lw=1, label="train MSE")
    if val:
        ax.semilogy([s for s, _ in val], [v for _, v in val], "o-", label="held-out MSE")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE to the VAE decode")
    ax.legend(loc="upper left")
    if idm_hist:
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in idm_hist], [v for _, v in idm_hist], "s--", color="tab:red",
                 label="IDM consistency (train)")
        ax2.set_ylabel("IDM-consistency loss")
        ax2.legend(loc="upper right")
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
    idm, active = load_frozen_idm(a.idm, device) if a.idm else (None, None)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    warm = min(50, a.steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
    writer = SummaryWriter(str(out / "tb"))
    g = torch.Generator().manual_seed(a.seed)
    train_hist, val_hist, idm_hist, idm_err_hist = [], [], [], []
    bar = tqdm(range(1, a.steps + 1), desc="train light decoder", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(lat), (min(a.batch_size, len(lat)),), generator=g)
        x, y = lat[idx].to(device), target[idx].to(device)
        if a.latent_noise:
            x = x + a.latent_noise * torch.randn(x.shape, generator=g).to(device)
        pred = model(x)
        loss = F.mse_loss(pred, y)
        if a.idm_weight > 0:
            li = idm_loss(idm, active, pred, y)
            loss = loss + a.idm_weight * li
            idm_hist.append((step, li.item()))
            writer.add_scalar("train/idm_consistency", idm_hist[-1][1], step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = loss.item()
        if not math.isfinite(lv):
            raise UserError(f"training diverged at step {step} (loss {lv}); lower train.lr")
        train_hist.append((step, lv - (a.idm_weight * idm_hist[-1][1] if a.idm_weight > 0 else 0.0)))
        writer.add_scalar("train/mse", train_hist[-1][1], step)
        writer.add_scalar("train/loss", lv, step)
        writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
        if len(val_lat) and (step % a.eval_every == 0 or step == a.steps):
            ev = evaluate(model, val_lat, val_target, idm=idm)
            val_hist.append((step, ev["mse"]))
            writer.add_scalar("val/mse", val_hist[-1][1], step)
            writer.add_scalar("val/psnr", psnr(val_hist[-1][1]), step)
            if "idm_action_error" in ev:
                idm_err_hist.append((step, ev["idm_action_error"]))
                writer.add_scalar("val/idm_action_error", ev["idm_action_error"], step)
        bar.set_postfix(mse=f"{train_hist[-1][1]:.4g}", val=f"{val_hist[-1][1]:.4g}" if val_hist else "-",
                        **({"idm": f"{idm_hist[-1][1]:.3g}"} if idm_hist else {}),
                        **({"act_err": f"{idm_err_hist[-1][1]:.3g}"} if idm_err_hist else {}))
    writer.close()
    model.eval()
    save_light_decoder(model.cpu(), out / "light_decoder")
    plot_losses(train_hist, val_hist, out / "loss.png", idm_hist[::max(1, len(idm_hist) // 50)])
    first = float(np.mean([v for _, v in train_hist[:10]]))
    last = float(np.mean([v for _, v in train_hist[-10:]]))
    idm_part = {}
    if idm_hist:
        idm_part = {"idm_loss_first10": float(np.mean([v for _, v in idm_hist[:10]])),
                    "idm_loss_last10": float(np.mean([v for _, v in idm_hist[-10:]]))}
    if idm_err_hist:
        idm_part.update(val_idm_action_error=idm_err_hist[-1][1], val_idm_action_error_history=idm_err_hist)
    return {"train_mse_first10": first, "train_mse_last10": last, **idm_part,
            "val_mse": val_hist[-1][1] if val_hist else None,
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
    if t.threads:
        torch.set_num_threads(t.threads)
    cfg, cfg_file = world_model_config(c.world_model)
    check_inputs(**{"data.sources": d.sources})
    with atomic_dir(out, overwrite=overwrite) as tmp:  # refuses an existing --out before any work
        t0 = time.perf_counter()
        vae = load_vae(cfg).to(device)
        videos = episode_videos(d, cfg, t.seed, not a.no_progress)
        clips = clips_of(videos, cfg, d.clip_stride) if videos else []
        gen = generated_latents(d.twin, cfg, not a.no_progress)
        with torch.no_grad():
            enc = [encoders.vae_encode(vae, torch.stack(clips[i:i + 8])).cpu() for i in range(0, len(clips), 8)]
        lat_all = torch.cat(enc + ([gen] if len(gen) else []))
        target_all = vae_pairs_of(vae, lat_all, progress=not a.no_progress)
        n_gen = len(gen)
        rng = np.random.default_rng(t.seed)
        order = rng.permutation(len(lat_all))
        n_val = int(round(d.val_fraction * len(lat_all))) if len(lat_all) > 1 else 0
        val_ids, train_ids = order[:n_val], order[n_val:]
        lat, target = lat_all[train_ids], target_all[train_ids]
        val_lat, val_target = lat_all[val_ids], target_all[val_ids]
        del vae
        result = train(t, tmp, lat, target, val_lat, val_target, device, progress=not a.no_progress)
        summary = {"world_model": str(cfg_file), "latent_shape": list(lat.shape[1:]), "frames_shape": list(target.shape[1:]),
                   "clips_train": int(len(train_ids)), "clips_val": int(n_val), "generated_chunks": int(n_gen),
                   "encoded_clips": len(clips), "steps": t.steps,
                   "seconds": time.perf_counter() - t0, **result}
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "config.yaml", yaml.safe_dump(c.to_dict(), sort_keys=False))
    print(f"{PROG}: {len(train_ids)} train / {n_val} held-out clips; MSE {result['train_mse_first10']:.4g} -> "
          f"{result['train_mse_last10']:.4g}" + (f"; IDM consistency {result['idm_loss_first10']:.4g} -> "
                                                 f"{result['idm_loss_last10']:.4g}" if "idm_loss_first10" in result else "")
          + (f", held-out {result['val_mse']:.4g} (PSNR {result['val_psnr']:.1f} dB)"
                                                 if result["val_mse"] is not None else "")
          + (f", held-out IDM action error {result['val_idm_action_error']:.4f}" if "val_idm_action_error" in result
             else "") + f"; wrote {out}")
    return out


def main(argv=None) -> int:
    return cli_main(PROG, lambda av: (run(av), 0)[1], argv)


if __name__ == "__main__":
    raise SystemExit(main())
