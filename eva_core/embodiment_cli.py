"""eva-check-embodiment: load an embodiment and print its action layout, arms and limits."""

from __future__ import annotations

import argparse
import json
import sys

from eva_core.cli import add_debug_arg, cli_main
from eva_core.embodiment import DEFAULT_EMBODIMENT, load_embodiment


def run(argv) -> int:
    ap = argparse.ArgumentParser(prog="eva-check-embodiment", description=__doc__)
    ap.add_argument("embodiment", nargs="?", default=DEFAULT_EMBODIMENT, help="name under config/ or a YAML path")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_debug_arg(ap)
    args = ap.parse_args(argv)
    emb = load_embodiment(args.embodiment)
    rows = [
        dict(dim=i, name=n, gripper=bool(emb.is_gripper[i]), lower=float(emb.pos_lower[i]),
             upper=float(emb.pos_upper[i]), vel_max=float(emb.vel_max[i]), acc_max=float(emb.acc_max[i]))
        for i, n in enumerate(emb.joint_names)
    ]
    arms = [dict(name=a.name, dims=list(a.dims), gripper_dim=a.gripper_dim, gripper_stroke_m=a.gripper_stroke_m,
                 can=a.can) for a in emb.arms]
    if args.json:
        print(json.dumps({"name": emb.name, "urdf": str(emb.urdf_file), "dims": rows, "arms": arms,
                          "mirror_permutation": emb.mirror_permutation.tolist()}, indent=2))
        return 0
    print(f"{emb.name}: {emb.dof} dims, URDF {emb.urdf_file}")
    print(f"{'dim':>3} {'name':<15} {'lower':>9} {'upper':>9} {'vel_max':>8} {'acc_max':>8}")
    for r in rows:
        unit = "(norm)" if r["gripper"] else ""
        print(f"{r['dim']:>3} {r['name']:<15} {r['lower']:>9.4f} {r['upper']:>9.4f} "
              f"{r['vel_max']:>8.4f} {r['acc_max']:>8.2f} {unit}")
    for a in arms:
        print(f"arm {a['name']}: dims {a['dims'][0]}..{a['dims'][-1]}, gripper dim {a['gripper_dim']}, "
              f"stroke {a['gripper_stroke_m']} m, CAN {a['can']}")
    return 0


def main(argv=None) -> int:
    return cli_main("eva-check-embodiment", run, argv)


if __name__ == "__main__":
    sys.exit(main())
