"""record.launch.py's `ros2 bag record` command and eva-record's command line, from config/record.yaml."""

import subprocess
from pathlib import Path

import pytest
import yaml

from eva_ros.testing import BIN, REPO

from eva_ros.bag_recorder import RecordConfig, load_qos_overrides, ros2_bag_command

pytestmark = pytest.mark.ros

FILES = [REPO / "config" / "base.yaml", REPO / "config" / "record.yaml"]


def test_ros2_bag_command_takes_preset_split_qos_and_topics_from_the_config():
    cmd = ros2_bag_command(FILES, "bags/ep1")
    section = yaml.safe_load(FILES[1].read_text())["eva_record"]["ros__parameters"]
    assert cmd[:3] == ["ros2", "bag", "record"]
    opt = dict(zip(cmd[3:-len(section["topics"])][::2], cmd[3:-len(section["topics"])][1::2]))
    assert opt["-s"] == "mcap" and opt["-o"] == "bags/ep1"
    assert opt["--storage-preset-profile"] == section["storage_preset"]
    assert float(opt["-d"]) >= section["segment_seconds"]
    assert Path(opt["--qos-profile-overrides-path"]).exists()
    assert cmd[-len(section["topics"]):] == section["topics"]
    assert "leader/joint_states" in section["topics"] and "joint_states" in section["topics"]


def test_qos_overrides_file_is_ros2_bag_format_and_checked(tmp_path):
    q = load_qos_overrides("record/qos_overrides.yaml")
    assert q["/eva/instruction"].depth == 1
    bad = tmp_path / "q.yaml"
    bad.write_text("/x: {reliability: sometimes}\n")
    with pytest.raises(ValueError, match="reliability"):
        RecordConfig.from_dict({"qos_overrides_file": str(bad)}, source="t.yaml", section="eva_record")


def test_eva_record_help_and_one_line_config_error(tmp_path):
    out = subprocess.run([str(BIN / "eva-record"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "start_episode" in out.stdout
    params = tmp_path / "p.yaml"
    params.write_text("eva_record:\n  ros__parameters:\n    segment_secnds: 1.0\n")
    out = subprocess.run([str(BIN / "eva-record"), "--ros-args", "--params-file", str(params)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()[-1]
    assert "segment_secnds" in err and "segment_seconds" in err, out.stderr
