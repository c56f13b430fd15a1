"""IDM throughput: batched predict() vs EVA's per-frame loop, same model, same video, one run.

    python bench/idm_throughput.py                       # light variant (resnet18 @ 224)
    python bench/idm_throughput.py --variant tiny --frames 64

Per-frame = what EVA's reward does: for each t build the window [t-1, t, t+1], resize and
normalise those 3 frames, run the network on a batch of 1. Batched = IDM.predict: every frame
resized once, windows gathered by index, chunks of --batch-size through the network.
Prints frames/s of both and their ratio (goal for the light variant: >= 5x).
"""

from __future__ import annotations

import argparse
import time

import torch

from eva_core.idm import VARIANTS, IDMConfig, build_idm


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    fn()  # warm-up (allocations, oneDNN kernels)
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=VARIANTS, default="resnet18")
    p.add_argument("--frames", type=int, default=49, help="video length (EVA chunk: 49)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--image-size", type=int, default=None, help="model input side (default: the variant's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per mode (best is reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    idm = build_idm(IDMConfig(variant=a.variant, image_size=a.image_size)).eval()
    video = torch.rand(a.frames, 3, a.height, a.width)

    t_loop, out_loop = timed(lambda: idm.predict_per_frame(video), a.repeats)
    t_batch, out_batch = timed(lambda: idm.predict(video, batch_size=a.batch_size), a.repeats)
    fps_loop, fps_batch = a.frames / t_loop, a.frames / t_batch
    diff = float((out_loop - out_batch).abs().max())
    print(f"variant={a.variant} input={a.height}x{a.width} -> {idm.config.image_size}px, T={a.frames}, "
          f"batch={a.batch_size}, threads={torch.get_num_threads()}")
    print(f"per-frame loop : {fps_loop:8.2f} frames/s")
    print(f"batched predict: {fps_batch:8.2f} frames/s")
    print(f"ratio batched/per-frame: {fps_batch / fps_loop:.2f}x   (max |diff| of outputs {diff:.2e})")
    return {"fps_loop": fps_loop, "fps_batch": fps_batch, "ratio": fps_batch / fps_loop, "max_diff": diff}


if __name__ == "__main__":
    main()
