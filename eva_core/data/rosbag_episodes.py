"""eva-bag-to-episodes: rosbag2 recordings (MCAP or sqlite3) -> episode HDF5 files or one LeRobot v3.0 dataset.

    eva-bag-to-episodes BAG [BAG ...] --out DIR [--instruction TEXT] [--max-skew 0.02]
    eva-bag-to-episodes BAG [BAG ...] --out DATASET --format lerobot [--codec h264|av1] [--append]

One episode per BAG (a rosbag2 bag, an `eva-record` episode directory of segment bags, or one
MCAP file). The primary camera's frames set the timeline; every other camera contributes its
nearest frame, and the joint states (`joint_states`), the leader arms (`leader/joint_states`,
the ALOHA action; else the controller's `eva/controller/command`; else the measured joints) are
linearly interpolated to each frame time from the message header stamps. A frame whose nearest
sample of any stream is further than `--max-skew` seconds is dropped (and counted).
The instruction is `--instruction`, else the last `eva/instruction` message of the bag.

Output: DIR/<bag name>.hdf5, the ALOHA layout of eva_core.data.hdf5_io plus the attributes
source and instruction, each written atomically. With --format lerobot, DIR is one LeRobot
v3.0 dataset (eva_core.data.lerobot_write), one episode per bag, the instruction as its task;
it appears once complete, and --append adds episodes to an existing one. A truncated or corrupt
bag prints one line per problem and keeps its complete part (complete chunks of a killed writer's
segment), and the episode's line says how many seconds were lost; the exit status is then 1.
Nothing usable at all: exit 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eva_core.cli import UserError, add_debug_arg, cli_main
from eva_core.data.episode import Episode
from eva_core.data.rosbag_io import BagReport, iter_bag

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINT_TYPE = "sensor_msgs/msg/JointState"
STRING_TYPE = "std_msgs/msg/String"
CAMERA_SUFFIX = "/color/image_raw"


@dataclass
class ConvertOptions:
    joint_topic: str = "joint_states"
    leader_topic: str = "leader/joint_states"
    command_topic: str = "eva/controller/command"
    instruction_topic: str = "eva/instruction"
    instruction: str | None = None
    primary: str | None = None          # camera name; default cam_high if recorded, else the first
    cameras: list | None = None         # None: every camera recorded
    max_skew: float = 0.02              # s


@dataclass
class Streams:
    images: dict = field(default_factory=dict)     # camera -> [(stamp, image)]
    joints: dict = field(default_factory=dict)     # role -> [(stamp, action)]
    instruction: list = field(default_factory=list)  # [(log time, text)]
    skipped: dict = field(default_factory=dict)    # topic -> reason


def _matches(topic: str, name: str) -> bool:
    t, n = topic.strip("/"), name.strip("/")
    return t == n or t.endswith("/" + n)


def camera_of(topic: str) -> str | None:
    t = topic.rstrip("/")
    if t.endswith(CAMERA_SUFFIX) or t.endswith("/color/image_raw/compressed"):
        return t.split("/color/")[0].strip("/").split("/")[-1]
    return None


def _stamp(msg, log_time_ns: int) -> float:
    h = getattr(msg, "header", None)
    if h is not None and (h.stamp.sec or h.stamp.nanosec):
        return h.stamp.sec + h.stamp.nanosec * 1e-9
    return log_time_ns * 1e-9


def _image(msg, msgtype: str, where: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        from eva_core.images import decode_jpeg

        return decode_jpeg(bytes(msg.data))
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise ValueError(f"{where}: unsupported encoding {msg.encoding!r} (rgb8, bgr8, mono8)")
    data = np.asarray(msg.data, dtype=np.uint8)
    if msg.step != msg.width * channels or data.size != msg.height * msg.step:
        raise ValueError(f"{where}: {data.size} bytes do not make a {msg.height}x{msg.width} {msg.encoding} image")
    img = data.reshape(msg.height, msg.width, channels)
    if msg.encoding == "bgr8":
        img = img[..., ::-1]
    elif channels == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def _joints(msg, emb, where: str) -> np.ndarray:
    names = list(msg.name)
    pos = np.asarray(msg.position, dtype=np.float64)
    if len(names) != len(pos):
        raise ValueError(f"{where}: {len(names)} names but {len(pos)} positions")
    idx = {n: i for i, n in enumerate(names)}
    missing = [n for n in emb.joint_names if n not in idx]
    if missing:
        raise ValueError(f"{where}: missing joints {missing}")
    q = pos[[idx[n] for n in emb.joint_names]]
    if not np.all(np.isfinite(q)):
        raise ValueError(f"{where}: NaN/inf positions")
    return emb.joint_positions_to_action(q)


def collect(path: Path, emb, opts: ConvertOptions, report: BagReport, progress=None) -> Streams:
    """Decode the messages of one bag into time-stamped streams."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    out = Streams()
    # most specific name first: "/leader/joint_states" is the leader, not "joint_states" in a namespace
    roles = dict(sorted({"joints": opts.joint_topic, "leader": opts.leader_topic,
                         "command": opts.command_topic}.items(), key=lambda kv: -len(kv[1].strip("/"))))
    bad_msgs = 0
    for raw in iter_bag(path, report):
        if progress is not None:
            progress.update(1)
        where = f"{path}: {raw.topic}"
        try:
            if raw.msgtype in IMAGE_TYPES:
                cam = camera_of(raw.topic)
                if cam is None or (opts.cameras is not None and cam not in opts.cameras):
                    continue
                msg = store.deserialize_cdr(raw.data, raw.msgtype)
                out.images.setdefault(cam, []).append((_stamp(msg, raw.log_time_ns), _image(msg, raw.msgtype, where)))
            elif raw.msgtype == JOINT_TYPE:
                role = next((r for r, t in roles.items() if _matches(raw.topic, t)), None)
                if role is None:
                    continue
                msg = store.deserialize_cdr(raw.data, raw.msgtype)
                out.joints.setdefault(role, []).append((_stamp(msg, raw.log_time_ns), _joints(msg, emb, where)))
            elif raw.msgtype == STRING_TYPE and _matches(raw.topic, opts.instruction_topic):
                out.instruction.append((raw.log_time_ns, store.deserialize_cdr(raw.data, raw.msgtype).data))
        except (ValueError, KeyError, AssertionError, IndexError) as e:   # one bad message: skip it, say so once
            bad_msgs += 1
            if bad_msgs == 1:
                text = " ".join(str(e).split()) or type(e).__name__
                report.errors.append(f"{text} (message skipped)" if text.startswith(where)
                                     else f"{where}: undecodable message skipped ({text})")
    if bad_msgs > 1:
        report.error(path, f"{bad_msgs} undecodable messages skipped in all")
    return out


