"""`eva-demo` (what `make demo` runs) closes the loop in simulation and leaves its artifacts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio


def test_demo_runs_the_closed_loop_in_simulation(tmp_path):
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    out = tmp_path / "demo"
    exe = Path(sys.executable).parent / "eva-demo"
    proc = subprocess.run([str(exe), "--duration", "8", "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    s = json.loads((out / "report.json").read_text())["summary"]
    assert s["chunks_planned"] > 0 and s["trajectories_executed"] > 0 and s["commands_sent"] > 0
    assert s["limit_violations"] == 0
    video = iio.imread(out / "rollout.mp4")
    assert video.ndim == 4 and video.shape[0] > 5 and video.std() > 5  # rendered frames, not blank
    for name in ("actions.png", "scores.png"):
        assert (out / name).stat().st_size > 10_000


def test_bad_inputs_fail_in_one_line_before_ros_starts(tmp_path, capsys):
    from eva_ros.demo import main

    assert main(["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eva-demo: ") and "missing.yaml" in err and "not found" in err
    (tmp_path / "a_file").write_text("x")
    assert main(["--out", str(tmp_path / "a_file" / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a_file is not a directory" in err
    assert not (tmp_path / "o").exists()


def test_trained_mode_bad_checkpoints_fail_in_one_line_before_ros_starts(tmp_path, capsys):
    """A checkpoint directory with a manifest but without the checkpoint folders is named, exit 2."""
    from eva_ros.demo import main

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "manifest.json").write_text('{"config": {}, "files": {}}')
    assert main(["--checkpoints", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eva-demo: ") and "missing checkpoint directory" in err
    (ckpt / "manifest.json").write_text("{not json")
    assert main(["--checkpoints", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: unreadable" in err
    assert main(["--checkpoints", str(ckpt), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
