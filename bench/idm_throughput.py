"""IDM throughput: batched predict() vs EVA's per-frame loop, same weights, same video, one run.

    python bench/idm_throughput.py                       # light default: resnet18 @ 224, late fusion
    python bench/idm_throughput.py --fusion early        # the same backbone with EVA's channel stacking
    python bench/idm_throughput.py --idm runs/idm/idm --episode ep.hdf5   # trained model, real frames:
                                                         # bf16 error in radians and in the reward score
    python bench/idm_throughput.py --variant tiny --frames 64

Per-frame = what EVA's reward does: for each t build the window [t-1, t, t+1], resize and
normalise those 3 frames, run the network on a batch of 1 (fp32).
Batched = IDM.predict: every frame resized once; early fusion gathers the windows into chunks of
--batch-size; late fusion encodes each frame once and gathers keypoints, so it runs T encoder
passes where the loop runs 3T. Rows: batched fp32 (the same arithmetic as the loop) and batched
bf16 autocast (where the CPU has native bf16). The modes are timed in interleaved rounds and the
best round of each is kept, so a noisy neighbour slows all of them alike.
Goal for the light variant: >= 5x.
"""

from __future__ import annotations

import argparse
import time

import torch

from eva_core.embodiment import DEFAULT_EMBODIMENT, load_embodiment
from eva_core.idm import FUSIONS, VARIANTS, IDMConfig, build_idm, load_idm, native_bf16

EMB = load_embodiment(DEFAULT_EMBODIMENT)  # the action layout of the built IDM and the reward limits

GOAL = 5.0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=VARIANTS, default="resnet18")
    p.add_argument("--fusion", choices=FUSIONS, default=None, help="default: the variant's")
    p.add_argument("--idm", default=None, help="a trained IDM checkpoint instead of random weights")
    p.add_argument("--episode", default=None, help="take the video from this episode file (its first --frames frames)")
    p.add_argument("--frames", type=int, default=49, help="video length (EVA chunk: 49)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--image-size", type=int, default=None, help="model input side (default: the variant's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (best is reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.idm:
        idm = load_idm(a.idm).eval()
    else:
        idm = build_idm(IDMConfig.for_embodiment(EMB, variant=a.variant, image_size=a.image_size, fusion=a.fusion)).eval()
    truth = None
    if a.episode:
        from eva_core.data import read_episode

        ep = read_episode(a.episode)
        video = torch.from_numpy(ep.frames[: a.frames]).permute(0, 3, 1, 2).float() / 255.0
        truth = torch.as_tensor(ep.action[: a.frames], dtype=torch.float32)
        a.frames, a.height, a.width = video.shape[0], video.shape[2], video.shape[3]
    else:
        video = torch.rand(a.frames, 3, a.height, a.width)

    modes = {
        "per-frame loop (fp32)": lambda: idm.predict_per_frame(video),
        "batched (fp32)": lambda: idm.predict(video, batch_size=a.batch_size),
    }
    if native_bf16():
        modes["batched (bf16)"] = lambda: idm.predict(video, batch_size=a.batch_size, precision="bfloat16")
    best, outs = {}, {}
    for name, fn in modes.items():
        outs[name] = fn()  # warm-up: allocations, oneDNN kernels
    for _ in range(a.repeats):
        for name, fn in modes.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)

    cfg = idm.config
    print(f"variant={cfg.variant} fusion={cfg.fusion} input={a.height}x{a.width} -> {cfg.image_size}px, "
          f"T={a.frames}, batch={a.batch_size}, threads={torch.get_num_threads()}, "
          f"weights={'trained: ' + a.idm if a.idm else 'random'}")
    loop_name, ref_name = "per-frame loop (fp32)", "batched (fp32)"
    result = {"variant": cfg.variant, "fusion": cfg.fusion, "image_size": cfg.image_size, "modes": {}}
    for name in modes:
        fps = a.frames / best[name]
        ratio = best[loop_name] / best[name]
        diff = float((outs[name] - outs[ref_name if name == loop_name else loop_name]).abs().max())
        print(f"{name:22s} {fps:8.2f} frames/s   x{ratio:5.2f}   max |diff| vs {'batched fp32' if name == loop_name else 'loop'}: {diff:.2e}")
        result["modes"][name] = {"fps": fps, "ratio": ratio, "max_diff": diff}
    if not native_bf16():
        print("batched (bf16)         skipped: this CPU has no native bf16 (AVX512-BF16/AMX)")
    if truth is not None:
        from eva_core.reward import executability_reward

        for name, out in outs.items():
            mae = float((out - truth).abs().mean())
            score = float(executability_reward(out, fps=ep.fps, config=EMB).score)
            print(f"{name:22s} MAE vs the episode's actions {mae:.4f}   reward score {score:.3f}")
            result["modes"][name].update(mae=mae, score=score)
        print(f"{'ground truth':22s} {'':37s}reward score {float(executability_reward(truth, fps=ep.fps, config=EMB).score):.3f}")
    for name, r in result["modes"].items():
        if name != loop_name:
            print(f"goal >= {GOAL:g}x, {name}: {'met' if r['ratio'] >= GOAL else 'not met'} ({r['ratio']:.2f}x)")
    return result


if __name__ == "__main__":
    main()
