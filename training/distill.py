"""Distil a (GRPO-aligned) world model into a K-step, guidance-free student with DMD2 (`eva-train-distill`).

Read top to bottom: config (checked before anything is written) -> accelerator -> the teacher world
model (a planner world_model.yaml + overrides; LoRAs merged) -> prompts (first frames + instructions:
twin renders, episode files or synthetic episodes; DMD is data-free beyond its conditioning) ->
student and fake score, both copies of the teacher (LoRA or full) -> optional regression warm-up on
teacher ODE pairs (noise -> teacher sample) -> DMD2 loop: `fake_updates` flow-matching updates of the
fake score on the student's samples per student update (two time-scale rule), then the DMD generator
loss (eva_core/world_model/dmd.py) on the student's backward-simulated samples -> resumable checkpoints,
TensorBoard, metrics.jsonl, loss.png -> final/ (the student) + final/world_model.yaml (sampler: student)
-> eval: student vs teacher videos on held-out prompts, and with an IDM their rewards, action error and
action plots.

    eva-train-distill --config config/training/distill_tiny.yaml --output-dir runs/distill_k2   # CPU, minutes
    accelerate launch --config_file config/accelerate/fsdp_8gpu.yaml -m training.distill \\
        --config config/training/distill.yaml --output-dir runs/distill_14b
    eva-train-distill --config ... --output-dir runs/distill_k2 --resume

Outputs in --output-dir: final/lora/ (student adapter, stacked after the teacher's) or
final/transformer/ (full), final/world_model.yaml (the planner's `world_model:` section, sampler:
student), checkpoints/step_*/, tb/, metrics.jsonl, loss.png, config.yaml, eval/ (videos, eval.json,
action plots), summary.json.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from eva_core.config import ConfigError, Section, param
from training.common import (OptimSection, append_jsonl, latest_checkpoint, load_config, load_emb, load_yaml, prepare_output_dir,
                             resume_from, run_cli, save_checkpoint, world_model_config, write_mp4,
                             write_rank_digest)

PATH_KEYS = ("transformer_dir", "vae_dir", "model_dir", "ckpt", "reward_idm")


@dataclass
class DataSection(Section):
    twin_tasks: list[str] = param([], "twin tasks whose first frames (reset from a seed) are training prompts")
    twin_seeds: list[int] = param([0, 1, 2, 3, 4, 5, 6, 7], "twin reset seeds of the training prompts")
    eval_twin_seeds: list[int] = param([100, 101, 102], "twin reset seeds of the held-out prompts")
    sources: list[str] = param([], "episode files/dirs and EVA CSVs (their clip first frames) as training prompts")
    synthetic: int = param(0, "also N synthetic episodes as training prompts", ge=0)
    synthetic_seed: int = param(0, "seed of the synthetic episodes")
    synthetic_frames: int = param(32, "frames per synthetic episode", ge=1)
    stride_s: float = param(1.0, "seconds between prompt frames of an episode", unit="s", gt=0)
    instruction: str | None = param(None, "override every instruction")
    camera: str = param("cam_high", "camera of the prompts")
    max_prompts: int = param(0, "at most this many training prompts (0: all)", ge=0)


@dataclass
class DMDSection(Section):
    student_steps: int = param(2, "K: the student's transformer calls per chunk", ge=1, le=4)
    student_timesteps: list[float] | None = param(None, "its timesteps (default: world_model/student.py's schedule)")
    hist_guidance: float | None = param(None, "the real score's history guidance (default: the teacher's)")
    lang_guidance: float | None = param(None, "the real score's language guidance (default: the teacher's)")
    fake_updates: int = param(5, "fake-score updates per student update (DMD2's two time-scale rule)", ge=1)
    sigma_min: float = param(0.02, "smallest σ at which student samples are re-noised", gt=0, lt=1)
    sigma_max: float = param(0.98, "largest such σ", gt=0, le=1)
    backward_simulation: bool = param(True, "K > 1: train step j on the student's own simulated input (DMD2 §4.5)")
    regression_steps: int = param(0, "warm-up steps regressing onto teacher ODE pairs (0: none)", ge=0)
    regression_pairs: int = param(16, "teacher ODE pairs (noise -> teacher sample) for the warm-up", ge=1)

    def validate(self):
        if self.sigma_min >= self.sigma_max:
            self.error("sigma_min", f"must be below sigma_max ({self.sigma_max}), got {self.sigma_min}")


@dataclass
class TrainSection(OptimSection):
    mode: str = param("lora", "student and fake score as LoRA adapters or full copies", choices=("lora", "full"))
    lr: float = param(2e-6, "student AdamW learning rate", gt=0)
    fake_lr: float = param(2e-6, "fake-score AdamW learning rate", gt=0)
    betas: list[float] = param([0.0, 0.999], "AdamW betas (DMD2: beta1 = 0)")
    weight_decay: float = param(0.01, "AdamW weight decay", ge=0)
    batch_size: int = param(1, "prompts per process and update", ge=1)
    max_steps: int = param(1000, "student updates (after the warm-up)", ge=1)


@dataclass
class LogSection(Section):
    log_every: int = param(10, "steps between logged losses", ge=1)
    save_every: int = param(100, "steps between resumable checkpoints", ge=1)
    keep: int = param(1, "checkpoints to keep (0: all)", ge=0)
    eval_prompts: int = param(4, "held-out prompts in the final eval (0: none)", ge=0)
    videos: int = param(2, "student-vs-teacher videos in the final eval", ge=0)
    idm: str | None = param(None, "IDM (checkpoint dir / EVA .pt) for the eval's rewards and action plots")
    progress: bool = param(True, "show a progress bar")


@dataclass
class DistillConfig(Section):
    """The whole `eva-train-distill` config (config/training/distill*.yaml)."""

    teacher: str | None = param(None, "the teacher: a planner world_model.yaml (its relative paths resolve beside it)")
    model: dict = param({}, "WorldModelConfig keys over the teacher's (e.g. its sampler: scheduler, num_steps, guidance)")
    data: DataSection = param(DataSection, "prompts (conditioning only)")
    dmd: DMDSection = param(DMDSection, "DMD2")
    train: TrainSection = param(TrainSection, "optimisation")
    log: LogSection = param(LogSection, "logging, checkpoints and the final eval")

    def validate(self):
        teacher_model(self.teacher, self.model, self._source)
        if not (self.data.twin_tasks or self.data.sources or self.data.synthetic):
            raise ConfigError(self._source, "data", "twin_tasks", "no prompts: set twin_tasks, sources or synthetic")
        if self.dmd.student_timesteps is not None and len(self.dmd.student_timesteps) != self.dmd.student_steps:
            self.dmd.error("student_timesteps", f"has {len(self.dmd.student_timesteps)} entries but student_steps "
                           f"is {self.dmd.student_steps}")


def teacher_model(teacher: str | None, overrides: dict, source: str = "<dict>") -> dict:
    """The teacher's WorldModelConfig mapping: the world_model section of `teacher` (paths made
    absolute against its directory) with `overrides` on top; checked (ConfigError)."""
    base = {}
    if teacher:
        path = Path(teacher)
        if not path.is_file():
            raise ConfigError(source, "", "teacher", f"no such file: {teacher}")
        data = load_yaml(path)
        base = dict(data.get("world_model", data))
        for k in PATH_KEYS:
            if isinstance(base.get(k), str) and not Path(base[k]).is_absolute():
                base[k] = str((path.parent / base[k]).resolve())
        lo = base.get("lora")
        if lo:
            base["lora"] = [str((path.parent / p).resolve()) for p in ([lo] if isinstance(lo, str) else lo)]
    model = {**base, **overrides}
    world_model_config(model, source, "model")
    return model


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eva-train-distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML with teacher/model/data/dmd/train/log")
    p.add_argument("--output-dir", required=True, help="run directory (must be new or empty unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its newest checkpoint")
    p.add_argument("--cpu", action="store_true", help="force the CPU")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


# ---- prompts --------------------------------------------------------------------------------------
def twin_first_frames(tasks, seeds, height: int, width: int, camera: str, embodiment=None):
    """[(frame, instruction)] of each twin task reset from each seed."""
    from eva_core.sim.registry import make_task

    emb = load_emb(embodiment)
    out = []
    for name in tasks:
        task = make_task(name, emb)
        twin = task.make_twin()
        try:
            for s in seeds:
                task.reset(twin, int(s))
                out.append((twin.render(camera, height, width), task.instruction))
        finally:
            twin.close()
    return out


def episode_first_frames(wm, data: DataSection, out: Path):
    from eva_core.data import make_synthetic_dataset
    from eva_core.data.video_clips import ClipSpec, VideoClipDataset, clips_from_sources

    sources = list(data.sources)
    if data.synthetic:
        syn = out / "synthetic_data"
        if not syn.is_dir():
            make_synthetic_dataset(syn, episodes=data.synthetic, frames=data.synthetic_frames,
                                   size=max(wm.height, wm.width), fps=wm.fps, seed=data.synthetic_seed, progress=False,
                                   embodiment=load_emb(None))
        sources.append(str(syn))
    if not sources:
        return []
    spec = ClipSpec(num_frames=1, fps=wm.fps, height=wm.height, width=wm.width)
    ds = VideoClipDataset(clips_from_sources(sources, spec, data.stride_s, data.instruction), spec)
    return [(ds[i]["first_frame"], ds[i]["caption"]) for i in range(len(ds))]


def conditionings(wm, prompts) -> list:
    """The teacher's conditioning of each (frame, instruction), on the CPU."""
    from eva_core.world_model.dmd import inputs_to

    return [inputs_to(wm.conditioning(text, wm.context_clip(frame, None)), "cpu") for frame, text in prompts]


