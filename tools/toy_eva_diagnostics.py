"""Where the toy EVA loses accuracy (docs/toy_eva.md, sections 3 and 5), on held-out demonstrations.

    python tools/toy_eva_diagnostics.py [--checkpoints checkpoints/demo] [--tasks T ...] [--seeds 100 101 102]
                                        [--heldout DIR]

For each task's successful scripted demos on the seeds: with --heldout, the episodes recorded
through the ROS graph in DIR/<task>/ (as train-demo's run/heldout and eva-demo's
work/heldout_graph/episodes hold them: the route of the IDM's training demos); without it,
rendered here by run_demo (no graph: its 10 Hz targets are another recording route):
  - how far the demo's commands are from the joints measured a frame later (invisible in the video);
  - the IDM's action error (rad, the task arm's joints and gripper) one chunk ahead, on the demo's
    own frames and on their round trip through the world model's VAE (what the planner decodes);
  - the executability reward of the ground-truth chunks, of still chunks, and of the ground truth
    after the VAE;
  - the open-loop replay of the IDM-decoded demo: success, and where the task's object ends up.
Prints one line per measurement and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def chunks(frames: np.ndarray, step: int, n: int, every: int):
    """(start, indices) of n-frame chunks at every `step`-th frame, a chunk every `every` frames."""
    for t in range(0, len(frames) - step * (n - 1), every):
        yield t, np.arange(t, t + step * n, step)


def moved_dims(ep) -> np.ndarray:
    """The action dimensions a demo moves."""
    return np.flatnonzero(np.ptp(np.asarray(ep.action), axis=0) > 1e-3)


def moved_joints(ep, emb) -> list[int]:
    """The arm joints (not grippers) a demo moves."""
    return [d for d in moved_dims(ep) if d not in emb.gripper_dims]


def run(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="toy-eva-diagnostics", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=Path, default=REPO / "checkpoints" / "demo")
    ap.add_argument("--tasks", nargs="*", default=None, help="default: the manifest's tasks")
    ap.add_argument("--seeds", nargs="*", type=int, default=None, help="default: the manifest's replay seeds")
    ap.add_argument("--heldout", type=Path, default=None,
                    help="graph-recorded held-out episodes, DIR/<task>/*.hdf5 (default: render them here)")
    args = ap.parse_args(argv)
    if args.heldout is not None and not args.heldout.is_dir():
        raise FileNotFoundError(f"--heldout {args.heldout}: not a directory (want DIR/<task>/*.hdf5)")
    import torch
    from diffusers import AutoencoderKLWan

    from eva_core.data.hdf5_io import read_aloha_hdf5
    from eva_core.embodiment import load_embodiment
    from eva_core.idm import load_idm
    from eva_core.sim.idm_replay import decode_video, ground_truth_demos, replay_end
    from eva_core.world_model.best_of import load_scorer
    from eva_core.world_model.vae_roundtrip import roundtrip_clip
    from eva_ros.demo.runs import episode_seed

    torch.set_num_threads(1)
    ck = args.checkpoints
    cfg = json.loads((ck / "manifest.json").read_text())["config"]
    cam, model = cfg["pipeline"]["camera"], cfg["model"]
    step, n = max(1, round(float(cam["fps"]) / float(model["fps"]))), int(model["num_frames"])
    emb = load_embodiment()
    idm = load_idm(ck / "idm")
    vae = AutoencoderKLWan.from_pretrained(str(ck / "vae"), local_files_only=True).eval()
    scorer = load_scorer(ck / "idm", emb, fps=float(model["fps"]))
    for task in args.tasks or cfg["pipeline"]["tasks"]:
        seeds = args.seeds or cfg["pipeline"]["replay_seeds"]
        if args.heldout is not None:
            demos = [(episode_seed(f), read_aloha_hdf5(f)) for f in sorted((args.heldout / task).glob("*.hdf5"))]
            demos = sorted((d for d in demos if d[0] in seeds), key=lambda d: d[0])
            route = f"recorded through the graph in {args.heldout / task}"
        else:
            demos = ground_truth_demos(task, emb, seeds, float(cam["fps"]), (int(cam["height"]), int(cam["width"])))
            route = "rendered by run_demo"
        err_cam, err_vae, gt, still, gt_vae = [], [], [], [], []
        for _seed, ep in demos:
            act = np.asarray(ep.action)
            arm = moved_dims(ep)
            for _t, idx in chunks(ep.frames, step, n, step):
                clip, rec = ep.frames[idx], roundtrip_clip(vae, ep.frames[idx])
                err_cam.append(np.abs(decode_video(idm, clip, emb)[:, arm] - act[idx][:, arm]).mean())
                err_vae.append(np.abs(decode_video(idm, rec, emb)[:, arm] - act[idx][:, arm]).mean())
                gt.append(clip), still.append(np.repeat(clip[:1], n, 0)), gt_vae.append(rec)
        print(f"{task}: {len(demos)} demos of {len(seeds)} seeds ({route}), {len(err_cam)} chunks of {n} frames")
        if not demos:
            continue
        print(f"{task}: IDM action error (rad, moving dims) on camera frames {np.mean(err_cam):.3f}, "
              f"on their VAE round trip {np.mean(err_vae):.3f}")
        scores = {k: float(np.mean(np.asarray(scorer.score_frames(np.stack(v)))))
                  for k, v in (("ground truth", gt), ("still", still), ("ground truth after the VAE", gt_vae))}
        print(f"{task}: executability reward " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        lag = [np.abs(np.asarray(ep.action)[:-1] - np.asarray(ep.qpos)[1:])[:, moved_joints(ep, emb)] for _, ep in demos]
        print(f"{task}: command minus the measured joints a frame later (rad, what the video cannot show): "
              f"mean {np.mean([x.mean() for x in lag]):.3f}, max {max(x.max() for x in lag):.3f}")
        for seed, ep in demos:
            ok, where = replay_end(task, emb, seed, decode_video(idm, ep.frames, emb), ep.fps)
            where = {k: np.round(v, 3).tolist() for k, v in where.items()}
            print(f"{task}: seed {seed} replay success {ok}; objects at {where}")
    return 0


def main(argv=None) -> int:
    from eva_core.cli import cli_main

    return cli_main("toy-eva-diagnostics", run, argv)


if __name__ == "__main__":
    sys.exit(main())
