"""Wan2.1-I2V-14B on one GPU: seconds per transformer call, VAE decode per chunk, peak memory.

    python bench/world_model_gpu.py [--compile] [--fp8] [--repeats 5] [--json OUT]   # one 80 GB+ GPU
    python bench/world_model_gpu.py --smoke --json OUT     # CPU, tiny config, the same code path (tests)

The real Wan2.1-I2V-14B transformer (diffusers `WanTransformer3DModel`, config `WAN14B` of
bench/world_model.py) and the real Wan2.1 VAE (`AutoencoderKLWan`, z 16, stride (4, 8, 8)), with
random weights built directly on the GPU in bf16 (no CPU copy, no fp32 init of 14B parameters;
the modules diffusers keeps in fp32 are upcast, as `from_pretrained` does). Shapes are EVA's:
480x640x49 -> 13x60x80 latents, 512 text tokens, 257 CLIP tokens of dim 1280, and per-token
diffusion-forcing timesteps `(B, seq_len)` with the history latent frame at the smallest timestep.

Measured, each as the median of --repeats after --warmup calls, with CUDA synchronisation:
  * seconds per transformer call, 1 branch (batch 1), per configuration: bf16 eager, and with
    --compile (`compile_repeated_blocks(fullgraph=True)`) and/or --fp8 (torchao
    `Float8DynamicActivationFloat8WeightConfig`, skipped with one line if torchao is missing);
  * VAE decode of one chunk (13 latent frames -> 49 frames at 480x640);
  * peak GPU memory (`torch.cuda.max_memory_allocated`) of each phase.
The table projects seconds per chunk = calls x s/call + decode for EVA's sampler (40 UniPC steps x 3
branches = 120 calls, run one after another) and a K-step guidance-free student (K = 4, 2, 1), and
RTF = chunk motion seconds (49 / 16 fps = 3.06 s) / seconds per chunk. Configurations that would
start after --budget-s are skipped (with a line), so a run ends in under 8 minutes on an H100.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eva_core.world_model import encoders, sampler, tiny

ROOT = Path(__file__).resolve().parents[1]
FPS = 16.0  # EVA's clips
SAMPLERS = (("eva_40x3", 120), ("student_k4", 4), ("student_k2", 2), ("student_k1", 1))
# AutoencoderKLWan defaults = the Wan2.1 VAE (z 16, temporal stride 4, spatial stride 8)
WAN21_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, SXM where it applies


def _bench_world_model():
    """bench/world_model.py (bench/ is not a package: load the file by path)."""
    spec = importlib.util.spec_from_file_location("_bench_world_model", ROOT / "bench" / "world_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def wan14b_config() -> dict:
    return dict(_bench_world_model().WAN14B)


def forward_flops(cfg: dict, video_tokens: int, context_tokens: int) -> float:
    return _bench_world_model().forward_flops(cfg, video_tokens, context_tokens)


@dataclass
class Setup:
    name: str
    transformer: dict
    vae: dict
    height: int
    width: int
    frames: int
    device: torch.device
    dtype: torch.dtype
    text_tokens: int = 512  # diffusers' Wan I2V attention needs exactly 512 (FACTS §4)
    image_tokens: int = 257  # CLIP ViT-H/14 at 224: 256 patches + CLS
    hist_latents: int = 1  # latent frames of clean history (EVA: 1 or 2)
    notes: list[str] = field(default_factory=list)

    @property
    def latent(self) -> tuple[int, int, int]:
        return ((self.frames - 1) // 4 + 1, self.height // 8, self.width // 8)

    @property
    def motion_s(self) -> float:
        return self.frames / FPS


def full_setup(a) -> Setup:
    return Setup("wan2.1-i2v-14b", wan14b_config(), dict(WAN21_VAE), a.height, a.width, a.frames,
                 torch.device("cuda"), torch.bfloat16)


def smoke_setup(a) -> Setup:
    cfg = tiny.tiny_transformer_config({"num_layers": 2})
    return Setup("tiny-smoke", cfg, dict(TINY_VAE), 32, 32, 9, torch.device("cpu"), torch.float32)  # CPU bf16 convs are slow


def flops_per_call(cfg: dict, s: Setup) -> float:
    """Analytic FLOPs of one forward, batch 1 (bench/world_model.py's formula)."""
    f, h, w = s.latent
    pt, ph, pw = cfg["patch_size"]
    return forward_flops(cfg, (f // pt) * (h // ph) * (w // pw), s.text_tokens + s.image_tokens)


# ---- building ---------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def build_on_device(cls, cfg: dict, device: torch.device, dtype: torch.dtype):
    """Construct `cls(**cfg)` with its parameters allocated and initialised on `device` in `dtype`."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(**cfg)
    finally:
        torch.set_default_dtype(prev)
    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    for name, p in model.named_parameters():  # as from_pretrained(torch_dtype=bf16) keeps them
        if any(part in keep for part in name.split(".")):
            p.data = p.data.float()
    return model.eval().requires_grad_(False)


def fp8_unavailable() -> str | None:
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_  # noqa: F401
    except ImportError:
        return "torchao is not installed (pip install torchao)"
    return None


def apply_fp8(model) -> str | None:
    """torchao FP8 (dynamic per-tensor activation and weight scales) on the blocks' Linear layers;
    returns why it was skipped, or None."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

    try:
        # the Linear layers of the repeated blocks (nearly all FLOPs); embedders and head stay bf16/fp32
        quantize_(model, Float8DynamicActivationFloat8WeightConfig(),
                  filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn.startswith("blocks."))
    except Exception as e:  # noqa: BLE001 - unsupported device/dtype surfaces as various errors
        return f"torchao quantize_ failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


def eva_inputs(s: Setup, cfg: dict, seed: int = 0) -> dict:
    """EVA's diffusion-forcing inputs for one branch: noisy latents with clean history, per-token t."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = s.latent
    lat = torch.randn(1, 16, f, h, w, generator=g)
    ts = sampler.token_timesteps(torch.tensor(500.0), s.hist_latents, torch.tensor(1.0), tuple(lat.shape),
                                 cfg["patch_size"])
    dev = s.device
    return dict(latents=lat.to(dev), timesteps=ts.to(dev), y=torch.zeros(1, 20, f, h, w, device=dev),
                text=torch.randn(1, s.text_tokens, cfg["text_dim"], generator=g).to(dev),
                image=torch.randn(1, s.image_tokens, cfg["image_dim"], generator=g).to(dev))


def timed(fn, device: torch.device, warmup: int, repeats: int) -> dict:
    """Warm-up calls (the first one's seconds kept: compile time shows there), then the median."""
    first = None
    for i in range(warmup):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_s": first, "n": repeats}


def config_name(s: Setup, fp8: bool, compile_: bool) -> str:
    base = {torch.bfloat16: "bf16", torch.float32: "fp32"}.get(s.dtype, str(s.dtype))
    return base + ("+fp8" if fp8 else "") + ("+compile" if compile_ else "")


# ---- measuring ---------------------------------------------------------------------------------------
def measure_transformer(s: Setup, fp8: bool, compile_: bool, a) -> dict:
    from diffusers import WanTransformer3DModel

    name = config_name(s, fp8, compile_)
    _free(s.device)
    _reset_peak(s.device)
    t0 = time.perf_counter()
    tr = build_on_device(WanTransformer3DModel, s.transformer, s.device, s.dtype)
    _sync(s.device)
    out = {"config": name, "params_b": sum(p.numel() for p in tr.parameters()) / 1e9,
           "build_s": time.perf_counter() - t0}
    try:
        if fp8:
            why = apply_fp8(tr)
            if why:
                return {**out, "skipped": why}
        out["weights_gb"] = torch.cuda.memory_allocated(s.device) / 1e9 if s.device.type == "cuda" else None
        if compile_:
            tr.compile_repeated_blocks(fullgraph=True)
        inp = eva_inputs(s, s.transformer)
        with torch.inference_mode():
            call = lambda: sampler.transformer_forward(tr, inp["latents"], inp["timesteps"], inp["text"],  # noqa: E731
                                                       inp["image"], inp["y"])
            r = timed(call, s.device, a.warmup, a.repeats)
            shape = tuple(call().shape)
        expect = (1, 16, *s.latent)
        if shape != expect:
            raise RuntimeError(f"transformer output {shape}, expected {expect}")
        return {**out, "s_per_call": r["median_s"], "min_s": r["min_s"], "first_call_s": r["first_s"],
                "repeats": r["n"], "peak_gb": _peak_gb(s.device)}
    finally:
        del tr
        _free(s.device)


def measure_decode(s: Setup, a) -> dict:
    from diffusers import AutoencoderKLWan

    _free(s.device)
    _reset_peak(s.device)
    vae = build_on_device(AutoencoderKLWan, s.vae, s.device, s.dtype)
    lat = torch.randn(1, 16, *s.latent, generator=torch.Generator().manual_seed(1)).to(s.device)
    try:
        with torch.inference_mode():
            r = timed(lambda: encoders.vae_decode(vae, lat), s.device, 1, a.decode_repeats)
            video = encoders.vae_decode(vae, lat)
        expect = (1, 3, s.frames, s.height, s.width)
        if tuple(video.shape) != expect:
            raise RuntimeError(f"VAE decode gave {tuple(video.shape)}, expected {expect}")
        return {"decode_s": r["median_s"], "repeats": r["n"], "peak_gb": _peak_gb(s.device),
                "params_m": sum(p.numel() for p in vae.parameters()) / 1e6}
    finally:
        del vae
        _free(s.device)


def project(results: list[dict], decode_s: float, s: Setup) -> list[dict]:
    rows = []
    for r in results:
        if "s_per_call" not in r:
            continue
        for sampler_name, calls in SAMPLERS:
            chunk = calls * r["s_per_call"] + decode_s
            rows.append({"config": r["config"], "sampler": sampler_name, "s_per_call": r["s_per_call"],
                         "calls": calls, "decode_s": decode_s, "s_per_chunk": chunk,
                         "rtf": s.motion_s / chunk, "peak_gb": r.get("peak_gb")})
    return rows


def print_table(rows: list[dict], s: Setup, decode: dict, flops: float, peak_tflops: float | None) -> None:
    f, h, w = s.latent
    print(f"{s.name}: {s.height}x{s.width}x{s.frames} -> latents {f}x{h}x{w}, {s.text_tokens} text + "
          f"{s.image_tokens} image tokens, 1 branch per call, chunk = {s.motion_s:.2f} s of motion")
    gb = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"VAE decode of one chunk: {decode['decode_s']:.3f} s (median of {decode['repeats']}), peak {gb(decode['peak_gb'])} GB")
    hdr = f"{'config':18s} {'sampler':11s} {'s/call':>8s} {'calls':>5s} {'s/chunk':>9s} {'RTF':>8s} {'peak GB':>8s}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['config']:18s} {r['sampler']:11s} {r['s_per_call']:8.3f} {r['calls']:5d} {r['s_per_chunk']:9.2f} "
              f"{r['rtf']:8.4f} {gb(r['peak_gb']):>8s}")
    for r in {x["config"]: x for x in rows}.values():
        tf = flops / r["s_per_call"] / 1e12
        mfu = f", {tf / peak_tflops:.0%} of {peak_tflops:.0f} TFLOPS bf16 peak" if peak_tflops else ""
        print(f"  {r['config']}: {flops / 1e12:.3g} TFLOP per call (analytic) -> {tf:.3g} TFLOP/s achieved{mfu}")


def device_peak_tflops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny config of the same architecture (for tests)")
    p.add_argument("--compile", action="store_true", help="also time compile_repeated_blocks(fullgraph=True)")
    p.add_argument("--fp8", action="store_true", help="also time torchao FP8 (dynamic activation + weight)")
    p.add_argument("--repeats", type=int, default=5, help="timed transformer calls per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (the first one compiles)")
    p.add_argument("--decode-repeats", type=int, default=3)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--budget-s", type=float, default=360.0,
                   help="skip configurations that would start after this many seconds (keeps a run < 8 min)")
    p.add_argument("--json", metavar="OUT", help="write {device, setup, decode, configs, rows} here")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.warmup < 1 or a.decode_repeats < 1:
        p.error("--repeats, --warmup and --decode-repeats must be >= 1")
    if (a.frames - 1) % 4 or a.height % 16 or a.width % 16:
        p.error("--frames must be 4k+1 and --height/--width multiples of 16")
    if not a.smoke and not torch.cuda.is_available():
        print("world_model_gpu: no CUDA device here; this benchmark needs one 80 GB+ GPU (--smoke runs the "
              "same code on CPU with a tiny config)")
        return 2
    t_start = time.perf_counter()
    s = smoke_setup(a) if a.smoke else full_setup(a)
    dev_name, peak_tflops = device_peak_tflops(s.device)
    print(f"torch {torch.__version__}, device {dev_name}, dtype {str(s.dtype).replace('torch.', '')}")
    plan = [(False, False)] + ([(False, True)] if a.compile else []) + ([(True, False)] if a.fp8 else []) \
        + ([(True, True)] if a.fp8 and a.compile else [])
    decode = measure_decode(s, a)
    results = []
    for fp8, comp in plan:
        elapsed = time.perf_counter() - t_start
        name = config_name(s, fp8, comp)
        if results and elapsed > a.budget_s:
            results.append({"config": name, "skipped": f"time budget: {elapsed:.0f} s > --budget-s {a.budget_s:.0f}"})
        elif fp8 and fp8_unavailable():
            results.append({"config": name, "skipped": fp8_unavailable()})
        else:
            results.append(measure_transformer(s, fp8, comp, a))
        if "skipped" in results[-1]:
            print(f"{name}: skipped ({results[-1]['skipped']})")
    rows = project(results, decode["decode_s"], s)
    flops = flops_per_call(s.transformer, s)
    print_table(rows, s, decode, flops, peak_tflops)
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")
    if a.json:
        from eva_core.atomic_io import write_json

        f, h, w = s.latent
        write_json(a.json, {
            "device": dev_name, "torch": torch.__version__, "smoke": a.smoke, "dtype": str(s.dtype),
            "setup": {"name": s.name, "height": s.height, "width": s.width, "frames": s.frames, "latent": [f, h, w],
                      "text_tokens": s.text_tokens, "image_tokens": s.image_tokens, "hist_latents": s.hist_latents,
                      "motion_s": s.motion_s, "flops_per_call": flops, "peak_bf16_tflops": peak_tflops},
            "decode": decode, "configs": results, "rows": rows, "total_s": total})
    return 0


if __name__ == "__main__":
    sys.exit(main())
