"""Light decoder vs the world model's VAE decode, side by side in one run: seconds and frame error.

    PYTHONPATH=$PWD .venv/bin/python bench/light_decoder.py [--light DIR] [--world-model checkpoints/demo]

Without --light it first trains one (training/train_light_decoder.py on synthetic and random clips,
--steps) into a temp directory. Then, on held-out clips (another seed) at the world model's latent
shape, it prints the decode seconds per chunk of the VAE and of the light decoder (median of
--repeats, interleaved, one chunk at a time) and the light decoder's MSE / PSNR against the VAE decode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eva_core.world_model import encoders  # noqa: E402
from eva_core.world_model.light_decoder import load_light_decoder  # noqa: E402
from training import train_light_decoder as tld  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world-model", default=str(ROOT / "checkpoints" / "demo"))
    p.add_argument("--light", help="a trained light_decoder/ directory (default: train one first)")
    p.add_argument("--steps", type=int, default=1500, help="training steps when --light is not given")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg, cfg_file = tld.world_model_config(a.world_model)
    with tempfile.TemporaryDirectory() as tmp:
        light_dir = a.light
        if not light_dir:
            out = Path(tmp) / "ld"
            tld.run(["--world-model", a.world_model, "--synthetic", "8", "--random", "16", "--steps", str(a.steps),
                     "--out", str(out), "--no-progress", "--device", "cpu"])
            light_dir = out / "light_decoder"
        light = load_light_decoder(light_dir)
    vae = tld.load_vae(cfg)
    # held-out clips: other seeds than training's
    ns = argparse.Namespace(data=[], synthetic=3, random=4, episode_frames=24, seed=999, no_progress=True)
    clips = tld.clips_of(tld.episode_videos(ns, cfg), cfg, 8)
    lat, ref = tld.vae_pairs(vae, clips, progress=False)
    with torch.no_grad():
        light_frames = torch.cat([light.decode(lat[i:i + 1]) for i in range(len(lat))])
    mse = torch.mean((light_frames - ref) ** 2).item()
    one = lat[:1]
    times = {"vae": [], "light": []}
    with torch.no_grad():
        encoders.vae_decode(vae, one), light.decode(one)  # warm-up
        for _ in range(a.repeats):
            for name, fn in (("vae", lambda: encoders.vae_decode(vae, one)), ("light", lambda: light.decode(one))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_vae = sum(q.numel() for q in vae.decoder.parameters()) + sum(q.numel() for q in vae.post_quant_conv.parameters())
    n_light = sum(q.numel() for q in light.parameters())
    print(f"torch {torch.__version__}, CPU threads {a.threads}; world model {cfg_file}")
    print(f"latents {tuple(one.shape[1:])} -> frames {tuple(ref.shape[1:])}; {len(lat)} held-out clips")
    print(f"{'decoder':14s} {'params':>9s} {'s/chunk':>9s} {'MSE vs VAE':>11s} {'PSNR dB':>8s}")
    print(f"{'VAE decode':14s} {n_vae:9d} {med['vae']:9.4f} {0.0:11.3g} {'inf':>8s}")
    print(f"{'light decoder':14s} {n_light:9d} {med['light']:9.4f} {mse:11.3g} {tld.psnr(mse):8.1f}")
    print(f"light decoder is x{med['vae'] / med['light']:.1f} faster (median of {a.repeats}, interleaved)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
