"""Flow-GRPO step benchmark on the tiny world model (CPU).

    .venv/bin/python bench/grpo.py [--repeats 3] [--steps 10] [--group 8] [--window 2]

1. Wall time of one GRPO step (one prompt, a group of G) split into rollout, VAE decode, IDM
   reward and update (the same functions as eva-train-grpo: training/grpo.py collect/update).
2. The reward cost for the group: one batched decode + IDM call vs clip by clip (ratio).
3. SDE window (Flow-GRPO-Fast, k trained steps) vs the full SDE (all steps trained): step time
   and its update part (ratio). Variants are interleaved, medians printed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def setup(args):
    from eva_core.data import synthetic_episode
    from eva_core.embodiment import load_embodiment
    from eva_core.world_model import WorldModel, WorldModelConfig
    from eva_core.world_model.best_of import load_scorer
    from eva_core.world_model.grpo import Conditioning
    from eva_core.world_model.training import setup_trainable
    from training.grpo import Prompt

    wm = WorldModel.from_config(WorldModelConfig.tiny_default(num_frames=args.frames, scheduler="euler",
                                                              hist_guidance=0.0, lang_guidance=0.0))
    params = setup_trainable(wm.transformer, "lora", 8, 8.0, gradient_checkpointing=False)
    scorer = load_scorer("random_tiny")
    ep = synthetic_episode(load_embodiment(), 4, 64, seed=0)
    inp = wm.conditioning(ep.instruction, wm.context_clip(ep.frames[0], None))
    prompt = Prompt(ep.frames[0], ep.instruction, Conditioning(inp.text, inp.image, inp.hist_latents))
    return wm, params, scorer, prompt


def one_step(wm, params, scorer, prompt, args, window: int, seed: int) -> dict:
    from accelerate import Accelerator

    from training.grpo import GRPOSection, TrainSection, _advantages, collect, sampling_schedule, update

    g = GRPOSection(group_size=args.group, num_steps=args.steps, sde_window=window, num_inner_epochs=1,
                    train_batch_size=args.group)
    tr = TrainSection()
    acc = one_step.acc = getattr(one_step, "acc", None) or Accelerator(cpu=True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    model = wm.transformer
    ts, sig = sampling_schedule(wm, g.num_steps, wm.device)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.eval()
    trajs, scores, videos, _, timing = collect(model, wm, scorer, [prompt], g, ts, sig, rng, gen,
                                               model.config.patch_size, model.dtype)
    adv, _ = _advantages(scores, g)
    t1 = time.perf_counter()
    update(acc, model, model, opt, params, trajs, adv, g, tr, rng, model.config.patch_size, model.dtype)
    timing["update"] = time.perf_counter() - t1
    timing["total"] = time.perf_counter() - t0
    timing["_final"] = trajs[0].final
    return timing


def reward_batched_vs_clip(wm, scorer, final) -> tuple[float, float]:
    from eva_core.world_model import encoders

    t0 = time.perf_counter()
    scorer.score_video(encoders.vae_decode(wm.c.vae, final).permute(0, 2, 1, 3, 4))
    t1 = time.perf_counter()
    for i in range(final.shape[0]):
        scorer.score_video(encoders.vae_decode(wm.c.vae, final[i:i + 1]).permute(0, 2, 1, 3, 4))
    return t1 - t0, time.perf_counter() - t1


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="sampling steps")
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--window", type=int, default=2, help="SDE window size (Flow-GRPO-Fast)")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    wm, params, scorer, prompt = setup(args)
    one_step(wm, params, scorer, prompt, args, 0, 0)  # warm-up
    full, win, rb, rc = [], [], [], []
    for r in range(args.repeats):
        full.append(one_step(wm, params, scorer, prompt, args, 0, r))
        win.append(one_step(wm, params, scorer, prompt, args, args.window, r))
        b, c = reward_batched_vs_clip(wm, scorer, full[-1]["_final"])
        rb.append(b)
        rc.append(c)
    med = lambda rows, k: statistics.median(x[k] for x in rows)  # noqa: E731
    print(f"tiny world model {wm.height}x{wm.width}x{wm.num_frames}, group {args.group}, {args.steps} steps, "
          f"{args.threads} thread(s); medians of {args.repeats}")
    print("[1] one GRPO step (full SDE, all steps trained, 1 inner epoch):")
    for k in ("rollout", "decode", "reward", "update", "total"):
        print(f"    {k:8s} {med(full, k):7.3f} s  ({100 * med(full, k) / med(full, 'total'):5.1f} %)")
    b, c = statistics.median(rb), statistics.median(rc)
    print(f"[2] decode + IDM reward for the group: batched {b:.3f} s vs clip by clip {c:.3f} s -> {c / b:.2f}x")
    print(f"[3] SDE window {args.window} vs full ({args.steps} steps): step {med(win, 'total'):.3f} s vs "
          f"{med(full, 'total'):.3f} s -> {med(full, 'total') / med(win, 'total'):.2f}x; update "
          f"{med(win, 'update'):.3f} s vs {med(full, 'update'):.3f} s -> {med(full, 'update') / med(win, 'update'):.2f}x")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    main()