def _sorted(samples):
    samples = sorted(samples, key=lambda s: s[0])
    t = np.array([s[0] for s in samples])
    keep = np.concatenate([[True], np.diff(t) > 0]) if len(t) else np.zeros(0, bool)
    return t[keep], [s[1] for s, k in zip(samples, keep) if k]


def interpolate(t_src: np.ndarray, values: np.ndarray, t: np.ndarray, max_skew: float):
    """Values linearly interpolated at `t`, and a mask of the times whose nearest sample lies
    within `max_skew` and that lie inside the samples' span (no extrapolation)."""
    if len(t_src) == 0:
        return np.zeros((len(t), 0)), np.zeros(len(t), bool)
    i = np.clip(np.searchsorted(t_src, t), 1, max(1, len(t_src) - 1))
    lo, hi = np.maximum(i - 1, 0), np.minimum(i, len(t_src) - 1)
    span = np.where(hi > lo, t_src[hi] - t_src[lo], 1.0)
    w = np.clip((t - t_src[lo]) / span, 0.0, 1.0)[:, None]
    out = values[lo] * (1 - w) + values[hi] * w
    nearest = np.minimum(np.abs(t - t_src[lo]), np.abs(t - t_src[hi]))
    ok = (nearest <= max_skew) & (t >= t_src[0]) & (t <= t_src[-1])
    return out, ok


def nearest(t_src: np.ndarray, t: np.ndarray, max_skew: float):
    i = np.clip(np.searchsorted(t_src, t), 1, max(1, len(t_src) - 1))
    lo, hi = np.maximum(i - 1, 0), np.minimum(i, len(t_src) - 1)
    pick = np.where(np.abs(t - t_src[lo]) <= np.abs(t - t_src[hi]), lo, hi)
    return pick, np.abs(t - t_src[pick]) <= max_skew


