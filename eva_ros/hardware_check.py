"""eva-check-hardware: the first command on a new robot. It checks, without moving anything:

- each Piper arm of the embodiment: CAN interface up, CAN frames per second, firmware, motor
  enable status, status/error code (named), joint positions against the limits;
- each RealSense camera: serials found, the colour stream opened, measured fps.

It prints one table and exits 0 when everything is fine, 1 naming what is wrong (stderr).
`--enable-test` also enables the arms and moves each wrist joint (joint 6) a few degrees and back,
slowly, then disables them: support the arms, they go limp when disabled.

    eva-check-hardware                                   # robot: socketcan can_left/can_right
    eva-check-hardware --cameras cam_high=123456789012 cam_left_wrist=... cam_right_wrist=...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from eva_core.cli import UserError, add_debug_arg, cli_main
from eva_core.embodiment import DEFAULT_EMBODIMENT, load_embodiment
from eva_core.piper import protocol as P

PROG = "eva-check-hardware"


PIPER_BITRATE = 1_000_000


def _can_link(channel: str, interface: str) -> str:
    if interface != "socketcan":
        return f"{interface} (no link state)"
    net = Path(f"/sys/class/net/{channel}")
    if not net.exists():
        return "missing"
    flags = int((net / "flags").read_text().strip(), 16)
    return "up" if flags & 0x1 else "down"


def _can_bitrate(channel: str) -> int | None:
    """The bitrate `ip -details link show` reports (as piper_sdk's can_activate.sh reads it), or None."""
    import re
    import subprocess

    try:
        out = subprocess.run(["ip", "-details", "link", "show", channel], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"bitrate (\d+)", out)
    return int(m.group(1)) if m else None


def check_arms(emb, args) -> list[tuple[str, bool, str]]:
    from eva_ros.backends.piper import PiperArm

    opts = {"can_interface": args.can_interface, "connect_timeout": args.duration,
            "feedback_timeout": args.feedback_timeout}
    opts.update({k: v for k, v in (("can_left", args.can_left), ("can_right", args.can_right)) if v})
    backend = PiperArm(emb, opts)
    rows = []
    opened = []
    for ch in backend.channels:
        link = _can_link(ch.channel, args.can_interface)
        if link in ("missing", "down"):
            rows.append((ch.label, False, f"CAN interface {link}; bring it up: sudo ip link set {ch.channel} up type "
                                          "can bitrate 1000000 (docs/hardware.md)"))
            continue
        bitrate = _can_bitrate(ch.channel) if args.can_interface == "socketcan" else None
        if bitrate is not None and bitrate != PIPER_BITRATE:
            rows.append((ch.label, False, f"CAN bitrate {bitrate}, a Piper needs {PIPER_BITRATE}: sudo ip link set "
                                          f"{ch.channel} down && sudo ip link set {ch.channel} up type can bitrate "
                                          f"{PIPER_BITRATE}"))
            continue
        try:
            ch.open()
            opened.append(ch)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            rows.append((ch.label, False, str(exc)))
    try:
        time.sleep(args.duration)   # frames per second over a full window
        now = time.time()
        for ch in opened:
            r = ch.read(now)
            fw = ch.query_firmware() or "no reply"
            detail = [f"link {_can_link(ch.channel, args.can_interface)}", f"{r['fps']:.0f} frames/s", f"firmware {fw}"]
            ok = not r["error"]
            if r["positions"] is not None:
                on = sum(r["motors_enabled"])
                detail.append(f"motors enabled {on}/6")
                detail.append(f"mode {P.CTRL_MODE_NAMES.get(r['ctrl_mode'], r['ctrl_mode'])}")
                detail.append(f"err_code 0x{r['err_code']:04X}")
                dims = list(ch.layout.joint_dims) + ([ch.layout.gripper_dim] if ch.layout.gripper_dim is not None else [])
                q = np.asarray(r["positions"])
                out = [emb.joint_names[d] for d, v in zip(dims, q)
                       if np.isfinite(v) and not emb.pos_lower[d] - 1e-3 <= v <= emb.pos_upper[d] + 1e-3]
                detail.append("joints " + " ".join(f"{np.degrees(v):.1f}" for v in q[:6]) + " deg")
                if out:
                    ok = False
                    detail.append(f"outside the limits: {out}")
            if r["error"]:
                detail.append(r["error"])
            rows.append((ch.label, ok, "; ".join(detail)))
    finally:
        for ch in opened:
            ch.close(disable=False)   # a check leaves the motors as they were
    if args.enable_test and all(ok for _, ok, _ in rows):
        rows += enable_test(emb, opts)
    return rows


class LoopDriver:
    """A ControlLoop ticking an arm backend without ROS (what controller_node does each tick):
    every command goes through the loop's follower and final safety filter."""

    def __init__(self, emb, arm, dt: float, feedback_timeout: float):
        from eva_core.control import ControlLoop

        self.arm = arm
        self.loop = ControlLoop(emb, dt, arm, feedback_timeout=feedback_timeout)
        self.errors: list[str] = []
        self.ages: list[float] = []   # feedback age when each command was sent (s)

    def tick(self) -> None:
        from eva_core.control import Kind

        state = self.arm.read_state()
        decision = self.loop.tick(state, time.time())
        if decision.kind is Kind.COMMAND:
            try:
                self.arm.send_positions(decision.positions)
                self.ages.append(time.time() - state.stamp)
            except Exception as exc:  # noqa: BLE001 - as controller_node: a latched fault, never sent
                self.errors.append(str(exc))
                self.loop.fail(f"send failed: {exc}", unsent=True)


def enable_test(emb, opts) -> list[tuple[str, bool, str]]:
    """Enable, move every joint 6 by +3 deg and back over 2 s through the control loop, disable."""
    import threading

    from eva_core.control import State
    from eva_core.trajectory import Trajectory
    from eva_ros.backends.piper import PiperArm
    from eva_ros.runtime import run_periodic

    arm = PiperArm(emb, opts)
    arm.connect()
    driver = LoopDriver(emb, arm, 0.005, arm.options.feedback_timeout)
    stop = threading.Event()
    thread = threading.Thread(target=run_periodic, args=(0.005, stop, driver.tick, 0.025), daemon=True)
    thread.start()
    try:
        ok, msg = driver.loop.enable()
        if not ok:
            return [("enable test", False, msg)]
        deadline = time.monotonic() + 5.0
        while driver.loop.state is not State.RUNNING and time.monotonic() < deadline:
            time.sleep(0.01)
        q0 = arm.read_state().positions.copy()
        wrists = [ch.layout.joint_dims[5] for ch in arm.channels]
        t = np.linspace(0.0, 2.0, 41)
        pts = np.repeat(q0[None], len(t), axis=0)
        pts[:, wrists] = np.clip(q0[wrists] + np.radians(3.0) * np.sin(np.pi * t / 2.0)[:, None],
                                 emb.pos_lower[wrists], emb.pos_upper[wrists])
        ok, msg = driver.loop.replace(Trajectory(time.time() + 0.05, t, pts))
        time.sleep(2.6)
        err = np.degrees(np.abs(arm.read_state().positions[wrists] - q0[wrists]))
        state = driver.loop.state
        ok = ok and state is State.RUNNING and bool(np.all(err < 0.5)) and not driver.errors
        detail = (f"enabled, moved joint 6 by 3 deg and back; final error {err.round(2).tolist()} deg; loop {state.value}"
                  + (f"; {driver.loop.reason}" if state is not State.RUNNING else ""))
        return [("enable test", ok, detail)]
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return [("enable test", False, str(exc))]
    finally:
        stop.set()
        thread.join(5)
        arm.close()


def check_cameras(args) -> list[tuple[str, bool, str]]:
    try:
        from eva_ros.backends.realsense import RealSenseSource, list_devices

        found = list_devices()
    except RuntimeError as exc:
        return [("cameras", False, str(exc))]
    serials = [d["serial"] for d in found]
    rows = [("cameras found", bool(found),
             ", ".join(f"{d['name']} {d['serial']} (USB {d['usb']}, fw {d['firmware']})" for d in found)
             or "no RealSense camera connected")]
    wanted = dict(c.split("=", 1) for c in args.cameras) if args.cameras else {d["serial"]: d["serial"] for d in found}
    for name, serial in wanted.items():
        if serial not in serials:
            rows.append((name, False, f"serial {serial} not connected; found {serials or 'none'}"))
            continue
        src = RealSenseSource(None, {"serial": serial, "name": name, "width": args.width, "height": args.height,
                                     "fps": args.fps})
        try:
            src.connect()
            t0, n = time.monotonic(), 0
            while time.monotonic() - t0 < args.duration:
                if src.read() is not None:
                    n += 1
            fps = n / (time.monotonic() - t0)
            ok = fps >= 0.8 * args.fps
            rows.append((name, ok, f"serial {serial}: color {args.width}x{args.height} rgb8 at {fps:.1f} fps measured "
                                   f"(asked {args.fps:g})" + ("" if ok else "; slow: a USB 2 port or cable?")))
        except Exception as exc:  # noqa: BLE001
            rows.append((name, False, f"serial {serial}: {exc}"))
        finally:
            src.close()
    return rows


def print_table(rows) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"{'item':<{w}}  status  details")
    for name, ok, detail in rows:
        print(f"{name:<{w}}  {'OK' if ok else 'FAIL':<6}  {detail}")


