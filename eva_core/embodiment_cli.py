"""eva-check-embodiment: load an embodiment and print its action layout and limits."""

from __future__ import annotations

import argparse
import json
import sys


from eva_core.embodiment import EmbodimentError, load_embodiment


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="eva-check-embodiment", description=__doc__)
    ap.add_argument("embodiment", nargs="?", default="cobot_magic", help="name under config/ or a YAML path")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    try:
        emb = load_embodiment(args.embodiment)
    except (EmbodimentError, FileNotFoundError) as e:
        print(f"eva-check-embodiment: {e}", file=sys.stderr)
        return 2
    rows = [
        dict(dim=i, name=n, gripper=bool(emb.is_gripper[i]), lower=float(emb.pos_lower[i]),
             upper=float(emb.pos_upper[i]), vel_max=float(emb.vel_max[i]), acc_max=float(emb.acc_max[i]))
        for i, n in enumerate(emb.joint_names)
    ]
    if args.json:
        print(json.dumps({"name": emb.name, "urdf": str(emb.urdf_file), "dims": rows}, indent=2))
        return 0
    print(f"{emb.name}: {emb.dof} dims, URDF {emb.urdf_file}")
    print(f"{'dim':>3} {'name':<15} {'lower':>9} {'upper':>9} {'vel_max':>8} {'acc_max':>8}")
    for r in rows:
        unit = "(norm)" if r["gripper"] else ""
        print(f"{r['dim']:>3} {r['name']:<15} {r['lower']:>9.4f} {r['upper']:>9.4f} "
              f"{r['vel_max']:>8.4f} {r['acc_max']:>8.2f} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