class _Call:
    """A (possibly wrapped) transformer with the unwrapped one's config, for sampler.transformer_forward."""

    def __init__(self, wrapped, inner):
        self._wrapped, self.config, self.patch_embedding = wrapped, inner.config, inner.patch_embedding

    def __call__(self, *a, **kw):
        return self._wrapped(*a, **kw)


# ---- the loop -----------------------------------------------------------------------------------------
def batch_of(conds, idx, device):
    from eva_core.world_model.dmd import inputs_to, stack_inputs

    return inputs_to(stack_inputs([conds[i] for i in idx]), device)


def plot_losses(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eva_core.atomic_io import atomic_path

    fig, ax = plt.subplots(1, 3, figsize=(12, 3))
    for a, key, title in zip(ax, ("fake_loss", "generator_loss", "regression_loss"),
                             ("fake score (flow matching)", "DMD generator", "regression warm-up")):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            a.plot(*zip(*pts))
        a.set(xlabel="step", title=title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def export_student(accelerator, model, teacher_cfg: dict, tr: TrainSection, dmd: DMDSection, out: Path) -> Path:
    """final/lora (stacked after the teacher's adapters) or final/transformer, and final/world_model.yaml."""
    from safetensors.torch import save_file

    from eva_core.atomic_io import atomic_dir, write_text

    state = accelerator.get_state_dict(model)
    final = out / "final"
    if not accelerator.is_main_process:
        return final
    unwrapped = accelerator.unwrap_model(model)
    deploy = {k: v for k, v in teacher_cfg.items() if k != "device"}
    if tr.mode == "lora":
        sd = {k.replace(".default.", "."): v.detach().cpu().contiguous() for k, v in state.items() if "lora_" in k}
        with atomic_dir(final / "lora") as tmp:
            save_file(sd, str(tmp / "adapter_model.safetensors"))
            unwrapped.peft_config["default"].save_pretrained(str(tmp))
        prior = deploy.get("lora")
        deploy["lora"] = ([*prior] if isinstance(prior, list) else [prior] if prior else []) + [
            str((final / "lora").resolve())]
        deploy["merge_lora"] = True
    else:   # the teacher's adapters are merged into these weights
        sd = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        with atomic_dir(final / "transformer") as tmp:
            save_file(sd, str(tmp / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
            unwrapped.save_config(str(tmp))
        deploy.pop("lora", None)
        deploy.pop("merge_lora", None)
        deploy["transformer_dir"] = str((final / "transformer").resolve())
    deploy.update(sampler="student", student_steps=dmd.student_steps)
    if dmd.student_timesteps is not None:
        deploy["student_timesteps"] = [float(t) for t in dmd.student_timesteps]
    write_text(final / "world_model.yaml", yaml.safe_dump({"world_model": deploy}, sort_keys=False))
    return final


@torch.no_grad()
def evaluate(final: Path, teacher_cfg: dict, prompts, log: LogSection, out: Path, seed: int) -> dict:
    """Student (loaded by path, as the planner loads it) vs teacher on held-out prompts, same seeds."""
    from eva_core.world_model import build_world_model

    deploy = load_yaml(final / "world_model.yaml")["world_model"]
    stu, tea = build_world_model(deploy), build_world_model(teacher_cfg)
    res = {"prompts": len(prompts), "seed": seed, "student": [], "teacher": []}
    videos = {"student": [], "teacher": []}
    for i, (frame, text) in enumerate(prompts):
        for name, wm in (("student", stu), ("teacher", tea)):
            videos[name].append(wm.generate(frame, text, seed=seed + i))
            res[name].append({"timing": wm.last_timing})
    for i in range(min(log.videos, len(prompts))):
        write_mp4(out / "eval" / f"student_vs_teacher_{i}.mp4",
                  np.concatenate([videos["student"][i], videos["teacher"][i]], axis=2), stu.fps)
    if log.idm:
        from eva_core.reward.plots import plot_action_curves
        from eva_core.world_model.best_of import load_scorer

        import matplotlib.pyplot as plt

        scorer = load_scorer(log.idm, None, fps=stu.fps)
        scored = {}
        for name in ("student", "teacher"):
            x = torch.from_numpy(np.stack(videos[name])).float().div(127.5).sub(1.0).permute(0, 1, 4, 2, 3)
            scored[name] = scorer.score_video(x)
            res[f"reward_{name}"] = float(scored[name].score.mean())
        a_s, a_t = scored["student"].actions.numpy(), scored["teacher"].actions.numpy()
        res["action_error"] = float(np.abs(a_s - a_t).mean())
        for i in range(min(log.videos, len(prompts))):
            fig = plot_action_curves(a_s[i], out / "eval" / f"actions_{i}.png", fps=stu.fps, reference=a_t[i],
                                     title=f"student (solid) vs teacher (dashed), prompt {i}")
            plt.close(fig)
    from eva_core.atomic_io import write_json

    write_json(out / "eval" / "eval.json", res)
    return res


def train(argv=None) -> Path:
    args = parse_args(argv)
    cfg = load_config(DistillConfig, args.config, args.set)   # a typo stops here, before the output dir
    data, dmd_c, tr, log = cfg.data, cfg.dmd, cfg.train, cfg.log
    teacher_cfg = teacher_model(cfg.teacher, cfg.model, args.config)
    out = Path(args.output_dir)
    prepare_output_dir(out, args.resume)
    from accelerate.utils import set_seed

    from eva_core.world_model import dmd, student
    from eva_core.world_model.config import WorldModelConfig
    from eva_core.world_model.training import setup_trainable
    from accelerate import Accelerator

    mp = tr.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and not args.cpu else "no"
    accelerator = Accelerator(mixed_precision=mp, cpu=args.cpu)
    set_seed(tr.seed)
    main = accelerator.is_main_process
    from eva_core.world_model import WorldModel

    wm = WorldModel.from_config(world_model_config(teacher_cfg, args.config, device=str(accelerator.device)))
    wcfg: WorldModelConfig = wm.cfg
    hg = wcfg.hist_guidance if dmd_c.hist_guidance is None else dmd_c.hist_guidance
    lg = wcfg.lang_guidance if dmd_c.lang_guidance is None else dmd_c.lang_guidance
    sigmas = student.student_sigmas(dmd_c.student_steps, wcfg.shift, dmd_c.student_timesteps)
    t_min, t_max = student.history_timesteps(wcfg)

    prompts = twin_first_frames(data.twin_tasks, data.twin_seeds, wm.height, wm.width, data.camera) \
        + episode_first_frames(wm, data, out)
    if data.instruction:
        prompts = [(f, data.instruction) for f, _ in prompts]
    if data.max_prompts:
        prompts = prompts[:data.max_prompts]
    eval_prompts = twin_first_frames(data.twin_tasks, data.eval_twin_seeds, wm.height, wm.width, data.camera)
    conds = conditionings(wm, prompts)
    if main:
        (out / "config.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "resolved_teacher": teacher_cfg},
                                                        sort_keys=False))
        print(f"eva-train-distill: {len(prompts)} prompts, K = {dmd_c.student_steps} (σ {[round(s, 3) for s in sigmas]}), "
              f"real score guidance hist {hg} lang {lg}, teacher {wcfg.scheduler} x {wcfg.num_steps}")

    teacher = wm.transformer.eval()
    teacher.requires_grad_(False)
    stu_m, fake_m = copy.deepcopy(teacher), copy.deepcopy(teacher)
    p_s = setup_trainable(stu_m, tr.mode, tr.lora_rank, tr.lora_alpha, tr.gradient_checkpointing)
    p_f = setup_trainable(fake_m, tr.mode, tr.lora_rank, tr.lora_alpha, tr.gradient_checkpointing)
    opt_s = torch.optim.AdamW(p_s, lr=tr.lr, betas=tuple(tr.betas), weight_decay=tr.weight_decay)
    opt_f = torch.optim.AdamW(p_f, lr=tr.fake_lr, betas=tuple(tr.betas), weight_decay=tr.weight_decay)
    s_wrapped, f_wrapped, opt_s, opt_f = accelerator.prepare(stu_m, fake_m, opt_s, opt_f)
    stu, fake = _Call(s_wrapped, stu_m), _Call(f_wrapped, fake_m)
    step, _ = resume_from(accelerator, latest_checkpoint(out) if args.resume else None)
    total = dmd_c.regression_steps + tr.max_steps
    dev = accelerator.device
    shape = wm.latent_shape

    pairs = None
    if dmd_c.regression_steps and step < dmd_c.regression_steps:   # teacher ODE pairs, fixed seeds
        g = torch.Generator().manual_seed(tr.seed + 7)
        pairs = []
        for i in range(dmd_c.regression_pairs):
            c = i % len(conds)
            noise = torch.randn((1, *shape), generator=g)
            inp = batch_of(conds, [c], dev)
            target = dmd.teacher_sample(teacher, wm.c.scheduler, noise.to(dev), inp, wcfg.num_steps, hg, lg, g)
            pairs.append((c, noise, target.cpu()))

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, desc="distill", disable=not (main and log.progress))
    rows, acc, t0 = [], {}, time.perf_counter()
    while step < total:
        gen = torch.Generator().manual_seed(tr.seed * 1_000_003 + step * 997 + accelerator.process_index)
        rng = random.Random(tr.seed * 7919 + step * 101 + accelerator.process_index)
        rec = {}
        if step < dmd_c.regression_steps:
            pick = [pairs[rng.randrange(len(pairs))] for _ in range(tr.batch_size)]
            inp = batch_of(conds, [p[0] for p in pick], dev)
            noise = torch.cat([p[1] for p in pick]).to(dev)
            target = torch.cat([p[2] for p in pick]).to(dev)
            loss = dmd.regression_loss(stu, noise, inp, sigmas, t_min, target)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(p_s, tr.grad_clip)
            opt_s.step()
            opt_s.zero_grad(set_to_none=True)
            rec["regression_loss"] = float(loss.detach())
        else:
            fake_losses = []
            for _ in range(dmd_c.fake_updates):
                inp = batch_of(conds, [rng.randrange(len(conds)) for _ in range(tr.batch_size)], dev)
                noise = torch.randn((tr.batch_size, *shape), generator=gen).to(dev)
                j = rng.randrange(len(sigmas)) if dmd_c.backward_simulation else 0
                with torch.no_grad():
                    x0 = dmd.generator_sample(stu, noise, inp, sigmas, t_min, gen, j)
                loss_f = dmd.fake_score_loss(fake, x0, inp, t_min, gen, (dmd_c.sigma_min, dmd_c.sigma_max))
                accelerator.backward(loss_f)
                accelerator.clip_grad_norm_(p_f, tr.grad_clip)
                opt_f.step()
                opt_f.zero_grad(set_to_none=True)
                fake_losses.append(float(loss_f.detach()))
            inp = batch_of(conds, [rng.randrange(len(conds)) for _ in range(tr.batch_size)], dev)
            noise = torch.randn((tr.batch_size, *shape), generator=gen).to(dev)
            j = rng.randrange(len(sigmas)) if dmd_c.backward_simulation else 0
            x0 = dmd.generator_sample(stu, noise, inp, sigmas, t_min, gen, j)
            loss_g, info = dmd.dmd_generator_loss(x0, teacher, fake, inp, t_min, t_max, hg, lg, gen,
                                                  (dmd_c.sigma_min, dmd_c.sigma_max))
            accelerator.backward(loss_g)
            accelerator.clip_grad_norm_(p_s, tr.grad_clip)
            opt_s.step()
            opt_s.zero_grad(set_to_none=True)
            rec.update(fake_loss=sum(fake_losses) / len(fake_losses), generator_loss=float(loss_g.detach()),
                       fake_minus_real=info["fake_minus_real"])
        step += 1
        bar.update(1)
        for k, v in rec.items():
            acc.setdefault(k, []).append(v)
        if step % log.log_every == 0 or step == total:
            row = {"step": step, **{k: float(np.mean(v)) for k, v in acc.items()},
                   "s_per_step": (time.perf_counter() - t0) / log.log_every}
            acc, t0 = {}, time.perf_counter()
            rows.append(row)
            if main:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"train/{k}", v, step)
                append_jsonl(out / "metrics.jsonl", row)
                bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k.endswith("loss")})
        if step % log.save_every == 0 or step == total:
            save_checkpoint(accelerator, out, step, {}, log.keep)
    bar.close()
    # data-parallel replicas must end identical (the 2-process test reads these)
    write_rank_digest(accelerator, [*p_s, *p_f], out)
    final = export_student(accelerator, s_wrapped, teacher_cfg, tr, dmd_c, out)
    summary = {"steps": step, "final": str(final), "student_steps": dmd_c.student_steps, "sigmas": sigmas,
               "processes": accelerator.num_processes}
    if main:
        import json

        from eva_core.atomic_io import write_json

        all_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        plot_losses(out / "loss.png", all_rows)
        writer.close()
        if log.eval_prompts and eval_prompts:
            summary["eval"] = evaluate(final, teacher_cfg, eval_prompts[:log.eval_prompts], log, out, tr.seed + 1000)
            summary["eval"] = {k: v for k, v in summary["eval"].items() if k not in ("student", "teacher")}
        write_json(out / "summary.json", summary)
        print(f"eva-train-distill: done after {step} steps; planner config: {final / 'world_model.yaml'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def main(argv=None) -> int:
    return run_cli("eva-train-distill", train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
