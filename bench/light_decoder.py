"""Light decoder vs the world model's VAE decode, side by side in one run: seconds, frame error and
the IDM's actions on the frames (action error, executability reward).

    PYTHONPATH=$PWD .venv/bin/python bench/light_decoder.py [--light DIR] [--world-model checkpoints/demo]
                                                            [--generator checkpoints/demo/world_model_student.yaml]

Without --light it first trains one (training/train_light_decoder.py on synthetic and random clips,
--steps) into a temp directory. Then, on held-out latents at the world model's latent shape:
  [1] decode seconds per chunk of the VAE and of the light decoder (median of --repeats,
      interleaved, one chunk at a time) and the light decoder's MSE / PSNR against the VAE decode;
  [2] the IDM (--idm) on both decodes of the same latents: the action error between the two (rad,
      all dims and the joints the held-out demos move) and each one's executability reward, on
      (a) VAE-encoded held-out twin demos (--seeds, not the light decoder's training seeds) and
      (b) chunks the --generator world model (default: the deployed student) generates from those
      demos' first frames (what the planner decodes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eva_core.world_model import encoders  # noqa: E402
from eva_core.world_model.light_decoder import load_for_vae  # noqa: E402
from training import train_light_decoder as tld  # noqa: E402

TASKS = ("pick_block_narrow", "push_block_narrow")


def decode_timing(vae, light, one, repeats: int) -> dict:
    times = {"vae": [], "light": []}
    with torch.no_grad():
        encoders.vae_decode(vae, one), light.decode(one)  # warm-up
        for _ in range(repeats):
            for name, fn in (("vae", lambda: encoders.vae_decode(vae, one)), ("light", lambda: light.decode(one))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def heldout_demos(cfg, seeds, tasks):
    """[(task, seed, Episode)] of the twin's scripted demos at the world model's size and fps."""
    from eva_core.embodiment import load_embodiment
    from eva_core.sim.idm_replay import ground_truth_demos

    emb = load_embodiment()
    return emb, [(t, s, ep) for t in tasks for s, ep in ground_truth_demos(t, emb, seeds, cfg.fps, (cfg.height, cfg.width))]


def encoded_latents(vae, cfg, demos, stride: int) -> torch.Tensor:
    clips = tld.clips_of([ep.frames for _, _, ep in demos], cfg, stride)
    with torch.no_grad():
        return torch.cat([encoders.vae_encode(vae, torch.stack(clips[i:i + 8])).cpu() for i in range(0, len(clips), 8)])


def generated_latents(generator, demos, seeds_per_frame: int, light_dir) -> tuple[torch.Tensor, dict]:
    """The `generator` world model's chunks from each demo's first frame (+ its instruction), as latents;
    and the median `last_timing["decode"]` per chunk of the model with each decoder (same seeds)."""
    from eva_core.world_model import WorldModel
    from eva_core.world_model.yaml_file import read_world_model_yaml

    models = {"vae": WorldModel.from_config(read_world_model_yaml(generator, decoder="vae", light_decoder=None)[0]),
              "light": WorldModel.from_config(read_world_model_yaml(generator, decoder="light",
                                                                    light_decoder=str(light_dir))[0])}
    lats, dec = [], {k: [] for k in models}
    decode = models["vae"].decode_latents
    models["vae"].decode_latents = lambda x: (lats.append(x.detach().cpu()), decode(x))[1]
    for _, _, ep in demos:
        for s in range(seeds_per_frame):
            for name, wm in models.items():
                wm.generate(ep.frames[0], ep.instruction or "", seed=s)
                dec[name].append(wm.last_timing["decode"])
    return torch.cat(lats), {k: statistics.median(v) for k, v in dec.items()}


def idm_compare(scorer, vae, light, lat: torch.Tensor, moving: list[int]) -> dict:
    with torch.no_grad():
        ref = encoders.vae_decode(vae, lat)
        out = torch.cat([light.decode(lat[i:i + 8]) for i in range(0, len(lat), 8)])
    r_ref, r_out = scorer.score_video(ref.permute(0, 2, 1, 3, 4)), scorer.score_video(out.permute(0, 2, 1, 3, 4))
    err = (r_out.actions - r_ref.actions).abs()
    mse = torch.mean((out - ref) ** 2).item()
    return {"n": len(lat), "mse": mse, "psnr": tld.psnr(mse), "mae_all": err.mean().item(),
            "mae_moving": err[..., moving].mean().item(), "max_moving": err[..., moving].max().item(),
            "reward_vae": r_ref.score.mean().item(), "reward_light": r_out.score.mean().item()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world-model", default=str(ROOT / "checkpoints" / "demo"))
    p.add_argument("--generator", default=str(ROOT / "checkpoints" / "demo" / "world_model_student.yaml"),
                   help="the world model whose generated chunks are decoded in [2b] (default: the deployed student)")
    p.add_argument("--idm", default=str(ROOT / "checkpoints" / "demo" / "idm"), help="the reward IDM")
    p.add_argument("--light", help="a trained light_decoder/ directory (default: train one first)")
    p.add_argument("--steps", type=int, default=1500, help="training steps when --light is not given")
    p.add_argument("--seeds", type=int, nargs="*", default=[100, 101, 102], help="held-out twin demo seeds")
    p.add_argument("--tasks", nargs="*", default=list(TASKS))
    p.add_argument("--gen-seeds", type=int, default=2, help="world-model seeds per held-out first frame")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg, cfg_file = tld.world_model_config(a.world_model)
    vae = tld.load_vae(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        light_dir = a.light
        if not light_dir:
            out = Path(tmp) / "ld"
            tld.run(["--set", f"world_model={a.world_model}", "--set", "data.synthetic=8", "--set", "data.random=16",
                     "--set", f"train.steps={a.steps}", "--set", "train.device=cpu", "--out", str(out), "--no-progress"])
            light_dir = out / "light_decoder"
        light = load_for_vae(light_dir, vae)
        if not a.light:   # the temp directory goes: keep a copy for the world model with decoder light
            from eva_core.world_model.light_decoder import save_light_decoder

            light_dir = save_light_decoder(light, Path(tempfile.mkdtemp()) / "light_decoder")

    emb, demos = heldout_demos(cfg, a.seeds, a.tasks)
    moving = sorted({int(d) for _, _, ep in demos for d in np.flatnonzero(np.ptp(np.asarray(ep.action), 0) > 1e-3)
                     if d not in emb.gripper_dims})
    enc = encoded_latents(vae, cfg, demos, stride=4)
    gen, wm_decode = generated_latents(a.generator, demos, a.gen_seeds, light_dir)
    from eva_core.world_model.best_of import load_scorer

    scorer = load_scorer(a.idm, emb, fps=cfg.fps)
    rows = {"encoded held-out demos": idm_compare(scorer, vae, light, enc, moving),
            "generated chunks": idm_compare(scorer, vae, light, gen, moving)}
    med = decode_timing(vae, light, enc[:1], a.repeats)

    n_vae = sum(q.numel() for q in vae.decoder.parameters()) + sum(q.numel() for q in vae.post_quant_conv.parameters())
    n_light = sum(q.numel() for q in light.parameters())
    print(f"torch {torch.__version__}, CPU threads {a.threads}; world model {cfg_file}; light decoder {light_dir}")
    print(f"[1] latents {tuple(enc.shape[1:])} -> frames (3, {cfg.num_frames}, {cfg.height}, {cfg.width}); "
          f"decode seconds per chunk, median of {a.repeats}, interleaved")
    print(f"    {'decoder':14s} {'params':>9s} {'s/chunk':>9s}")
    print(f"    {'VAE decode':14s} {n_vae:9d} {med['vae']:9.4f}")
    print(f"    {'light decoder':14s} {n_light:9d} {med['light']:9.4f}")
    print(f"    light decoder is x{med['vae'] / med['light']:.1f} faster; in WorldModel.generate (last_timing "
          f"decode, median): decoder vae {wm_decode['vae']:.4f} s, decoder light {wm_decode['light']:.4f} s")
    print(f"[2] IDM {a.idm} on both decodes of the same latents; held-out twin demos {a.tasks} seeds {a.seeds} "
          f"({len(demos)} demos); moving joints {moving}; generated by {a.generator}")
    print(f"    {'latents':24s} {'chunks':>6s} {'MSE':>8s} {'PSNR dB':>7s} {'MAE all':>8s} {'MAE mov':>8s} "
          f"{'max mov':>8s} {'reward VAE':>10s} {'reward light':>12s}")
    for name, r in rows.items():
        print(f"    {name:24s} {r['n']:6d} {r['mse']:8.2g} {r['psnr']:7.1f} {r['mae_all']:8.4f} {r['mae_moving']:8.4f} "
              f"{r['max_moving']:8.4f} {r['reward_vae']:10.3f} {r['reward_light']:12.3f}")
    print("    MAE: mean |IDM(light frames) - IDM(VAE frames)| in rad; mov: the moving joints only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
