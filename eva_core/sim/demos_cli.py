"""eva-sim-demos: scripted demonstrations in the MuJoCo twin, written as episode HDF5 files.

    eva-sim-demos --task pick_block --episodes 20 --seed 0 --out data/sim/pick_block

Seeds S .. S+N-1 each place the task's objects, plan with IK (mink) and run in the physics twin.
Only successful episodes are kept: `episode_<seed>.hdf5` in the ALOHA / Cobot Magic layout
(observations/images/<cam>, observations/qpos|qvel|effort, action) plus the attributes
instruction, seed, task, fps. `summary.json` lists the seeds and the success rate, which is also
printed. The output directory appears only when complete (`--overwrite` replaces a non-empty one).
"""

from __future__ import annotations

import argparse
import sys
import time

from eva_core.cli import add_debug_arg, add_overwrite_arg, cli_main, prepare_output_dir


def _parser() -> argparse.ArgumentParser:
    from eva_core.sim.registry import TASKS

    ap = argparse.ArgumentParser(prog="eva-sim-demos", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=sorted(TASKS), help="twin task")
    ap.add_argument("--episodes", type=int, default=10, help="seeds to try (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--embodiment", default=None, help="embodiment name or YAML (default: the default one)")
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate of the episodes (default 25)")
    ap.add_argument("--height", type=int, default=240, help="image height (default 240)")
    ap.add_argument("--width", type=int, default=320, help="image width (default 320)")
    ap.add_argument("--cameras", nargs="*", default=None, help="cameras to record (default: all)")
    ap.add_argument("--compress", action="store_true", help="JPEG rows as ALOHA's compress option")
    add_overwrite_arg(ap)
    add_debug_arg(ap)
    return ap


def run(argv) -> int:
    args = _parser().parse_args(argv)
    if args.episodes < 1 or not args.fps > 0 or args.height < 8 or args.width < 8:
        raise ValueError("--episodes must be >= 1, --fps > 0, --height/--width >= 8")
    from pathlib import Path

    from tqdm import tqdm

    from eva_core.atomic_io import write_json
    from eva_core.data.hdf5_io import write_aloha_episode
    from eva_core.embodiment import load_embodiment
    from eva_core.sim.demos import run_demo
    from eva_core.sim.ik import IKError
    from eva_core.sim.registry import make_task

    out = Path(args.out)
    run = prepare_output_dir(out, overwrite=args.overwrite, resumable=False, staged=True)  # before any work
    try:
        emb = load_embodiment(args.embodiment) if args.embodiment else load_embodiment()
        task = make_task(args.task, emb)
        twin = task.make_twin()
        cams = args.cameras if args.cameras is not None else twin.cameras
        unknown = sorted(set(cams) - set(twin.cameras))
        if unknown:
            raise ValueError(f"--cameras: unknown {unknown}; the twin has {twin.cameras}")
    except BaseException:
        run.discard()
        raise
    kept, failed, t0 = [], {}, time.time()
    with run as tmp:
        bar = tqdm(range(args.seed, args.seed + args.episodes), desc=f"{args.task}", unit="ep")
        for seed in bar:
            try:
                res = run_demo(task, twin, seed, fps=args.fps, cameras=cams, size=(args.height, args.width))
            except IKError as e:
                failed[seed] = str(e)
                continue
            if res.success:
                write_aloha_episode(res.episode, tmp / f"episode_{seed}.hdf5", seed=seed, compress=args.compress,
                                    task=task.name, success=True, embodiment=emb.name)
                kept.append(seed)
            else:
                failed[seed] = "success check false"
            bar.set_postfix(success=f"{len(kept)}/{seed - args.seed + 1}")
        elapsed = time.time() - t0
        rate = len(kept) / args.episodes
        write_json(tmp / "summary.json", {
            "task": task.name, "instruction": task.instruction, "embodiment": emb.name,
            "seeds": list(range(args.seed, args.seed + args.episodes)), "kept": kept, "failed": failed,
            "success_rate": rate, "seconds": round(elapsed, 2), "seconds_per_episode": round(elapsed / args.episodes, 3),
            "fps": args.fps, "image_size": [args.height, args.width], "cameras": list(cams)})
    twin.close()
    print(f"eva-sim-demos: {task.name}: {len(kept)}/{args.episodes} successful ({100 * rate:.0f} %), "
          f"{elapsed / args.episodes:.2f} s per episode; wrote {out}")
    return 0


def main(argv=None) -> int:
    return cli_main("eva-sim-demos", run, argv)


if __name__ == "__main__":
    sys.exit(main())
