"""World-model benchmark: tiny model on CPU, batched vs separate guidance, and a 14B GPU estimate.

    .venv/bin/python bench/world_model.py [--repeats 20] [--threads 1]

1. Seconds per generated chunk of the tiny CPU model (the demo/test configuration).
2. EVA's 3-branch guidance as ONE batched forward vs three separate forwards, interleaved in the
   same run (tiny model, and a larger "small" model where compute dominates overhead).
3. An analytic FLOP / memory estimate of one Wan2.1-I2V-14B chunk (480x640x49, 40 steps,
   3 branches), from the real 14B config (parameters counted on the meta device).
4. diffusers' training-free caches (world_model.cache) on the committed demo teacher
   (checkpoints/demo/world_model_grpo.yaml) with its own sampler and with EVA's (UniPC, 40 steps,
   hist 1.5, lang 2.5), side by side: transformer calls and block-1 computations per chunk
   (counted by hooks), denoise seconds, relative error vs the uncached chunk on the same seeds.
   `--only caches` runs this part alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from eva_core.world_model import WorldModel, WorldModelConfig, sampler, tiny
from eva_core.world_model.checkpoint import empty_transformer

# Wan2.1-I2V-14B-480P transformer config (diffusers names; FACTS §4)
WAN14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
              out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120,
              rope_max_seq_len=1024)
UMT5_XXL_ENCODER_PARAMS = 5.68e9  # umt5-xxl encoder (bf16 file ~11.4 GB)
CLIP_VIT_H_PARAMS = 0.63e9
WAN_VAE_PARAMS = 0.127e9


def chunk_seconds(repeats: int) -> None:
    cfg = WorldModelConfig.tiny_default()
    wm = WorldModel.from_config(cfg)
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    wm.generate(img, "warm up", seed=0)
    runs = []
    for i in range(repeats):
        wm.generate(img, "pick up the cup", seed=i)
        runs.append(dict(wm.last_timing))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"[1] tiny world model on CPU ({wm.height}x{wm.width}x{wm.num_frames}, {cfg.num_steps} {cfg.scheduler} "
          f"steps, 3 branches, {sum(p.numel() for p in wm.transformer.parameters())/1e3:.1f}k transformer params)")
    print(f"    seconds per chunk (median of {repeats}): total {med['total']:.3f}  = encode {med['encode']:.3f}"
          f" + denoise {med['denoise']:.3f} + decode {med['decode']:.3f}")


def guidance_speedup(name: str, sizes: dict, latent: tuple, repeats: int) -> None:
    tr = tiny.build_tiny_transformer(sizes)
    s = tiny.tiny_sizes(sizes)
    f, h, w = latent
    g = torch.Generator().manual_seed(0)
    inp = sampler.GuidanceInputs(
        text=torch.randn(1, 512, s["text_dim"], generator=g), text_neg=torch.randn(1, 512, s["text_dim"], generator=g),
        image=torch.randn(1, 5, s["image_dim"], generator=g), y=torch.zeros(1, 20, f, h, w),
        hist_latents=torch.randn(1, 16, 1, h, w, generator=g))
    lat = torch.randn(1, 16, f, h, w, generator=g)
    noise = torch.randn(1, 16, 1, h, w, generator=g)
    args = (tr, lat, torch.tensor(500.0), torch.tensor(10.0), torch.tensor(999.0), inp, noise, 1.5, 2.5)
    times = {True: [], False: []}
    with torch.no_grad():
        for batched in (True, False):  # warm-up
            sampler.guided_velocity(*args, batched=batched)
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for batched in (True, False):
                t0 = time.perf_counter()
                sampler.guided_velocity(*args, batched=batched)
                times[batched].append(time.perf_counter() - t0)
        diff = (sampler.guided_velocity(*args, batched=True) - sampler.guided_velocity(*args, batched=False)).abs().max()
    b, sep = statistics.median(times[True]), statistics.median(times[False])
    params = sum(p.numel() for p in tr.parameters())
    tokens = f * (h // 2) * (w // 2)
    print(f"    {name:6s} ({params/1e6:.2f} M params, {tokens} video tokens): batched {b*1e3:7.2f} ms/step, "
          f"3 separate {sep*1e3:7.2f} ms/step -> speedup x{sep/b:.2f}   (max |diff| {diff:.1e})")


def forward_flops(cfg: dict, video_tokens: int, context_tokens: int = 512 + 257) -> float:
    """Analytic FLOPs of one Wan transformer forward, batch 1, one branch (matmuls only): the one
    formula of bench/world_model.py, bench/realtime.py and bench/world_model_gpu.py."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    n, ctx = video_tokens, context_tokens
    per_layer = (
        8 * n * d * d  # self-attn q, k, v, o
        + 4 * n * n * d  # self-attn scores + weighted sum
        + 4 * n * d * d  # cross-attn q, o
        + 4 * ctx * d * d  # cross-attn k, v on text and k_img, v_img on image tokens
        + 4 * n * ctx * d  # cross-attn scores + sums
        + 4 * n * d * cfg["ffn_dim"]  # feed-forward
    )
    return float(per_layer * cfg["num_layers"])


