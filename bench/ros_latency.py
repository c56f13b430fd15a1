#!/usr/bin/env python3
"""ROS transport and control-loop timing, measured side by side in one run.

1. Image latency between two processes: a 640x480 rgb8 sensor_msgs/Image (`msg.data =
   arr.tobytes()`, RELIABLE keep-last-1 as on the camera topic), publish stamp -> subscriber
   callback, for three transport setups (both sides alike): Fast DDS DEFAULT builtin transports,
   LARGE_DATA, and eva's setup = LARGE_DATA + config/fastdds_shm.xml (a 16 MB shared-memory
   segment). Variants are interleaved, `--repeats` times; prints medians and ratios to DEFAULT.
2. Controller period jitter at 200 Hz (eva-controller-node on the loopback arm): alone
   ("idle"); with the planner busy (tiny world model generating back to back, policy
   "continuous", fed by the camera node) pinned to the other core ("planner_busy"); and the whole
   loop composed in one process by eva-bringup ("composed", planner busy in the same process).
   Periods come from the stamps of consecutive ticks on /eva/controller/command; prints p50/p99
   and the p99 ratios to idle.

Every process uses ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a private ROS_DOMAIN_ID.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOPIC = "/bench/image"


# ---- roles (run in child processes) ---------------------------------------------------------
def role_pub(args):
    import rclpy
    from sensor_msgs.msg import Image

    from eva_ros import qos
    from eva_ros.conversions import image_to_msg

    rclpy.init()
    node = rclpy.create_node("bench_pub")
    pub = node.create_publisher(Image, TOPIC, qos.IMAGE)
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    period = 1.0 / args.rate
    next_t = time.monotonic()
    try:
        while True:
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
            pub.publish(image_to_msg(img, time.time(), "bench"))
    except KeyboardInterrupt:
        pass


def role_sub(args):
    import rclpy
    from sensor_msgs.msg import Image

    from eva_ros import qos
    from eva_ros.conversions import from_time_msg

    rclpy.init()
    node = rclpy.create_node("bench_sub")
    lat = []

    def cb(msg):
        lat.append(time.time() - from_time_msg(msg.header.stamp))

    node.create_subscription(Image, TOPIC, cb, qos.IMAGE)
    deadline = time.monotonic() + 120
    while len(lat) < args.warmup + args.count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({"latency_s": lat[args.warmup:]}))


def role_cmdsub(args):
    import rclpy
    from sensor_msgs.msg import JointState

    from eva_ros import qos
    from eva_ros.conversions import from_time_msg

    rclpy.init()
    node = rclpy.create_node("bench_cmdsub")
    ticks = []
    node.create_subscription(JointState, "/eva/controller/command",
                             lambda m: ticks.append((int(m.header.frame_id.split("=")[1]), from_time_msg(m.header.stamp))),
                             qos.STATE)
    deadline = time.monotonic() + 120
    while not ticks and time.monotonic() < deadline:  # wait for the controller
        rclpy.spin_once(node, timeout_sec=0.1)
    t_end = time.monotonic() + args.warmup_s + args.seconds
    while time.monotonic() < t_end:
        rclpy.spin_once(node, timeout_sec=0.05)
    n_warm = int(args.warmup_s * 200)
    ticks = ticks[n_warm:]
    periods = [b[1] - a[1] for a, b in zip(ticks, ticks[1:]) if b[0] == a[0] + 1]
    print(json.dumps({"periods_s": periods}))


# ---- orchestration ---------------------------------------------------------------------------
TRANSPORTS = {  # name -> (FASTDDS_BUILTIN_TRANSPORTS, use config/fastdds_shm.xml)
    "DEFAULT": ("DEFAULT", False),
    "LARGE_DATA": ("LARGE_DATA", False),
    "LARGE_DATA+SHM16MB": ("LARGE_DATA", True),
}


def env_for(domain: int, transport: str) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    builtin, shm = TRANSPORTS[transport]
    env["FASTDDS_BUILTIN_TRANSPORTS"] = builtin
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if shm:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
    return env


def spawn(cmd, env, cpu=None, stdout=subprocess.DEVNULL):
    pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=pre)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def self_cmd(role, *extra):
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, *extra]


def image_latency(transport, domain, args):
    env = env_for(domain, transport)
    sub = spawn(self_cmd("sub", "--count", str(args.count), "--warmup", "20"), env, stdout=subprocess.PIPE)
    pub = spawn(self_cmd("pub", "--rate", str(args.rate)), env)
    try:
        out, _ = sub.communicate(timeout=180)
    finally:
        stop(pub)
        stop(sub)
    return np.asarray(json.loads(out.strip().splitlines()[-1])["latency_s"]) * 1e3


def controller_jitter(scenario: str, domain: int, params: Path, args):
    env = env_for(domain, "LARGE_DATA+SHM16MB")
    cpus = sorted(os.sched_getaffinity(0))
    ctl_cpu, other_cpu = cpus[0], cpus[-1]
    ros = ["--ros-args", "--params-file", str(params)]
    if scenario == "composed":
        procs = [spawn([str(BIN / "eva-bringup"), "--config", str(params), "--quiet"], env)]
    else:
        procs = [spawn([str(BIN / "eva-controller-node"), *ros], env, cpu=ctl_cpu)]
    if scenario == "planner_busy":
        procs += [spawn([str(BIN / "eva-camera-node"), *ros], env, cpu=other_cpu),
                  spawn([str(BIN / "eva-planner-node"), *ros], env, cpu=other_cpu)]
    sub = spawn(self_cmd("cmdsub", "--seconds", str(args.seconds), "--warmup-s", "3"), env,
                cpu=other_cpu, stdout=subprocess.PIPE)
    try:
        out, _ = sub.communicate(timeout=300)
    finally:
        for p in procs:
            stop(p)
        stop(sub)
    return np.asarray(json.loads(out.strip().splitlines()[-1])["periods_s"]) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=150, help="images measured per transport and repeat")
    ap.add_argument("--rate", type=float, default=30.0, help="image rate (Hz)")
    ap.add_argument("--seconds", type=float, default=10.0, help="controller measurement per scenario")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-images", action="store_true")
    ap.add_argument("--skip-controller", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here (atomic)")
    ap.add_argument("--role", choices=["pub", "sub", "cmdsub"], help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    ap.add_argument("--warmup-s", type=float, default=3.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        return {"pub": role_pub, "sub": role_sub, "cmdsub": role_cmdsub}[args.role](args)

    from tqdm import tqdm

    domain = 150 + os.getpid() % 50
    results = {}
    if not args.skip_images:
        lat = {name: [] for name in TRANSPORTS}
        for _ in tqdm(range(args.repeats), desc="image latency"):
            for transport in lat:            # interleaved
                lat[transport].append(np.median(image_latency(transport, domain, args)))
        med = {k: float(np.median(v)) for k, v in lat.items()}
        results["image_640x480_latency_ms"] = {
            **med, "ratio_default_over_large_data": med["DEFAULT"] / med["LARGE_DATA"],
            "ratio_default_over_large_data_shm16mb": med["DEFAULT"] / med["LARGE_DATA+SHM16MB"]}
        print(f"640x480 rgb8 image between processes (RELIABLE, median of {args.repeats} x {args.count}):")
        for k, v in med.items():
            print(f"  {k:20s} {v:7.2f} ms   ratio DEFAULT/{k} = {med['DEFAULT'] / v:.2f}")
    if not args.skip_controller:
        with tempfile.TemporaryDirectory() as tmp:
            from eva_ros.params import merged_sections, params_layers

            data = merged_sections(params_layers(REPO / "config" / "loopback.yaml"))   # base.yaml + overlay
            data["planner"]["ros__parameters"].update(policy="continuous", max_obs_age=5.0)
            data["camera"]["ros__parameters"]["source_options"]["path"] = str(REPO / "config" / "playback" / "loopback_scene.mp4")
            params = Path(tmp) / "bench.yaml"
            params.write_text(yaml.safe_dump(data))
            per = {"idle": [], "planner_busy": [], "composed": []}
            for _ in tqdm(range(args.repeats), desc="controller jitter"):
                for scenario in per:
                    per[scenario].append(controller_jitter(scenario, domain, params, args))
        stats = {}
        for scenario, runs in per.items():
            x = np.concatenate(runs)
            stats[scenario] = {"p50_ms": float(np.percentile(x, 50)), "p99_ms": float(np.percentile(x, 99)),
                               "max_ms": float(x.max()), "ticks": int(x.size)}
            print(f"controller period at 200 Hz, {scenario:12s}: p50 {stats[scenario]['p50_ms']:.3f} ms, "
                  f"p99 {stats[scenario]['p99_ms']:.3f} ms, max {stats[scenario]['max_ms']:.2f} ms "
                  f"({x.size} ticks)")
        for scenario in ("planner_busy", "composed"):
            ratio = stats[scenario]["p99_ms"] / stats["idle"]["p99_ms"]
            stats[f"ratio_p99_{scenario}_over_idle"] = ratio
            print(f"p99 period ratio {scenario}/idle = {ratio:.2f}  (nominal period 5.000 ms)")
        results["controller_period"] = stats
    if args.json:
        from eva_core.atomic_io import write_json
        write_json(args.json, results)


if __name__ == "__main__":
    main()
