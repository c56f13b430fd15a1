"""Flow-GRPO alignment of the world model with the frozen IDM executability reward (`eva-train-grpo`).

Read top to bottom: config -> accelerator -> world model (+ SFT weights) -> a LoRA adapter ->
prompts (first frame + instruction, train and held-out) -> per step: rollouts (G per prompt, SDE,
no CFG, states on the CPU) -> decode + reward batched over the group -> per-group advantages ->
`num_inner_epochs` of the clipped objective + β·KL to the adapter-disabled reference over
`timestep_fraction` of the SDE steps -> logs, videos, best-reward adapter, resumable checkpoint.
The recipe and defaults are EVA's (RobbinW/large-video-planner `exp_flow_grpo.py`); the library
parts are eva_core/world_model/grpo.py.

    eva-train-grpo --config config/training/grpo_tiny.yaml --output-dir runs/grpo_tiny        # CPU
    eva-train-grpo --config config/training/grpo_tiny.yaml --output-dir runs/eval_base --eval-only
    eva-train-grpo --config config/training/grpo_tiny.yaml --output-dir runs/eval_grpo --eval-only \\
        --lora runs/grpo_tiny/lora --baseline runs/eval_base/eval.json
    accelerate launch --config_file config/accelerate/fsdp_8gpu.yaml -m training.grpo \\
        --config config/training/grpo.yaml --output-dir runs/grpo_14b

Outputs in --output-dir: metrics.jsonl (step, reward_mean, reward_std, kl, ...), tb/, reward.png,
rollouts/step_*_{i}.mp4 + _actions.png, lora/ (last adapter) and best/lora/ (best mean reward),
world_model.yaml / best/world_model.yaml (the planner's `world_model:` section), checkpoints/.
`--eval-only` writes eval.json: the mean reward on the held-out prompts (SDE and ODE samples), every
sample's reward, the adapter's KL to its reference, and with `--baseline` the paired difference to an earlier evaluation (same seeds).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from eva_core.config import ConfigError, Section, param
from training.common import (OptimSection, append_jsonl, check_inputs, latest_checkpoint, load_config, load_emb, model_inputs,
                             prepare_output_dir, read_jsonl, resume_from, truncate_jsonl,
                             run_cli, save_checkpoint, world_model_config, write_mp4, write_rank_digest)


@dataclass
class DataSection(Section):
    sources: list[str] = param([], "episode files/dirs and EVA CSVs: training prompts")
    synthetic: int = param(0, "also N synthetic episodes (seed synthetic_seed) as training prompts", ge=0)
    synthetic_seed: int = param(0, "seed of the synthetic training episodes")
    eval_sources: list[str] = param([], "held-out prompts (--eval-only)")
    eval_synthetic: int = param(0, "N synthetic held-out episodes", ge=0)
    eval_synthetic_seed: int = param(1, "seed of the synthetic held-out episodes")
    synthetic_frames: int = param(32, "frames per synthetic episode", ge=1)
    stride_s: float = param(1.0, "seconds between prompt frames", unit="s", gt=0)
    instruction: str | None = param(None, "override every caption")
    camera: str | None = param(None, "camera (default: the file's primary camera)")
    max_prompts: int = param(0, "at most this many prompts (0: all clips)", ge=0)


@dataclass
class RewardSection(Section):
    idm: str | None = param(None, 'IDM checkpoint dir / EVA .pt, or "random_tiny" (an untrained tiny IDM: smoke tests)')
    embodiment: str | None = param(None, "embodiment (default: eva_core.embodiment.DEFAULT_EMBODIMENT)")
    batch_size: int = param(64, "clips per IDM scoring call", ge=1)


@dataclass
class GRPOSection(Section):
    group_size: int = param(8, "rollouts per prompt (advantages are normalised within a group)", ge=2)
    prompts_per_step: int = param(1, "prompts per process and step", ge=1)
    num_steps: int = param(40, "sampling steps (UniPC sigma grid, shift from the model config)", ge=1)
    std_schedule: str = param("eva", 'SDE noise: "eva": sigmas[1]·σ; "flow_grpo": sqrt(σ/(1-σ))·eta',
                              choices=("eva", "flow_grpo"))
    eta: float = param(0.7, "flow_grpo noise scale", ge=0)
    sde_window: int = param(0, "Flow-GRPO-Fast: SDE (and training) on a random window of k steps; 0 = all", ge=0)
    timestep_fraction: float = param(0.99, "fraction of the SDE steps trained", gt=0, le=1)
    num_inner_epochs: int = param(4, "passes over each step's samples", ge=1)
    train_batch_size: int = param(8, "samples per forward/backward minibatch", ge=1)
    # Optimiser steps per inner epoch; the minibatches between two steps are accumulated. Flow-GRPO
    # accumulates num_batches_per_epoch // 2 minibatches (x the trained timesteps): 2 steps an epoch.
    optimizer_steps_per_epoch: int = param(2, "optimiser steps per inner epoch", ge=1)
    clip_range: float = param(1e-5, "PPO ratio clip", gt=0)
    beta: float = param(0.004, "weight of the KL to the reference", ge=0)
    adv_clip: float = param(5.0, "advantage clip", gt=0)


@dataclass
class TrainSection(OptimSection):
    epochs: int = param(100, "GRPO iterations (rollout + update)", ge=1)


@dataclass
class LogSection(Section):
    video_every: int = param(10, "steps between rollout videos", ge=1)
    videos: int = param(2, "rollout videos each time (0: none)", ge=0)
    save_every: int = param(10, "steps between resumable checkpoints", ge=1)
    keep: int = param(1, "checkpoints to keep (0: all)", ge=0)
    eval_samples: int = param(4, "samples per held-out prompt, for --eval-only", ge=1)
    progress: bool = param(True, "show a progress bar")


@dataclass
class GRPOConfig(Section):
    """The whole `eva-train-grpo` config (config/training/grpo*.yaml)."""

    model: dict = param({}, "WorldModelConfig keys (kind tiny, the default: over WorldModelConfig.tiny_default)")
    data: DataSection = param(DataSection, "training and held-out prompts")
    reward: RewardSection = param(RewardSection, "the frozen IDM reward")
    grpo: GRPOSection = param(GRPOSection, "Flow-GRPO")
    train: TrainSection = param(TrainSection, "optimisation")
    log: LogSection = param(LogSection, "logging, videos and checkpoints")

    def validate(self):
        world_model_config(self.model, self._source, f"{self._section}.model" if self._section else "model")
        if not self.reward.idm:
            raise ConfigError(self._source, "reward", "idm", "required (an IDM checkpoint directory or EVA .pt)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eva-train-grpo", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML with sections model/data/reward/grpo/train/log")
    p.add_argument("--output-dir", required=True,
                   help="run directory (must be new or empty unless --resume or --overwrite)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output-dir (swapped in only once the new one is complete)")
    p.add_argument("--eval-only", action="store_true", help="score the held-out prompts and write eval.json")
    p.add_argument("--lora", default=None, help="with --eval-only: the adapter to evaluate (default: the initial model)")
    p.add_argument("--baseline", default=None,
                   help="with --eval-only: an earlier eval.json of the same prompts and seeds; adds the paired "
                        "per-sample difference (mean, standard error) as vs_baseline")
    p.add_argument("--cpu", action="store_true",
                   help="force the CPU (with `accelerate launch --multi_gpu --num_processes N`: N gloo processes)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


# ---- prompts ----------------------------------------------------------------------------------
@dataclass
class Prompt:
    image: np.ndarray  # (H, W, 3) uint8 first frame
    instruction: str
    cond: object  # grpo.Conditioning (CPU)


def load_prompts(wm, sources, synthetic: int, synth_seed: int, data: DataSection, out: Path, tag: str,
                 accelerator, embodiment: str | None = None) -> list[Prompt]:
    from eva_core.data import make_synthetic_dataset
    from eva_core.data.video_clips import ClipSpec, VideoClipDataset, clips_from_sources
    from eva_core.world_model.grpo import Conditioning

    sources = list(sources)
    if synthetic:
        syn = out / f"synthetic_{tag}"
        with accelerator.main_process_first():
            if accelerator.is_main_process and not syn.is_dir():
                make_synthetic_dataset(syn, episodes=synthetic, frames=data.synthetic_frames,
                                       size=max(wm.height, wm.width), fps=wm.fps, seed=synth_seed, progress=False,
                                       embodiment=load_emb(embodiment))
        sources.append(str(syn))
    if not sources:
        return []
    spec = ClipSpec(num_frames=1, fps=wm.fps, height=wm.height, width=wm.width, camera=data.camera)
    refs = clips_from_sources(sources, spec, data.stride_s, data.instruction)
    if data.max_prompts:
        refs = refs[:data.max_prompts]
    ds = VideoClipDataset(refs, spec)
    prompts = []
    for i in range(len(ds)):
        item = ds[i]
        inp = wm.conditioning(item["caption"], wm.context_clip(item["first_frame"], None))
        prompts.append(Prompt(item["first_frame"], item["caption"],
                              Conditioning(inp.text.cpu(), inp.image.cpu(), inp.hist_latents.cpu())))
    return prompts


# ---- model --------------------------------------------------------------------------------------
def build(cfg, device):
    from eva_core.world_model.best_of import load_scorer
    from training.sft import build_world_model

    wm = build_world_model(cfg.model, device)
    if wm.cfg.conditioning != "history":
        raise ValueError("model: conditioning: GRPO needs 'history' (diffusion-forcing) conditioning")
    scorer = load_scorer(cfg.reward.idm, cfg.reward.embodiment, fps=wm.fps)
    scorer.batch_size = cfg.reward.batch_size
    return wm, scorer


def sampling_schedule(wm, num_steps: int, device):
    sched = wm.c.scheduler
    sched.set_timesteps(num_steps, device=device)
    return sched.timesteps.float().cpu(), sched.sigmas.float().cpu()


def decode_and_score(wm, scorer, final_latents: torch.Tensor):
    """Decode all clips of a group in one decoder call (the model config's: VAE or light decoder)
    and score them in one IDM call."""
    t0 = time.perf_counter()
    video = wm.decode_latents(final_latents.to(wm.device))  # (B, 3, T, H, W) [-1, 1]
    t1 = time.perf_counter()
    res = scorer.score_video(video.permute(0, 2, 1, 3, 4))
    return video.cpu(), res, t1 - t0, time.perf_counter() - t1


def save_adapter(accelerator, model, out_dir: Path, deploy_cfg: dict, deployed=None) -> Path:
    """peft layout (adapter_model.safetensors + adapter_config.json) + world_model.yaml beside it,
    naming the adapter at `deployed(path)` (where the run will live, for an --overwrite)."""
    from safetensors.torch import save_file

    from eva_core.atomic_io import atomic_dir, write_text

    state = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return out_dir
    sd = {k.replace(".default.", "."): v.detach().cpu().contiguous() for k, v in state.items() if "lora_" in k}
    with atomic_dir(out_dir / "lora") as tmp:
        save_file(sd, str(tmp / "adapter_model.safetensors"))
        accelerator.unwrap_model(model).peft_config["default"].save_pretrained(str(tmp))
    deploy = {k: v for k, v in deploy_cfg.items() if k != "device"}
    prior = deploy.get("lora")
    where = deployed(out_dir / "lora") if deployed else (out_dir / "lora").resolve()
    deploy["lora"] = ([*prior] if isinstance(prior, list) else [prior] if prior else []) + [str(where)]
    if len(deploy["lora"]) == 1:
        deploy["lora"] = deploy["lora"][0]
    deploy["merge_lora"] = True
    write_text(out_dir / "world_model.yaml", yaml.safe_dump({"world_model": deploy}, sort_keys=False))
    return out_dir


def plot_rewards(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eva_core.atomic_io import atomic_path

    steps = [r["step"] for r in rows]
    mean = np.array([r["reward_mean"] for r in rows])
    std = np.array([r["reward_std"] for r in rows])
    fig, ax = plt.subplots(1, 2, figsize=(9, 3))
    ax[0].plot(steps, mean)
    ax[0].fill_between(steps, mean - std, mean + std, alpha=0.3)
    ax[0].set(xlabel="step", ylabel="executability reward", title="rollout reward (mean ± std)")
    ax[1].plot(steps, [r["kl"] for r in rows])
    ax[1].set(xlabel="step", ylabel="KL to reference", title="KL")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def save_rollout_media(out: Path, step: int, video: torch.Tensor, res, fps: float, n: int, names=None) -> None:
    from eva_core.reward.plots import plot_action_curves
    from eva_core.world_model import encoders

    import matplotlib.pyplot as plt

    for i in range(min(n, video.shape[0])):
        stem = out / "rollouts" / f"step_{step:06d}_{i}"
        write_mp4(stem.with_suffix(".mp4"), encoders.video_to_frames(video[i]), fps)
        fig = plot_action_curves(res.actions[i].numpy(), stem.parent / f"{stem.name}_actions.png", fps=fps,
                                 names=names, title=f"step {step} rollout {i}: reward {float(res.score[i]):.3f}")
        plt.close(fig)


# ---- one GRPO iteration -------------------------------------------------------------------------
def collect(model, wm, scorer, prompts, g: GRPOSection, timesteps, sigmas, rng: random.Random, gen, patch, dtype):
    """Rollouts for the given prompts (G each), rewards batched per group; returns everything on CPU."""
    from eva_core.world_model import grpo

    trajs, scores, videos, results = [], [], [], []
    timing = {"rollout": 0.0, "decode": 0.0, "reward": 0.0}
    for p in prompts:
        window = grpo.sde_window(len(timesteps), g.sde_window, rng)
        noise = torch.randn((g.group_size, *wm.latent_shape), generator=gen).to(wm.device)
        t0 = time.perf_counter()
        tr = grpo.rollout(model, p.cond, noise, timesteps, sigmas, window, patch, dtype, g.std_schedule, g.eta, gen)
        timing["rollout"] += time.perf_counter() - t0
        video, res, td, tr_ = decode_and_score(wm, scorer, tr.final)
        timing["decode"] += td
        timing["reward"] += tr_
        trajs.append(tr)
        scores.append(res.score.float())
        videos.append(video)
        results.append(res)
    return trajs, torch.cat(scores), videos, results, timing


def update(accelerator, model, unwrapped, opt, params, trajs, adv, g: GRPOSection, tr: TrainSection, rng, patch,
           dtype) -> dict:
    """num_inner_epochs over the collected samples. Each epoch's minibatches (x their trained steps)
    are split into `optimizer_steps_per_epoch` runs whose gradients are accumulated, one optimiser
    step each: a step on one group alone is too noisy to learn from at small scale."""
    from eva_core.world_model import grpo

    traj = grpo.Trajectories.cat(trajs) if len(trajs) > 1 else trajs[0]
    n = len(traj)
    sde_idx = [int(k) for k in torch.nonzero(traj.sde_steps).flatten()]
    n_train = max(1, int(len(sde_idx) * g.timestep_fraction))
    stats = {"policy_loss": [], "kl": [], "clip_frac": [], "approx_kl": [], "ratio": [], "grad_norm": []}
    dev = accelerator.device
    model.train()
    for _ in range(g.num_inner_epochs):
        order = torch.tensor(rng.sample(range(n), n))
        batches = [order[s:s + g.train_batch_size] for s in range(0, n, g.train_batch_size)]
        runs = np.array_split(np.arange(len(batches)), min(g.optimizer_steps_per_epoch, len(batches)))
        for run in runs:
            work = [(batches[b], k) for b in run for k in rng.sample(sde_idx, n_train)]
            run_samples = n_train * sum(len(batches[b]) for b in run)
            for j, (idx, k) in enumerate(work):
                ctx = accelerator.no_sync(model) if j < len(work) - 1 else nullcontext()
                with ctx:
                    out = grpo.grpo_step_loss(model, unwrapped, traj, idx, k, adv[idx], g.clip_range, g.beta, patch,
                                              dtype, dev)
                    # weight by the minibatch's share of the run's samples: the mean over the run
                    accelerator.backward(out.loss * (len(idx) / run_samples))
                for key in ("policy_loss", "kl", "clip_frac", "approx_kl"):
                    stats[key].append(float(getattr(out, key)))
                stats["ratio"].append(float(out.ratio.mean()))
            gn = accelerator.clip_grad_norm_(params, tr.grad_clip)
            stats["grad_norm"].append(float(gn))
            opt.step()
            opt.zero_grad(set_to_none=True)
    return {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}


# ---- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(wm, scorer, prompts, g: GRPOSection, samples: int, seed: int, patch, dtype) -> dict:
    """Mean reward on `prompts`: `samples` SDE rollouts each (fixed seeds) and one ODE sample each."""
    from eva_core.world_model import grpo

    timesteps, sigmas = sampling_schedule(wm, g.num_steps, wm.device)
    model = wm.transformer.eval()
    adapted = bool(getattr(model, "peft_config", None))
    sde_r, ode_r, kls = [], [], []
    for i, p in enumerate(prompts):
        gen = torch.Generator().manual_seed(seed * 7919 + i)
        noise = torch.randn((samples, *wm.latent_shape), generator=gen).to(wm.device)
        full = torch.ones(len(timesteps), dtype=torch.bool)
        tr = grpo.rollout(model, p.cond, noise, timesteps, sigmas, full, patch, dtype, g.std_schedule, g.eta, gen)
        sde_r += decode_and_score(wm, scorer, tr.final)[1].score.tolist()
        if adapted:
            kls += grpo.trajectory_kl(model, tr, patch, dtype, wm.device).tolist()
        ode = grpo.rollout(model, p.cond, noise[:1], timesteps, sigmas, torch.zeros_like(full), patch, dtype)
        ode_r += decode_and_score(wm, scorer, ode.final)[1].score.tolist()
    return {"prompts": len(prompts), "samples_per_prompt": samples, "seed": seed,
            "reward_mean_sde": float(np.mean(sde_r)), "reward_std_sde": float(np.std(sde_r)),
            "reward_mean_ode": float(np.mean(ode_r)), "reward_std_ode": float(np.std(ode_r)),
            "rewards_sde": [float(r) for r in sde_r], "rewards_ode": [float(r) for r in ode_r],
            # KL to the adapter-disabled reference along the SDE samples, per step (null without an adapter)
            "kl_to_reference": float(np.mean(kls)) if kls else None}


def paired_difference(res: dict, base: dict, where: str) -> dict:
    """This evaluation minus `base` (the same prompts and seeds), sample by sample: the mean
    difference and its standard error over samples and over prompts (the per-prompt mean
    differences: the conservative one), for SDE and ODE samples."""
    out = {}
    for kind in ("sde", "ode"):
        a, b = np.asarray(res[f"rewards_{kind}"]), np.asarray(base.get(f"rewards_{kind}") or [])
        if a.shape != b.shape or res["seed"] != base.get("seed"):
            raise ValueError(f"{where}: not an evaluation of the same prompts and seeds "
                             f"({len(b)} vs {len(a)} {kind} samples, seed {base.get('seed')} vs {res['seed']})")
        d = a - b
        per_prompt = d.reshape(int(res["prompts"]), -1).mean(1)   # samples of one prompt are correlated
        se = lambda x: float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else None  # noqa: E731
        out[kind] = {"mean_diff": float(d.mean()), "stderr": se(d), "stderr_prompts": se(per_prompt),
                     "n": int(len(d)), "better_frac": float((d > 0).mean()),
                     "prompts_better_frac": float((per_prompt > 0).mean())}
    return out


def run_eval(args, cfg, out: Path) -> dict:
    from eva_core.atomic_io import write_json
    from eva_core.world_model import lora

    from accelerate import Accelerator

    base = None
    if args.baseline:   # read before any work: a bad path fails at once
        try:
            base = json.loads(Path(args.baseline).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--baseline {args.baseline}: not a readable eval.json ({e})") from None
        if not isinstance(base, dict) or not isinstance(base.get("rewards_sde"), list):
            raise ValueError(f"--baseline {args.baseline}: not an eval.json with per-sample rewards (rewards_sde)")
    check_inputs(**{"--lora": args.lora, "data.eval_sources": cfg.data.eval_sources}, **grpo_inputs(cfg))
    run = prepare_output_dir(out, overwrite=args.overwrite)
    out = run.path
    acc = Accelerator(cpu=args.cpu or not torch.cuda.is_available())
    wm, scorer = build(cfg, acc.device)
    if args.lora:
        lora.load_lora(wm.transformer, args.lora)
    d = cfg.data
    prompts = load_prompts(wm, d.eval_sources, d.eval_synthetic, d.eval_synthetic_seed, d, out, "eval", acc,
                           cfg.reward.embodiment)
    if not prompts:
        raise ValueError("data: eval_sources/eval_synthetic: no held-out prompts to evaluate")
    tr = wm.transformer
    seed, samples = cfg.train.seed + 12345, cfg.log.eval_samples
    if base is not None and (base.get("prompts"), base.get("samples_per_prompt"), base.get("seed")) != \
            (len(prompts), samples, seed):   # before the evaluation, not after it
        raise ValueError(f"--baseline {args.baseline}: evaluates {base.get('prompts')} prompts x "
                         f"{base.get('samples_per_prompt')} samples with seed {base.get('seed')}; this run would "
                         f"evaluate {len(prompts)} x {samples} with seed {seed}")
    res = evaluate(wm, scorer, prompts, cfg.grpo, samples, seed, tr.config.patch_size, tr.dtype)
    res["lora"] = args.lora
    if args.baseline:
        res["vs_baseline"] = {"baseline": args.baseline, **paired_difference(res, base, args.baseline)}
    write_json(out / "eval.json", res)
    short = {k: v for k, v in res.items() if not k.startswith("rewards_")}
    print(f"eva-train-grpo --eval-only: {short}")
    run.commit()
    return res


# ---- training -----------------------------------------------------------------------------------
def train(argv=None):
    args = parse_args(argv)
    cfg = load_config(GRPOConfig, args.config, args.set)
    out = Path(args.output_dir)
    if args.eval_only:
        return run_eval(args, cfg, out)
    data, g, tr, log = cfg.data, cfg.grpo, cfg.train, cfg.log
    check_inputs(**{"data.sources": data.sources}, **grpo_inputs(cfg))  # before any output
    run = prepare_output_dir(out, args.resume, args.overwrite)
    out = run.path
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from eva_core.world_model.training import setup_trainable

    gpu = torch.cuda.is_available() and not args.cpu
    mp = tr.mixed_precision if tr.mixed_precision != "auto" else ("bf16" if gpu else "no")
    accelerator = Accelerator(mixed_precision=mp, cpu=args.cpu)
    set_seed(tr.seed)
    main = accelerator.is_main_process
    wm, scorer = build(cfg, accelerator.device)
    prompts = load_prompts(wm, data.sources, data.synthetic, data.synthetic_seed, data, out, "train", accelerator,
                           cfg.reward.embodiment)
    if not prompts:
        raise ValueError("data: sources/synthetic: no training prompts")
    transformer = wm.transformer
    params = setup_trainable(transformer, "lora", tr.lora_rank, tr.lora_alpha, tr.gradient_checkpointing)
    patch, dtype = transformer.config.patch_size, transformer.dtype
    opt = torch.optim.AdamW(params, lr=tr.lr, betas=tuple(tr.betas), weight_decay=tr.weight_decay)
    model, opt = accelerator.prepare(transformer, opt)
    unwrapped = accelerator.unwrap_model(model)
    step, extra = resume_from(accelerator, latest_checkpoint(out) if args.resume else None)
    best = extra.get("best_reward", -float("inf"))
    timesteps, sigmas = sampling_schedule(wm, g.num_steps, wm.device)
    if main:
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        print(f"eva-train-grpo: {len(prompts)} training prompts, group {g.group_size}, {g.num_steps} steps, "
              f"{accelerator.num_processes} process(es)")
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=step + 1 if step else (0 if args.resume else None))
    from tqdm import tqdm

    bar = tqdm(total=tr.epochs, initial=step, desc="grpo", disable=not (main and log.progress))
    metrics_path = out / "metrics.jsonl"
    if main:  # on resume, the killed run's rows past the checkpoint go
        truncate_jsonl(metrics_path, step)
    accelerator.wait_for_everyone()
    rows = [r for r in read_jsonl(metrics_path) if r.get("step", 0) <= step]
    names = getattr(scorer.config, "names", None) or None
    while step < tr.epochs:
        rank_seed = tr.seed * 1_000_003 + step * 101 + accelerator.process_index
        rng, gen = random.Random(rank_seed), torch.Generator().manual_seed(rank_seed)
        chosen = [prompts[rng.randrange(len(prompts))] for _ in range(g.prompts_per_step)]
        t0 = time.perf_counter()
        model.eval()
        trajs, scores, videos, results, timing = collect(model, wm, scorer, chosen, g, timesteps, sigmas, rng, gen,
                                                         patch, dtype)
        adv, zero_frac = _advantages(scores, g)
        t1 = time.perf_counter()
        stats = update(accelerator, model, unwrapped, opt, params, trajs, adv, g, tr, rng, patch, dtype)
        timing["update"] = time.perf_counter() - t1
        step += 1
        all_scores = accelerator.gather(scores.to(accelerator.device)).cpu()
        red = {k: float(accelerator.reduce(torch.tensor(v, device=accelerator.device), "mean"))
               for k, v in {**stats, "zero_spread_frac": zero_frac}.items()}
        rec = {"step": step, "reward_mean": float(all_scores.mean()), "reward_std": float(all_scores.std(unbiased=False)),
               **red, **{f"time_{k}": v for k, v in timing.items()}, "time_step": time.perf_counter() - t0}
        rows.append(rec)
        if main:
            append_jsonl(metrics_path, rec)
            for k in ("reward_mean", "reward_std", "kl", "clip_frac", "approx_kl", "policy_loss", "zero_spread_frac",
                      "grad_norm", "ratio"):
                writer.add_scalar(f"grpo/{k}", rec[k], step)
            plot_rewards(out / "reward.png", rows)
            if log.videos and (step % log.video_every == 0 or step == 1 or step == tr.epochs):
                save_rollout_media(out, step, videos[0], results[0], wm.fps, log.videos, names)
            bar.update(1)
            bar.set_postfix(reward=f"{rec['reward_mean']:.3f}", kl=f"{rec['kl']:.2e}")
        if rec["reward_mean"] > best:
            best = rec["reward_mean"]
            save_adapter(accelerator, model, out / "best", cfg.model, run.final_path)
            if main:
                from eva_core.atomic_io import write_json

                write_json(out / "best" / "best.json", {"step": step, "reward_mean": best})
        if step % log.save_every == 0 or step == tr.epochs:
            save_checkpoint(accelerator, out, step, {"best_reward": best}, log.keep)
    bar.close()
    save_adapter(accelerator, model, out, cfg.model, run.final_path)
    if main:
        writer.close()
        print(f"eva-train-grpo: done; reward {rows[0]['reward_mean']:.3f} -> {rows[-1]['reward_mean']:.3f} "
              f"(best {best:.3f}); adapter {run.final / 'lora'}; planner config {run.final / 'world_model.yaml'}")
    write_rank_digest(accelerator, params, out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if main:
        run.commit()
    return run.final


def grpo_inputs(cfg) -> dict:
    """The input paths of the config (model and reward IDM), for check_inputs."""
    idm = cfg.reward.idm if cfg.reward.idm != "random_tiny" else None
    return {"reward.idm": idm, **model_inputs(cfg.model)}


def _advantages(scores: torch.Tensor, g: GRPOSection):
    from eva_core.world_model.grpo import group_advantages

    return group_advantages(scores, g.group_size, g.adv_clip)


def main(argv=None) -> int:
    return run_cli("eva-train-grpo", train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