def wan14b_estimate(steps: int = 40, branches: int = 3, height: int = 480, width: int = 640, frames: int = 49) -> None:
    c = WAN14B
    d = c["num_attention_heads"] * c["attention_head_dim"]
    n = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)  # video tokens after VAE (4,8,8) and patch (1,2,2)
    txt, img = 512, 257
    params = sum(p.numel() for p in empty_transformer(c).parameters())
    fwd = forward_flops(c, n, txt + img)
    total = fwd * branches * steps
    gb = 1e9
    weights = params * 2 / gb  # bf16
    hidden = branches * n * d * 2 / gb
    ffn_act = branches * n * c["ffn_dim"] * 2 / gb
    # per-token timestep modulation (B, N, 6, d): bf16 projection + fp32 copy + fp32 sum inside each block
    modulation = branches * n * 6 * d * (2 + 4 + 4) / gb
    act = hidden * 4 + ffn_act + modulation
    print(f"[3] analytic estimate: Wan2.1-I2V-14B chunk {height}x{width}x{frames}, {steps} steps, {branches} branches")
    print(f"    transformer params {params/1e9:.2f} B (counted from the config on the meta device), "
          f"{n} video tokens + {txt} text + {img} image tokens")
    print(f"    FLOPs: {fwd/1e12:.0f} TFLOP per forward per branch; {total/1e15:.1f} PFLOP per chunk "
          f"(attention {4*n*n*d*c['num_layers']/fwd:.0%} of it)")
    for gpu, peak in (("H100 SXM bf16", 989e12), ("A100 bf16", 312e12), ("L40S bf16", 362e12)):
        print(f"    {gpu:14s}: {total/(peak*0.4):6.0f} s per chunk at 40% of peak ({peak/1e12:.0f} TFLOPS)")
    print(f"    memory: transformer weights {weights:.1f} GB bf16; activations of one 3-branch forward ~{act:.1f} GB "
          f"(incl. {modulation:.1f} GB for diffusers' per-token timestep modulation, needed to hold history at t_min)")
    print(f"            umt5-xxl {UMT5_XXL_ENCODER_PARAMS*2/gb:.1f} GB + CLIP {CLIP_VIT_H_PARAMS*2/gb:.1f} GB (offloadable: "
          f"prompts are cached) + VAE {WAN_VAE_PARAMS*4/gb:.1f} GB fp32 (decode activations: use vae_tiling)")
    peak = weights + act + 2.0  # + VAE and workspace; encoders offloaded (cpu_offload) while denoising
    fits = [f"{cap} GB: {'fits' if peak < 0.9 * cap else 'does not fit'}" for cap in (24, 48, 80)]
    print(f"    => ~{peak:.0f} GB peak while denoising with cpu_offload ({'; '.join(fits)}). "
          f"Without offload add the encoders (~{(UMT5_XXL_ENCODER_PARAMS + CLIP_VIT_H_PARAMS) * 2 / gb:.0f} GB).")