def build_episode(streams: Streams, emb, opts: ConvertOptions, where: str) -> tuple[Episode, dict]:
    if not streams.images:
        raise UserError(f"{where}: no camera images (topics ending in {CAMERA_SUFFIX})")
    if "joints" not in streams.joints:
        raise UserError(f"{where}: no {JOINT_TYPE} on {opts.joint_topic!r}")
    cams = sorted(streams.images)
    primary = opts.primary or ("cam_high" if "cam_high" in cams else cams[0])
    if primary not in streams.images:
        raise UserError(f"{where}: primary camera {primary!r} not recorded (cameras: {cams})")
    t, frames = _sorted(streams.images[primary])
    ok = np.ones(len(t), bool)
    picks = {}
    for cam in cams:
        if cam != primary:
            tc, imgs = _sorted(streams.images[cam])
            idx, good = nearest(tc, t, opts.max_skew)
            picks[cam] = (imgs, idx)
            ok &= good
    tj, qj = _sorted(streams.joints["joints"])
    qpos, good = interpolate(tj, np.stack(qj), t, opts.max_skew)
    ok &= good
    src = next((r for r in ("leader", "command") if r in streams.joints), None)
    if src is not None:
        ta, aa = _sorted(streams.joints[src])
        action, good = interpolate(ta, np.stack(aa), t, opts.max_skew)
        ok &= good
    else:
        action = qpos
    n = int(ok.sum())
    if n < 2:
        raise UserError(f"{where}: {n} of {len(t)} frames have every stream within max skew {opts.max_skew} s")
    keep = np.flatnonzero(ok)
    images = {primary: np.stack([frames[i] for i in keep])}
    for cam, (imgs, idx) in picks.items():
        images[cam] = np.stack([imgs[idx[i]] for i in keep])
    dt = np.diff(t[keep])
    fps = float(1.0 / np.median(dt)) if len(dt) and np.median(dt) > 0 else 30.0
    instruction = opts.instruction if opts.instruction is not None else \
        (sorted(streams.instruction)[-1][1] if streams.instruction else "")
    ep = Episode(frames=images[primary], qpos=qpos[keep], action=action[keep], fps=fps, instruction=instruction,
                 camera=primary, cameras=images, source=where, meta={"sim": False})
    info = {"frames": n, "dropped": int(len(t) - n), "action_from": src or "joint_states", "fps": fps,
            "stamps": t[keep]}
    return ep, info


def bag_episode(path, emb, opts: ConvertOptions, progress=None) -> tuple[Episode | None, BagReport, dict]:
    """One bag -> one Episode (None if nothing usable). Returns (episode, report, info)."""
    path = Path(path)
    report = BagReport(path)
    streams = collect(path, emb, opts, report, progress)
    try:
        ep, info = build_episode(streams, emb, opts, str(path))
    except UserError as e:
        report.errors.append(str(e))
        return None, report, {}
    return ep, report, info


def convert_bag(path, emb, opts: ConvertOptions, out_file, progress=None) -> tuple[Path | None, BagReport, dict]:
    """One bag -> one episode file. Returns (written path or None, report, info)."""
    from eva_core.data.hdf5_io import write_aloha_episode

    ep, report, info = bag_episode(path, emb, opts, progress)
    if ep is None:
        return None, report, {}
    write_aloha_episode(ep, out_file, seed=None, source=str(Path(path)), action_from=info["action_from"])
    return Path(out_file), report, info


def lost_note(report: BagReport) -> str:
    """How much of the recording a damaged bag lost (rosbag_io's `lost_s`), for the episode's line."""
    if not report.lost:
        return "nothing lost"
    return f"{report.lost_s:.2f} s lost in {len(report.lost)} damaged segment{'s' if len(report.lost) > 1 else ''}"


