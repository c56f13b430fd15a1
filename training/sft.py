"""Supervised fine-tuning of the Wan2.1 I2V world model with diffusion forcing (`eva-train-sft`).

Read top to bottom: config -> accelerator -> world model -> clips -> cached features (VAE
latents, CLIP features, prompt embeddings) -> LoRA or full -> AdamW + warmup -> loop (diffusion-
forcing noise, per-frame timesteps, MSE to the flow target on future frames) -> eval loss + sample
videos -> resumable checkpoints -> final weights + the planner's world_model config.
The recipe is EVA's public one (RobbinW/large-video-planner, `add_training_noise`, `rand_history`).

    eva-train-sft --config config/training/sft_tiny.yaml --output-dir runs/sft_tiny   # CPU, minutes
    accelerate launch --config_file config/accelerate/fsdp_8gpu.yaml -m training.sft \\
        --config config/training/sft.yaml --output-dir runs/sft_14b
    eva-train-sft --config ... --output-dir runs/sft_14b --resume     # continue from the newest checkpoint

Outputs in --output-dir: final/lora/ (adapter) or final/transformer/ (full), final/world_model.yaml
(the planner's `world_model:` section), checkpoints/step_*/ (accelerate state), tb/, metrics.jsonl,
samples/step_*.mp4, config.yaml, cache/ (features; reused across runs when --cache-dir is shared).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from eva_core.config import Section, param
from training.common import (OptimSection, EpochSampler, append_jsonl, check_inputs, epoch_passes, latest_checkpoint, load_config,
                             load_emb, model_inputs, prepare_output_dir, read_jsonl, resume_from, run_cli,
                             save_checkpoint, truncate_jsonl, world_model_config, write_mp4, write_rank_digest)


@dataclass
class DataSection(Section):
    sources: list[str] = param([], "episode files/dirs (HDF5), LeRobot v3.0 roots and EVA CSVs")
    synthetic: int = param(0, "also write N synthetic episodes (eva_core.data.synthetic) and train on them", ge=0)
    synthetic_frames: int = param(64, "frames per synthetic episode", ge=1)
    synthetic_seed: int = param(0, "seed of the synthetic episodes")
    stride_s: float = param(1.0, "seconds between clip starts", unit="s", gt=0)
    instruction: str | None = param(None, "override every caption")
    camera: str | None = param(None, "camera to train on (default: the file's primary camera)")
    embodiment: str | None = param(None, "embodiment of the synthetic episodes (default: DEFAULT_EMBODIMENT)")
    val_frac: float = param(0.2, "fraction of SOURCES (episodes/videos) held out", ge=0, lt=1)
    cache_dir: str | None = param(None, "feature cache (default: OUTPUT/cache)")


@dataclass
class DFSection(Section):
    history_probs: list[float] = param([0.5, 0.1, 0.1, 0.1, 0.1, 0.1],
                                       "probability of 1, 2, ... history latent frames")
    clean_hist_prob: float = param(0.7, "probability that the history frames are noise-free", ge=0, le=1)
    shift: float = param(3.0, "timestep shift of the training noise levels", gt=0)

    def validate(self):
        if not self.history_probs or min(self.history_probs) < 0 or sum(self.history_probs) <= 0:
            self.error("history_probs", f"must be non-negative with a positive sum, got {self.history_probs}")


@dataclass
class TrainSection(OptimSection):
    mode: str = param("lora", "train a LoRA adapter or the full transformer", choices=("lora", "full"))
    lr: float = param(8e-6, "AdamW learning rate", gt=0)
    betas: list[float] = param([0.9, 0.95], "AdamW betas")
    weight_decay: float = param(0.05, "AdamW weight decay", ge=0)
    warmup_steps: int = param(100, "linear warmup steps", ge=0)
    batch_size: int = param(2, "clips per process and step", ge=1)
    grad_accum: int = param(4, "gradient accumulation steps", ge=1)
    max_steps: int = param(10000, "optimiser steps", ge=1)
    # Tiny models only: fit the (random) VAE as an autoencoder on the training clips first, so decoded
    # pixels mean something to the IDM reward. EVA never trains the pretrained Wan VAE: keep 0 there.
    fit_vae_steps: int = param(0, "steps fitting the tiny random VAE first (0: none)", ge=0)
    fit_vae_lr: float = param(2e-3, "learning rate of the VAE fit", gt=0)


@dataclass
class LogSection(Section):
    log_every: int = param(10, "steps between logged losses", ge=1)
    eval_every: int = param(500, "steps between evaluations", ge=1)
    save_every: int = param(500, "steps between resumable checkpoints", ge=1)
    keep: int = param(2, "checkpoints to keep (0: all)", ge=0)
    sample_videos: int = param(1, "sample videos per evaluation (0: none)", ge=0)
    progress: bool = param(True, "show a progress bar")


@dataclass
class SFTConfig(Section):
    """The whole `eva-train-sft` config (config/training/sft*.yaml)."""

    model: dict = param({}, "WorldModelConfig keys (kind tiny, the default: over WorldModelConfig.tiny_default)")
    data: DataSection = param(DataSection, "training clips")
    diffusion_forcing: DFSection = param(DFSection, "EVA's diffusion-forcing noise recipe")
    train: TrainSection = param(TrainSection, "optimisation")
    log: LogSection = param(LogSection, "logging, evaluation and checkpoints")

    def validate(self):
        world_model_config(self.model, self._source, f"{self._section}.model" if self._section else "model")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eva-train-sft", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML with sections model/data/diffusion_forcing/train/log")
    p.add_argument("--output-dir", required=True,
                   help="run directory (must be new or empty unless --resume or --overwrite)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --output-dir (swapped in only once the new one is complete)")
    p.add_argument("--cpu", action="store_true",
                   help="force the CPU (with `accelerate launch --multi_gpu --num_processes N`: N gloo processes)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


# ---- setup --------------------------------------------------------------------------------------
def make_accelerator(train: TrainSection, cpu: bool = False):
    from accelerate import Accelerator

    mp = train.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and not cpu else "no"
    return Accelerator(mixed_precision=mp, gradient_accumulation_steps=train.grad_accum, cpu=cpu)


def build_world_model(model_cfg: dict, device):
    from eva_core.world_model import WorldModel

    return WorldModel.from_config(world_model_config(model_cfg, device=str(device)))


def split_refs(refs, val_frac: float, seed: int):
    """Whole sources (episodes/videos) go to train or val."""
    import numpy as np

    sources = sorted({r.source for r in refs})
    if len(sources) < 2 or val_frac == 0:
        return refs, []
    n_val = min(len(sources) - 1, max(1, round(len(sources) * val_frac)))
    val = set(np.random.default_rng(seed).permutation(sources)[:n_val].tolist())
    return [r for r in refs if r.source not in val], [r for r in refs if r.source in val]


def gather_clips(data: DataSection, wm, out: Path, accelerator):
    from eva_core.data import make_synthetic_dataset
    from eva_core.data.video_clips import ClipSpec, clips_from_sources

    sources = list(data.sources)
    if data.synthetic:
        syn = out / "synthetic_data"
        with accelerator.main_process_first():
            if accelerator.is_main_process and not syn.is_dir():
                make_synthetic_dataset(syn, episodes=data.synthetic, frames=data.synthetic_frames,
                                       size=max(wm.height, wm.width), fps=wm.fps, seed=data.synthetic_seed,
                                       progress=False, embodiment=load_emb(data.embodiment))
        sources.append(str(syn))
    if not sources:
        raise ValueError("data: sources: empty and synthetic is 0; nothing to train on")
    spec = ClipSpec(num_frames=wm.num_frames, fps=wm.fps, height=wm.height, width=wm.width, camera=data.camera)
    refs = clips_from_sources(sources, spec, data.stride_s, data.instruction)
    if not refs:
        raise ValueError(f"data: no clip of {spec.num_frames} frames at {spec.fps} fps in {sources}")
    return spec, refs


def fit_vae(wm, refs, spec, tr: TrainSection, out: Path, accelerator, progress: bool) -> Path:
    """Reconstruction (+ 1e-6 KL) fit of the VAE on the training clips; saved to final/vae (rank 0
    fits, the others load its result). Only for tiny random models (see TrainSection.fit_vae_steps)."""
    from diffusers import AutoencoderKLWan
    from tqdm import tqdm

    from eva_core.atomic_io import atomic_dir
    from eva_core.data.video_clips import VideoClipDataset

    final = out / "final" / "vae"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not final.is_dir():
            vae = wm.c.vae
            ds = VideoClipDataset(refs, spec)
            videos = torch.stack([ds[i]["video"] for i in range(len(ds))])
            vae.train().requires_grad_(True)
            opt = torch.optim.AdamW(vae.parameters(), lr=tr.fit_vae_lr)
            gen = torch.Generator().manual_seed(tr.seed)
            for _ in tqdm(range(tr.fit_vae_steps), desc="fit vae", disable=not progress):
                x = videos[torch.randint(0, len(videos), (min(4, len(videos)),), generator=gen)].to(wm.device)
                post = vae.encode(x).latent_dist
                loss = (vae.decode(post.sample()).sample - x).pow(2).mean() + 1e-6 * post.kl().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            vae.eval().requires_grad_(False)
            with atomic_dir(final) as tmp:
                vae.save_pretrained(str(tmp))
            print(f"eva-train-sft: VAE fitted for {tr.fit_vae_steps} steps (last reconstruction MSE {loss.item():.4f})")
        if not accelerator.is_main_process or final.is_dir():
            wm.c.vae = AutoencoderKLWan.from_pretrained(str(final), local_files_only=True).to(wm.device).eval()
            wm.c.vae.requires_grad_(False)
    return final


def features(wm, refs, spec, cache_dir: Path, accelerator, progress: bool):
    from eva_core.data.video_clips import FeatureCache, VideoClipDataset
    from eva_core.world_model.training import CachedFeatures, encoder_key

    if not refs:
        return None
    cache = FeatureCache(cache_dir, encoder_key(wm))
    with accelerator.main_process_first():  # rank 0 computes, the others read its files
        ds = CachedFeatures(wm, VideoClipDataset(refs, spec), cache, progress=progress and accelerator.is_main_process)
    return ds


# ---- loop ---------------------------------------------------------------------------------------
def df_step_loss(model, batch, df: DFSection, gen, patch, dtype, device):
    from eva_core.world_model import diffusion_forcing as dfm
    from eva_core.world_model.training import predict_flow

    dfb = dfm.add_training_noise(batch["latents"].to(device), gen, df.history_probs, df.clean_hist_prob, df.shift)
    pred = predict_flow(model, dfb.noisy, dfb.timesteps, batch["text"], batch["image"], patch, dtype)
    return dfm.masked_flow_loss(pred, dfb)


@torch.no_grad()
def evaluate(model, val, df: DFSection, patch, dtype, device, seed: int) -> float:
    """Mean diffusion-forcing loss on the val clips with fixed noise (comparable across steps)."""
    from eva_core.world_model.training import collate

    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    losses = [float(df_step_loss(model, collate([val[i]]), df, gen, patch, dtype, device)) for i in range(len(val))]
    model.train(was)
    return sum(losses) / max(1, len(losses))


def save_samples(wm, val, out: Path, step: int, n: int) -> list[str]:
    paths = []
    wm.transformer.eval()
    for i in range(min(n, len(val))):
        item = val[i]
        frames = wm.generate(item["first_frame"].numpy(), item["caption"], seed=i)
        paths.append(str(write_mp4(out / "samples" / f"step_{step:08d}_{i}.mp4", frames, wm.fps)))
    wm.transformer.train()
    return paths


def export_final(accelerator, model, wm, model_cfg: dict, train: TrainSection, out: Path, deployed=None) -> Path:
    """final/lora (peft layout: adapter_model.safetensors + adapter_config.json) or final/transformer
    (diffusers layout), and final/world_model.yaml pointing at it (at `deployed(path)`: where the
    run will live, for an --overwrite built beside it)."""
    from safetensors.torch import save_file

    from eva_core.atomic_io import atomic_dir, write_text

    state = accelerator.get_state_dict(model)  # gathered on rank 0 under FSDP
    final = out / "final"
    if not accelerator.is_main_process:
        return final
    unwrapped = accelerator.unwrap_model(model)
    deployed = deployed or (lambda p: Path(p).resolve())
    deploy = {k: v for k, v in model_cfg.items() if k != "device"}
    if train.mode == "lora":
        sd = {k.replace(".default.", "."): v.detach().cpu().contiguous() for k, v in state.items() if "lora_" in k}
        with atomic_dir(final / "lora") as tmp:
            save_file(sd, str(tmp / "adapter_model.safetensors"))
            unwrapped.peft_config["default"].save_pretrained(str(tmp))
        deploy.update(lora=str(deployed(final / "lora")), merge_lora=True)
    else:
        sd = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        with atomic_dir(final / "transformer") as tmp:
            save_file(sd, str(tmp / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
            unwrapped.save_config(str(tmp))
        deploy.update(transformer_dir=str(deployed(final / "transformer")))
    write_text(final / "world_model.yaml", yaml.safe_dump({"world_model": deploy}, sort_keys=False))
    return final


def train(argv=None) -> Path:
    args = parse_args(argv)
    cfg = load_config(SFTConfig, args.config, args.set)
    data, df, tr, log = cfg.data, cfg.diffusion_forcing, cfg.train, cfg.log
    check_inputs(**{"data.sources": data.sources}, **model_inputs(cfg.model))  # before any output
    run = prepare_output_dir(Path(args.output_dir), args.resume, args.overwrite)
    out = run.path
    accelerator = make_accelerator(tr, args.cpu)
    from accelerate.utils import set_seed

    from eva_core.world_model.training import collate, setup_trainable

    set_seed(tr.seed)
    main = accelerator.is_main_process
    wm = build_world_model(cfg.model, accelerator.device)
    spec, refs = gather_clips(data, wm, out, accelerator)
    train_refs, val_refs = split_refs(refs, data.val_frac, tr.seed)
    cache_dir = Path(data.cache_dir) if data.cache_dir else out / "cache"
    vae_dir = fit_vae(wm, train_refs, spec, tr, out, accelerator, log.progress) if tr.fit_vae_steps else None
    train_ds = features(wm, train_refs, spec, cache_dir, accelerator, log.progress)
    val_ds = features(wm, val_refs, spec, cache_dir, accelerator, False)
    if main:
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        print(f"eva-train-sft: {len(train_refs)} train / {len(val_refs)} val clips of {spec.num_frames} frames "
              f"at {spec.fps} fps, {spec.height}x{spec.width}; {accelerator.num_processes} process(es)")

    transformer = wm.transformer
    params = setup_trainable(transformer, tr.mode, tr.lora_rank, tr.lora_alpha, tr.gradient_checkpointing)
    patch, dtype = transformer.config.patch_size, transformer.dtype
    opt = torch.optim.AdamW(params, lr=tr.lr, betas=tuple(tr.betas), weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, tr.warmup_steps)))
    loader = torch.utils.data.DataLoader(train_ds, batch_size=tr.batch_size, collate_fn=collate,
                                         sampler=EpochSampler(len(train_ds), tr.seed),
                                         drop_last=len(train_ds) >= tr.batch_size * accelerator.num_processes)
    model, opt, loader, sched = accelerator.prepare(transformer, opt, loader, sched)
    step, extra = resume_from(accelerator, latest_checkpoint(out) if args.resume else None)
    first_eval = last_eval = None
    if step:  # the killed run's rows past the checkpoint go; the first evaluation comes back
        first_eval = extra.get("first_eval_loss", next(
            (r["eval_loss"] for r in read_jsonl(out / "metrics.jsonl") if r.get("step") == 0 and "eval_loss" in r),
            None))
        last_eval = extra.get("eval_loss")
    if main and args.resume:  # without a checkpoint the run starts over: all of its rows go
        truncate_jsonl(out / "metrics.jsonl", step if step else -1)

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=step + 1 if step else (0 if args.resume else None))
    from tqdm import tqdm

    bar = tqdm(total=tr.max_steps, initial=step, desc="sft", disable=not (main and log.progress))
    fsdp = accelerator.distributed_type.name == "FSDP"
    if val_ds is not None and step == 0:
        first_eval = evaluate(model, val_ds, df, patch, dtype, accelerator.device, tr.seed + 1)
        if main:
            writer.add_scalar("eval/loss", first_eval, 0)
            append_jsonl(out / "metrics.jsonl", {"step": 0, "eval_loss": first_eval})
    model.train()
    t0, running = time.perf_counter(), []
    # steps per pass: accelerate also syncs the gradients at the end of the loader
    per_epoch = -(-len(loader) // tr.grad_accum)
    for _, passes in epoch_passes(accelerator, loader, step, tr.grad_accum, per_epoch):
        if step >= tr.max_steps:
            break
        for batch in passes:
            with accelerator.accumulate(model):
                gen = torch.Generator().manual_seed(tr.seed * 1_000_003 + step * 997 + accelerator.process_index)
                loss = df_step_loss(model, batch, df, gen, patch, dtype, accelerator.device)
                accelerator.backward(loss)
                gnorm = accelerator.clip_grad_norm_(params, tr.grad_clip) if accelerator.sync_gradients else None
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            running.append(float(loss.detach()))
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % log.log_every == 0 or step == tr.max_steps:
                mean_loss = float(accelerator.reduce(torch.tensor(sum(running) / len(running),
                                                                  device=accelerator.device), "mean"))
                running = []
                if main:
                    rec = {"step": step, "loss": mean_loss, "lr": sched.get_last_lr()[0],
                           "grad_norm": float(gnorm) if gnorm is not None else None,
                           "s_per_step": (time.perf_counter() - t0) / log.log_every}
                    for k in ("loss", "lr", "grad_norm"):
                        if rec[k] is not None:
                            writer.add_scalar(f"train/{k}", rec[k], step)
                    append_jsonl(out / "metrics.jsonl", rec)
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                t0 = time.perf_counter()
            if val_ds is not None and (step % log.eval_every == 0 or step == tr.max_steps):
                last_eval = evaluate(model, val_ds, df, patch, dtype, accelerator.device, tr.seed + 1)
                if main:
                    writer.add_scalar("eval/loss", last_eval, step)
                    append_jsonl(out / "metrics.jsonl", {"step": step, "eval_loss": last_eval})
                    if log.sample_videos and not fsdp:
                        save_samples(wm, val_ds, out, step, log.sample_videos)
            if step % log.save_every == 0 or step == tr.max_steps:
                save_checkpoint(accelerator, out, step, {"eval_loss": last_eval, "first_eval_loss": first_eval},
                                log.keep)
            if step >= tr.max_steps:
                break
    bar.close()
    model_cfg = {**cfg.model, **({"vae_dir": str(run.final_path(vae_dir))} if vae_dir else {})}
    final = export_final(accelerator, model, wm, model_cfg, tr, out, run.final_path)
    if main:
        from eva_core.atomic_io import write_json

        write_json(out / "summary.json", {"steps": step, "first_eval_loss": first_eval, "last_eval_loss": last_eval,
                                          "final": str(run.final_path(final)), "processes": accelerator.num_processes,
                                          "trainable_params": sum(p.numel() for p in params)})
        writer.close()
        print(f"eva-train-sft: done; eval loss {first_eval} -> {last_eval}; "
              f"planner config: {run.final_path(final) / 'world_model.yaml'}")
    write_rank_digest(accelerator, params, out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if main:
        run.commit()
    return run.final_path(final)


def main(argv=None) -> int:
    return run_cli("eva-train-sft", train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