REPO = Path(__file__).resolve().parents[1]
DEMO_TEACHER = REPO / "checkpoints" / "demo" / "world_model_grpo.yaml"
EVA_SAMPLER = dict(scheduler="unipc", num_steps=40, hist_guidance=1.5, lang_guidance=2.5)
CACHES = {"none": {"kind": "none"}, "first_block": {"kind": "first_block"},   # threshold 0.05 (diffusers')
          "first_block.2": {"kind": "first_block", "threshold": 0.2}, "taylor_seer": {"kind": "taylor_seer"},
          "mag": {"kind": "mag"}}


def demo_teacher_config(path: Path = DEMO_TEACHER) -> dict:
    """The committed demo world model's section, its relative directories resolved against the YAML's."""
    import yaml

    wm = dict(yaml.safe_load(path.read_text())["world_model"])
    for key in ("transformer_dir", "vae_dir", "lora"):
        if isinstance(wm.get(key), str) and not Path(wm[key]).is_absolute():
            wm[key] = str(path.parent / wm[key])
    return wm


def cache_table(repeats: int, seeds: int = 4) -> None:
    """Each sampler with and without each cache, interleaved so every row sees the same load."""
    base = demo_teacher_config()
    samplers = {"demo teacher (euler 8, no guidance)": {}, "EVA sampler (unipc 40, hist 1.5, lang 2.5)": EVA_SAMPLER}
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (base["height"], base["width"], 3), dtype=np.uint8) for _ in range(seeds)]
    print(f"[4] diffusers caches on the demo teacher ({DEMO_TEACHER.relative_to(REPO)}, "
          f"{base['height']}x{base['width']}x{base['num_frames']}); {seeds} images x seeds, median of {repeats} timings")
    print(f"    {'sampler':44s} {'cache':13s} {'calls':>5s} {'block1 runs':>11s} {'denoise s':>9s} {'speedup':>7s} "
          f"{'rel. error':>10s}")
    for name, sampler_cfg in samplers.items():
        models, counts = {}, {}
        for label, cache_cfg in CACHES.items():
            wm = WorldModel.from_config({**base, **sampler_cfg, "cache": cache_cfg})
            runs = []
            wm.transformer.blocks[1].ffn.net[0].register_forward_pre_hook(lambda *a, r=runs: r.append(1))
            models[label], counts[label] = wm, runs
        ref, errs, times, calls, block = {}, {}, {k: [] for k in models}, {}, {}
        for kind, wm in models.items():   # outputs on fixed seeds (the first call also warms up)
            outs = []
            for i, img in enumerate(images):
                counts[kind].clear()
                outs.append(wm.generate(img, "pick up the cup", seed=i).astype(np.float64))
                calls[kind], block[kind] = wm.last_timing["transformer_calls"], len(counts[kind])
            if kind == "none":
                ref = outs
            errs[kind] = float(np.mean([np.linalg.norm(o - r) / np.linalg.norm(r) for o, r in zip(outs, ref)]))
        for rep in range(repeats):
            for kind, wm in models.items():
                wm.generate(images[rep % seeds], "pick up the cup", seed=rep % seeds)
                times[kind].append(wm.last_timing["denoise"])
        t0 = statistics.median(times["none"])
        for kind in models:
            t = statistics.median(times[kind])
            print(f"    {name:44s} {kind:13s} {calls[kind]:5d} {block[kind]:11d} {t:9.3f} {t0 / t:6.2f}x {errs[kind]:10.4f}")
        mag = models["mag"].cache_info
        print(f"    (first_block.2: threshold 0.2; mag ratios calibrated at build: {mag['calibrated']}; "
              "block1 runs: block 1's MLP computed, one per forward uncached)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=("caches",), default=None, help="run one part alone")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, CPU threads {a.threads}")
    if a.only == "caches":
        cache_table(a.repeats)
        return
    chunk_seconds(a.repeats)
    print("[2] 3-branch guidance: one batched forward vs three separate forwards (same inputs, interleaved)")
    guidance_speedup("tiny", {}, (3, 8, 8), a.repeats)
    guidance_speedup("small", {"num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 32, "ffn_dim": 512,
                               "text_dim": 64, "image_dim": 32}, (5, 16, 16), max(3, a.repeats // 4))
    wan14b_estimate()
    cache_table(a.repeats)


if __name__ == "__main__":
    main()
