"""Real-time planning at toy scale: the teacher as EVA samples, the naive few-step teacher and the
distilled students side by side, on the committed checkpoints (checkpoints/demo), plus a 14B projection.

    PYTHONPATH=. MUJOCO_GL=egl .venv/bin/python bench/realtime.py [--json OUT] [--students runs/distill_k{K}]
                                                                  [--light checkpoints/demo/light_decoder]

Rows (one chunk per held-out twin first frame and seed, the same frames and seeds for every row):
  teacher_eva       the GRPO-aligned toy world model sampled as EVA samples: UniPC, 40 steps, both guidances
                    (hist 1.5, lang 2.5): 40 x 3 = 120 transformer evaluations
  teacher_cached    teacher_eva with diffusers' FirstBlockCache (threshold 0.2); teacher_cached_taylor with
                    TaylorSeer (interval 5, from step 3, order 1): the training-free alternative (calls still
                    count 120; the projection scales them by the measured denoise fraction)
  teacher_deployed  today's committed sampler: Euler, 8 steps, no guidance (8 evaluations)
  naive_kK          the same teacher, no distillation, at EQUAL CALLS to student_kK: Euler, K steps, one
                    branch (no guidance: with 3 branches K <= 2 calls would not fit one step)
  student_kK        the DMD2 student of eva-train-distill (runs/distill_kK/final/world_model.yaml; where that
                    is missing, the committed checkpoints/demo/world_model_student.yaml if its K matches): K calls
  NAME_light        the row NAME decoding through the light decoder (--light) instead of the VAE; the
                    deployed configuration is student_k{K}_light when world_model_student.yaml says decoder: light
  teacher_eva_reseed  teacher_eva with other seeds: the action error one teacher sample has against another
                    (the spread of the teacher's own distribution; a student cannot be expected below it)
Columns: calls = transformer evaluations per chunk (a batched 3-branch forward counts 3), seconds per
stage (median; one CPU thread; the chunks of all rows interleaved, so load falls on every row alike),
rtf = seconds of motion in a chunk (num_frames / fps) / planning seconds, reward = executability reward
of the committed IDM (mean), action_error = mean |IDM actions − the teacher_eva actions| on the same first
frame and seed (rad / gripper units).
The second table projects the 14B model: calls x the analytic seconds of one transformer evaluation
(FLOPs of the real Wan2.1-I2V-14B config at 480x640x49, at a stated MFU) + VAE decode (FLOPs counted,
at a stated efficiency). Both are estimates, not measurements.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "checkpoints" / "demo"
EVA_SAMPLER = dict(scheduler="unipc", num_steps=40, hist_guidance=1.5, lang_guidance=2.5)
DEPLOYED_SAMPLER = dict(scheduler="euler", num_steps=8, hist_guidance=0.0, lang_guidance=0.0)
# the training-free alternative for a teacher: diffusers' caches on EVA's sampler (world_model.cache)
CACHED = {"teacher_cached": {**EVA_SAMPLER, "cache": {"kind": "first_block", "threshold": 0.2}},
          "teacher_cached_taylor": {**EVA_SAMPLER, "cache": {"kind": "taylor_seer", "cache_interval": 5,
                                                              "disable_cache_before_step": 3, "max_order": 1}}}
H100_BF16 = 989e12
VAE_DECODE_TFLOP = 128.3   # Wan2.1 VAE decode of 13 latent frames at 60x80 (FlopCounterMode on the meta device)


def naive(k: int) -> dict:
    return dict(scheduler="euler", num_steps=k, hist_guidance=0.0, lang_guidance=0.0)


def deployed_student(demo: Path = DEMO) -> tuple[Path | None, int | None, bool]:
    """(world_model_student.yaml, its K, whether it decodes with the light decoder) of the export."""
    import yaml

    path = demo / "world_model_student.yaml"
    if not path.is_file():
        return None, None, False
    wm = (yaml.safe_load(path.read_text()) or {}).get("world_model", {})
    return path, int(wm.get("student_steps", 0)), wm.get("decoder") == "light"


def configs(students: str, ks, light: Path | None = None, demo: Path = DEMO) -> list[tuple[str, dict | Path]]:
    """(name, sampler overrides of the GRPO teacher | a student's world_model YAML); with `light`, each
    row again as NAME_light after it."""
    rows = [("teacher_eva", EVA_SAMPLER), *CACHED.items(), ("teacher_deployed", DEPLOYED_SAMPLER)]
    committed, committed_k, _ = deployed_student(demo)
    for k in ks:
        rows.append((f"naive_k{k}", naive(k)))
        path = Path(students.format(K=k)) / "final" / "world_model.yaml"
        if path.is_file():
            rows.append((f"student_k{k}", path))
        elif committed is not None and committed_k == k:
            rows.append((f"student_k{k}", committed))
        else:
            print(f"realtime: {path} missing (train it with eva-train-distill); row student_k{k} skipped")
    if light is None:
        return rows
    return [r for name, spec in rows
            for r in ((name, spec),) + (() if name in CACHED else ((f"{name}_light", spec),))]


def decoder_overrides(name: str, light: Path | None) -> dict:
    """Every row names its decoder: the VAE, or (NAME_light) the light decoder at `light`."""
    if name.endswith("_light"):
        return {"decoder": "light", "light_decoder": str(Path(light).resolve())}
    return {"decoder": "vae", "light_decoder": None}


def load(spec, decoder: dict | None = None) -> object:
    from eva_core.world_model import build_world_model
    from training.distill import teacher_model

    decoder = decoder or {"decoder": "vae", "light_decoder": None}
    if isinstance(spec, Path):
        return build_world_model(teacher_model(str(spec), decoder))
    return build_world_model(teacher_model(str(DEMO / "world_model_grpo.yaml"), {**spec, **decoder}))


def count_evaluations(wm):
    box = {"evals": 0}

    def hook(_m, _a, kw):
        box["evals"] += int(kw["hidden_states"].shape[0])

    return box, wm.transformer.register_forward_pre_hook(hook, with_kwargs=True)


def run_rows(prompts, seeds, students, ks, scorer, light: Path | None = None) -> tuple[list[dict], dict]:
    """Every configuration on every (first frame, seed). The chunks are interleaved (each first frame
    and seed runs every configuration in turn), so a shared machine's changing load falls on every
    row alike and the seconds of two rows compare within the run."""
    todo = configs(students, ks, light)
    todo.insert(1, ("teacher_eva_reseed", EVA_SAMPLER))
    models = {}
    for name, spec in todo:
        wm = load(spec, decoder_overrides(name, light))
        box, handle = count_evaluations(wm)
        wm.generate(prompts[0][0], prompts[0][1], seed=0)   # warm-up
        box["evals"] = 0
        models[name] = (wm, box, handle, [], [])
    for frame, text in prompts:
        for s in seeds:
            for name, (wm, _, _, videos, timings) in models.items():
                seed = s + (10_000 if name == "teacher_eva_reseed" else 0)
                videos.append(wm.generate(frame, text, seed=seed))
                timings.append(dict(wm.last_timing))
    rows, reference = [], None
    for name, (wm, box, handle, videos, timings) in models.items():
        handle.remove()
        x = torch.from_numpy(np.stack(videos)).float().div(127.5).sub(1.0).permute(0, 1, 4, 2, 3)
        res = scorer.score_video(x)
        actions = res.actions.numpy()
        if name == "teacher_eva":
            reference = actions
        med = {k: statistics.median(t[k] for t in timings) for k in ("encode", "denoise", "decode", "total")}
        rows.append({
            "config": name, "calls": box["evals"] / len(videos), "encode_s": med["encode"],
            "denoise_s": med["denoise"], "decode_s": med["decode"], "total_s": med["total"],
            "rtf": (wm.num_frames / wm.fps) / med["total"], "reward": float(res.score.mean()),
            "reward_stderr": float(res.score.std() / np.sqrt(len(videos))),
            "action_error": float(np.abs(actions - reference).mean()),
            "action_error_stderr": float(np.abs(actions - reference).mean(axis=(1, 2)).std() / np.sqrt(len(videos))),
            "chunks": len(videos), "decoder": wm.cfg.decoder})
        print(f"realtime: {name}: {rows[-1]['calls']:.0f} calls, {med['total']:.3f} s, reward {rows[-1]['reward']:.4f}, "
              f"action error {rows[-1]['action_error']:.4f}", flush=True)
    return rows, {}


# ---- 14B projection ---------------------------------------------------------------------------
def forward_flops_14b(height=480, width=640, frames=49) -> float:
    """FLOPs of one Wan2.1-I2V-14B transformer evaluation (one branch): bench/world_model.py's formula."""
    sys.path.insert(0, str(ROOT / "bench"))
    from world_model import WAN14B, forward_flops

    return forward_flops(WAN14B, ((frames - 1) // 4 + 1) * (height // 16) * (width // 16))


def projection(rows: list[dict], mfu: float, vae_eff: float) -> list[dict]:
    per_call = forward_flops_14b() / (H100_BF16 * mfu)
    decode = VAE_DECODE_TFLOP * 1e12 / (H100_BF16 * vae_eff)
    motion = 49 / 16.0
    calls = {"teacher_eva": 120, "teacher_deployed": 8}
    eva = next((r for r in rows if r["config"] == "teacher_eva"), None)
    out = []
    for r in rows:
        if r["config"] == "teacher_eva_reseed" or r["config"].endswith("_light"):
            continue   # the projection's decode is the Wan VAE's (a 14B light decoder is unmeasured)
        c = calls.get(r["config"], r["calls"])
        if r["config"] in CACHED and eva and r.get("denoise_s") and eva.get("denoise_s"):
            # a cache skips blocks inside a call: effective calls = 120 x its measured denoise fraction
            c = 120 * r["denoise_s"] / eva["denoise_s"]
        total = c * per_call + decode
        out.append({"config": r["config"], "calls": c, "s_per_call": per_call, "denoise_s": c * per_call,
                    "decode_s": decode, "total_s": total, "rtf": motion / total})
    return out


def deployed_name(light: Path | None) -> str | None:
    """The row of the deployed configuration (world_model_student.yaml): student_kK[_light]."""
    path, k, uses_light = deployed_student()
    if path is None:
        return None
    return f"student_k{k}" + ("_light" if uses_light and light is not None else "")


def speedup(rows: list[dict], deployed: str | None) -> float | None:
    """RTF of the deployed row / RTF of teacher_eva, same run."""
    by = {r["config"]: r for r in rows}
    if deployed not in by or "teacher_eva" not in by:
        return None
    return by[deployed]["rtf"] / by["teacher_eva"]["rtf"]


def print_tables(rows, proj, mfu, vae_eff) -> None:
    print("\nToy scale (committed checkpoints, one CPU thread; held-out twin first frames x seeds)")
    print(f"{'config':20s} {'calls':>6s} {'encode':>7s} {'denoise':>8s} {'decode':>7s} {'total':>7s} {'rtf':>6s} "
          f"{'reward':>8s} {'act.err':>8s}")
    for r in rows:
        print(f"{r['config']:20s} {r['calls']:6.0f} {r['encode_s']:7.3f} {r['denoise_s']:8.3f} {r['decode_s']:7.3f} "
              f"{r['total_s']:7.3f} {r['rtf']:6.2f} {r['reward']:8.4f} {r['action_error']:8.4f}")
    print(f"\n14B projection (Wan2.1-I2V-14B, 480x640x49 = 3.06 s of motion, one H100: transformer at {mfu:.0%} MFU, "
          f"VAE decode {VAE_DECODE_TFLOP:.0f} TFLOP at {vae_eff:.0%} of peak; analytic, unmeasured)")
    print(f"{'config':20s} {'calls':>6s} {'s/call':>7s} {'denoise':>8s} {'decode':>7s} {'total':>7s} {'rtf':>6s}")
    for r in proj:
        print(f"{r['config']:20s} {r['calls']:6.0f} {r['s_per_call']:7.2f} {r['denoise_s']:8.1f} {r['decode_s']:7.2f} "
              f"{r['total_s']:7.1f} {r['rtf']:6.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write the toy table as {'rows': [...]} (and the projection)")
    ap.add_argument("--students", default="runs/distill_k{K}", help="run directory of each student ({K})")
    ap.add_argument("--ks", default="1,2,4")
    ap.add_argument("--tasks", default="pick_block_narrow,push_block_narrow")
    ap.add_argument("--twin-seeds", default="100,101,102,103", help="held-out twin reset seeds (training uses 0..15)")
    ap.add_argument("--seeds", default="0,1", help="sampling seeds per first frame")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--light", default=str(DEMO / "light_decoder"),
                    help="a light-decoder directory: every row again as NAME_light (skipped if it does not exist)")
    ap.add_argument("--mfu", type=float, default=0.4, help="transformer MFU of the 14B projection")
    ap.add_argument("--vae-eff", type=float, default=0.1, help="VAE-decode fraction of peak of the projection")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from eva_core.world_model.best_of import load_scorer
    from training.distill import twin_first_frames

    ks = [int(k) for k in args.ks.split(",")]
    probe = load(DEPLOYED_SAMPLER)
    prompts = twin_first_frames(args.tasks.split(","), [int(s) for s in args.twin_seeds.split(",")],
                                probe.height, probe.width, "cam_high")
    scorer = load_scorer(str(DEMO / "idm"), None, fps=probe.fps)
    light = Path(args.light) if args.light and (Path(args.light) / "config.json").is_file() else None
    if args.light and light is None:
        print(f"realtime: {args.light}: no light decoder there; the _light rows are skipped")
    rows, _ = run_rows(prompts, [int(s) for s in args.seeds.split(",")], args.students, ks, scorer, light)
    proj = projection(rows, args.mfu, args.vae_eff)
    print_tables(rows, proj, args.mfu, args.vae_eff)
    deployed = deployed_name(light)
    ratio = speedup(rows, deployed)
    if ratio is not None:
        print(f"\ndeployed configuration {deployed} (checkpoints/demo/world_model_student.yaml): RTF {ratio:.1f}x "
              f"teacher_eva's in this run")
    if args.json:
        from eva_core.atomic_io import write_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.json), {"rows": rows, "projection_14b": proj, "mfu": args.mfu,
                                     "vae_efficiency": args.vae_eff, "prompts": len(prompts),
                                     "deployed": deployed, "deployed_rtf_over_teacher_eva": ratio,
                                     "seeds": args.seeds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