def _parser():
    ap = argparse.ArgumentParser(prog="eva-bag-to-episodes", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bags", nargs="+", type=Path, help="rosbag2 bags, eva-record episode dirs or MCAP files")
    ap.add_argument("--out", required=True, type=Path, help="output directory (new or empty unless --overwrite)")
    ap.add_argument("--instruction", default=None, help="instruction for every episode (default: the bag's topic)")
    ap.add_argument("--embodiment", default=None, help="embodiment name or YAML (default: the default one)")
    ap.add_argument("--max-skew", type=float, default=0.02, help="s between a frame and its nearest sample (0.02)")
    ap.add_argument("--primary", default=None, help="camera whose frames set the timeline (default cam_high)")
    ap.add_argument("--cameras", nargs="*", default=None, help="cameras to keep (default: all)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace a non-empty --out (swapped in once the conversion is done)")
    ap.add_argument("--format", choices=("hdf5", "lerobot"), default="hdf5",
                    help="hdf5: one ALOHA-layout file per bag (default); lerobot: --out is one LeRobot v3.0 dataset")
    ap.add_argument("--codec", choices=("h264", "av1"), default="h264", help="lerobot video codec (default h264)")
    ap.add_argument("--append", action="store_true",
                    help="lerobot: add the bags' episodes to the existing dataset --out (same features)")
    add_debug_arg(ap)
    return ap


def run(argv) -> int:
    args = _parser().parse_args(argv)
    if not (np.isfinite(args.max_skew) and args.max_skew > 0):
        raise UserError(f"--max-skew must be > 0, got {args.max_skew}")
    from tqdm import tqdm

    from eva_core.cli import prepare_output_dir
    from eva_core.embodiment import load_embodiment

    emb = load_embodiment(args.embodiment) if args.embodiment else load_embodiment()
    opts = ConvertOptions(instruction=args.instruction, primary=args.primary, cameras=args.cameras,
                          max_skew=args.max_skew)
    for bag in args.bags:
        if not bag.exists():
            raise UserError(f"{bag}: no such bag")
    if args.format == "lerobot":
        return _run_lerobot(args, emb, opts)
    if args.append:
        raise UserError("--append works with --format lerobot only")
    names = [f"{bag.name.removesuffix('.mcap')}.hdf5" for bag in args.bags]
    if len(set(names)) != len(names):
        raise UserError("two bags have the same name; convert them into different --out directories")
    written, problems = 0, 0
    # a non-empty --out needs --overwrite; the directory appears (or is replaced) once converted
    run = prepare_output_dir(args.out, overwrite=args.overwrite, resumable=False, staged=True)
    with run as tmp, tqdm(desc="messages", unit="msg") as bar:
        for bag, name in zip(args.bags, names):
            path, report, info = convert_bag(bag, emb, opts, tmp / name, progress=bar)
            path = run.final_path(path) if path is not None else None
            for line in report.errors:
                problems += 1
                tqdm.write(f"eva-bag-to-episodes: error: {line}", file=sys.stderr)
            if path is not None:
                written += 1
                kept = f"{info['frames']} frames at {info['fps']:.1f} fps"
                dropped = f", {info['dropped']} dropped (skew)" if info["dropped"] else ""
                tqdm.write(f"eva-bag-to-episodes: {bag} -> {path} ({kept}{dropped}; action from {info['action_from']}"
                           f"; {lost_note(report)})")
        if written == 0:
            raise UserError(f"no episode written ({problems} problems above)")
    return 1 if problems else 0


def _run_lerobot(args, emb, opts: ConvertOptions) -> int:
    """Every bag becomes one episode of the LeRobot v3.0 dataset --out (appears once complete)."""
    from tqdm import tqdm

    from eva_core.data.lerobot_write import LeRobotWriter, encoder_for, lerobot_output

    encoder_for(args.codec)
    written, problems = 0, 0
    with lerobot_output(args.out, overwrite=args.overwrite, append=args.append) as root, \
            tqdm(desc="messages", unit="msg") as bar:
        writer = LeRobotWriter(root, emb, codec=args.codec)
        for bag in args.bags:
            ep, report, info = bag_episode(bag, emb, opts, progress=bar)
            for line in report.errors:
                problems += 1
                tqdm.write(f"eva-bag-to-episodes: error: {line}", file=sys.stderr)
            if ep is not None:
                index = writer.add(ep)
                written += 1
                tqdm.write(f"eva-bag-to-episodes: {bag} -> {args.out} episode {index} ({info['frames']} frames at "
                           f"{info['fps']:.1f} fps; action from {info['action_from']}; {lost_note(report)})")
        if written == 0:
            raise UserError(f"no episode written ({problems} problems above)")
        writer.close()
    return 1 if problems else 0


def main(argv=None) -> int:
    return cli_main("eva-bag-to-episodes", run, argv)


if __name__ == "__main__":
    sys.exit(main())
