"""eva-convert-episodes: convert episodes between the ALOHA HDF5 layout and a LeRobot v3.0 dataset.

    eva-convert-episodes IN [IN ...] --to lerobot OUT [--codec h264|av1] [--append | --overwrite]
    eva-convert-episodes IN [IN ...] --to aloha OUT [--overwrite]

IN: any mix of episode HDF5 files (ALOHA / Cobot Magic, ours, RoboTwin), folders of them and
local LeRobot v3.0 dataset roots (eva_core.data.load_episodes). The last path is OUT.
--to lerobot: OUT is one dataset, every camera a video feature, the instruction its task; with
--append the episodes are added to the existing dataset OUT (same features).
--to aloha: OUT/<name>.hdf5 per episode (the HDF5 file's name, or episode_NNNNNN for a LeRobot
episode), our ALOHA layout with the attribute `source`.
OUT appears only once complete; an existing non-empty OUT is refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eva_core.cli import UserError, add_debug_arg, cli_main

PROG = "eva-convert-episodes"


def _parser():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="IN [IN ...] OUT")
    ap.add_argument("--to", required=True, choices=("lerobot", "aloha"), help="output format")
    ap.add_argument("--embodiment", default=None, help="embodiment name or YAML (default: the default one)")
    ap.add_argument("--codec", choices=("h264", "av1"), default="h264", help="lerobot video codec (default h264)")
    ap.add_argument("--append", action="store_true", help="--to lerobot: add to the existing dataset OUT")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT once the new one is complete")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_arg(ap)
    return ap


def _aloha_name(ref) -> str:
    return f"{ref.path.stem}.hdf5" if not ref.is_lerobot else f"{ref.path.name}_episode_{ref.index:06d}.hdf5"


def run(argv) -> int:
    args = _parser().parse_intermixed_args(argv)
    if len(args.paths) < 2:
        raise UserError("give at least one IN and the OUT path")
    *ins, out = args.paths
    from tqdm import tqdm

    from eva_core.data.load import find_episodes, read_ref
    from eva_core.embodiment import load_embodiment

    emb = load_embodiment(args.embodiment) if args.embodiment else load_embodiment()
    if out.resolve() in [p.resolve() for p in ins]:
        raise UserError(f"{out}: is also an input; write to another OUT")
    refs = find_episodes(*ins, embodiment=emb)
    if not refs:
        raise UserError(f"no episodes in {[str(p) for p in ins]}")
    episodes = (read_ref(r, embodiment=emb) for r in tqdm(refs, desc="episodes", unit="ep", disable=args.no_progress))
    if args.to == "lerobot":
        from eva_core.data.lerobot_write import write_lerobot

        info = write_lerobot(episodes, out, emb, overwrite=args.overwrite, append=args.append, codec=args.codec,
                             progress=not args.no_progress)
        print(f"{PROG}: {len(refs)} episodes -> {out} (LeRobot v3.0: {info['total_episodes']} episodes, "
              f"{info['total_frames']} frames at {info['fps']} fps)")
        return 0
    if args.append:
        raise UserError("--append works with --to lerobot only")
    from eva_core.cli import prepare_output_dir
    from eva_core.data.hdf5_io import write_aloha_episode

    names = [_aloha_name(r) for r in refs]
    if len(set(names)) != len(names):
        raise UserError("two inputs give the same episode file name; convert them into different OUT folders")
    with prepare_output_dir(out, overwrite=args.overwrite, resumable=False, staged=True) as tmp:
        for ref, ep, name in zip(refs, episodes, names):
            write_aloha_episode(ep, tmp / name, seed=ep.meta.get("seed"), source=str(ref))
    print(f"{PROG}: {len(refs)} episodes -> {out} (ALOHA HDF5)")
    return 0


def main(argv=None) -> int:
    return cli_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
