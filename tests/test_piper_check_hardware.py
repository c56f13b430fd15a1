"""eva-check-hardware against the CAN emulator (same process, python-can virtual)."""

from __future__ import annotations

import itertools

import pytest

from eva_core.embodiment import load_embodiment
from eva_core.sim.piper_emulator import PiperEmulator
from eva_ros import hardware_check

pytestmark = pytest.mark.unit

_ids = itertools.count()


@pytest.fixture
def emulated(capsys):
    emb = load_embodiment("cobot_magic")
    n = next(_ids)
    ch = {"left": f"hw{n}_left", "right": f"hw{n}_right"}
    emu = PiperEmulator(emb, ch).start()
    args = ["--can-interface", "virtual", "--can-left", ch["left"], "--can-right", ch["right"],
            "--no-cameras", "--duration", "0.5", "--feedback-timeout", "0.5"]   # generous on a loaded machine
    yield emu, args
    emu.stop()


def test_prints_the_table_and_passes_when_both_arms_report(emulated, capsys):
    emu, args = emulated
    assert hardware_check.main(args) == 0
    out = capsys.readouterr().out
    assert "item" in out and "status" in out
    for arm in ("left arm", "right arm"):
        line = next(l for l in out.splitlines() if l.startswith(arm))
        assert " OK " in line and "firmware S-V1.6-3" in line and "motors enabled 0/6" in line
    # a check never enables or moves an arm
    assert not any(a.commands.get(0x471) or a.commands.get(0x155) for a in emu.arms.values())


def test_exits_non_zero_naming_the_silent_arm(emulated, capsys):
    emu, args = emulated
    emu.silence("right")
    assert hardware_check.main(args) == 1
    cap = capsys.readouterr()
    assert "FAIL" in next(l for l in cap.out.splitlines() if l.startswith("right arm"))
    assert " OK " in next(l for l in cap.out.splitlines() if l.startswith("left arm"))
    assert "eva-check-hardware: right arm" in cap.err and "no CAN frames" in cap.err


def test_error_code_is_named(emulated, capsys):
    emu, args = emulated
    emu.set_error("left", err_code=1 << 1)
    assert hardware_check.main(args) == 1
    assert "joint 2 communication error" in capsys.readouterr().err


def test_enable_test_moves_the_wrists_a_little_and_back(emulated, capsys):
    emu, args = emulated
    q0 = emu.positions()
    assert hardware_check.main(args + ["--enable-test"]) == 0
    assert "enable test" in capsys.readouterr().out
    assert abs(emu.positions() - q0).max() < 0.01


def test_missing_cameras_fail_and_bad_args_are_one_line(capsys):
    assert hardware_check.main(["--no-arms", "--cameras", "cam_high=000000000000", "--duration", "0.1"]) == 1
    assert "cam_high: serial 000000000000 not connected" in capsys.readouterr().err
    assert hardware_check.main(["--no-arms", "--cameras", "cam_high"]) == 2
    assert capsys.readouterr().err.strip() == "eva-check-hardware: --cameras 'cam_high': expected NAME=SERIAL"


def test_a_missing_can_interface_fails_naming_it(capsys):
    argv = ["--can-left", "nocan_l", "--can-right", "nocan_r", "--no-cameras", "--duration", "0.1"]
    assert hardware_check.main(argv) == 1
    err = capsys.readouterr().err
    assert "left arm (nocan_l): CAN interface missing" in err and "right arm (nocan_r)" in err