def run(argv) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--embodiment", default=DEFAULT_EMBODIMENT, help="embodiment name or YAML (the arms table)")
    ap.add_argument("--can-interface", default="socketcan", choices=("socketcan", "virtual"))
    ap.add_argument("--can-left", default="", help="CAN channel of the left arm (default: the arms table)")
    ap.add_argument("--can-right", default="", help="CAN channel of the right arm (default: the arms table)")
    ap.add_argument("--cameras", nargs="*", default=[], metavar="NAME=SERIAL",
                    help="cameras to open (default: every connected RealSense)")
    ap.add_argument("--no-cameras", action="store_true", help="skip the cameras")
    ap.add_argument("--no-arms", action="store_true", help="skip the arms")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=1.0, help="seconds to measure frame rates")
    ap.add_argument("--feedback-timeout", type=float, default=0.1,
                    help="joint feedback older than this is an error, s (the controller's default)")
    ap.add_argument("--enable-test", action="store_true",
                    help="also enable the arms and move joint 6 by 3 deg and back, slowly; then disable (support the arms)")
    add_debug_arg(ap)
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.feedback_timeout <= 0:
        raise UserError("--duration and --feedback-timeout must be > 0")
    for c in args.cameras:
        if "=" not in c:
            raise UserError(f"--cameras {c!r}: expected NAME=SERIAL")
    emb = load_embodiment(args.embodiment)
    rows = []
    if not args.no_arms:
        rows += check_arms(emb, args)
    if not args.no_cameras:
        rows += check_cameras(args)
    if not rows:
        raise UserError("nothing to check (--no-arms and --no-cameras)")
    print_table(rows)
    bad = [f"{name}: {detail}" for name, ok, detail in rows if not ok]
    for line in bad:
        print(f"{PROG}: {line}", file=sys.stderr)
    return 1 if bad else 0


def main(argv=None) -> int:
    return cli_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
