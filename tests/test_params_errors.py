"""A bad params file stops every node main and eva-bringup at start-up: exit non-zero, one line
naming the file, the section and the key (never a traceback, never a silent default)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from eva_core.config import ConfigError
from eva_ros.params import check_bringup, check_params_files, load_params_yaml, params_layers
from eva_ros.testing import BIN, REPO, ros_env, unique_domain_id

pytestmark = pytest.mark.ros

# node main -> (section, a misspelled key, a float key, a rate key: (key, the check))
NODES = {
    "eva-camera-node": ("camera", "connect_timout", "fps", "fps"),
    "eva-planner-node": ("planner", "max_obs_ag", "max_obs_age", "check_period"),   # a period: no rate
    "eva-idm-action-node": ("idm_action", "reward_treshold", "max_state_age", "control_rate_hz"),
    "eva-controller-node": ("controller", "feedback_timout", "feedback_timeout", "control_rate_hz"),
}
CASES = {   # name -> (key index in NODES' tuple, value, expected problem)
    "misspelled": (1, 0.05, "unknown key; did you mean"),
    "string_for_float": (2, "fast", "expected float, got str 'fast'"),
    "negative_rate": (3, -10.0, "must be > 0, got -10.0"),
    "zero_rate": (3, 0, "must be > 0, got 0.0"),
}
MALFORMED = {"empty": "", "scalar": "42\n", "list": "- camera\n- controller\n",
             "no_ros__parameters": "controller:\n  control_rate_hz: 200.0\n",
             "invalid_yaml": "controller: {ros__parameters: [\n"}


def write(tmp_path, name: str, data) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def run(cmd, timeout=120):
    out = subprocess.run(cmd, env=ros_env(unique_domain_id()), capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


def the_error_line(prog: str, text: str) -> str:
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith(f"{prog}: ")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("exe", sorted(NODES))
def test_node_main_rejects_a_bad_params_file(tmp_path, exe, case):
    section, *keys = NODES[exe]
    index, value, problem = CASES[case]
    key = keys[index - 1]
    bad = write(tmp_path, f"{section}_{case}", {section: {"ros__parameters": {key: value}}})
    rc, text = run([str(BIN / exe), "--ros-args", "--params-file", bad])
    assert rc == 2, text
    line = the_error_line(exe, text)
    assert line.startswith(f"{exe}: {bad}: {section}: {key}: "), line
    assert problem in line, line


def test_node_error_names_the_overlay_not_the_base(tmp_path):
    """base.yaml + an overlay with the typo: the message names the overlay that set the key."""
    bad = write(tmp_path, "overlay", {"controller": {"ros__parameters": {"follower": {"blend_tim": 0.1}}}})
    rc, text = run([str(BIN / "eva-controller-node"), "--ros-args", "--params-file",
                    str(REPO / "config" / "base.yaml"), "--params-file", bad])
    assert rc == 2
    line = the_error_line("eva-controller-node", text)
    assert line == (f"eva-controller-node: {bad}: controller.follower: blend_tim: unknown key; "
                    "did you mean 'blend_time'?"), line


def test_a_command_line_override_wins_and_is_checked():
    """`-p` beats the params files (base.yaml sets 200.0) and a bad value names its origin."""
    rc, text = run([str(BIN / "eva-controller-node"), "--ros-args", "--params-file", str(REPO / "config" / "base.yaml"),
                    "--params-file", str(REPO / "config" / "loopback.yaml"), "-p", "control_rate_hz:=-1.0"])
    assert rc == 2
    assert the_error_line("eva-controller-node", text) == \
        "eva-controller-node: parameters (-p): controller: control_rate_hz: must be > 0, got -1.0"


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_node_main_rejects_a_malformed_params_file(tmp_path, case):
    bad = write(tmp_path, case, MALFORMED[case])
    rc, text = run([str(BIN / "eva-controller-node"), "--ros-args", "--params-file", bad])
    assert rc == 2, text
    assert the_error_line("eva-controller-node", text).startswith(f"eva-controller-node: {bad}: ")


def overlay(tmp_path, name: str, section: str, params: dict) -> str:
    return write(tmp_path, name, {section: {"ros__parameters": params}})


BRINGUP_CASES = {   # name -> (section, params, expected "<section>: <key>: <problem>")
    "misspelled": ("controller", {"feedback_timout": 0.05},
                   "controller: feedback_timout: unknown key; did you mean 'feedback_timeout'?"),
    "string_for_float": ("camera", {"fps": "fast"}, "camera: fps: expected float, got str 'fast'"),
    "negative_rate": ("controller", {"control_rate_hz": -200.0}, "controller: control_rate_hz: must be > 0, got -200.0"),
    "zero_rate": ("idm_action", {"control_rate_hz": 0}, "idm_action: control_rate_hz: must be > 0, got 0.0"),
    "bringup_key": ("eva_bringup", {"num_thread": 2}, "eva_bringup: num_thread: unknown key; did you mean 'num_threads'?"),
    "nested": ("idm_action", {"safety": {"velocity_scale": 2.0}}, "idm_action.safety: velocity_scale: must be <= 1, got 2.0"),
    "backend_option": ("controller", {"arm": {"initial_position": [0.0]}},
                       "controller.arm: initial_position: unknown key; did you mean 'initial_positions'?"),
}


@pytest.mark.parametrize("case", sorted(BRINGUP_CASES))
def test_bringup_rejects_a_bad_params_file_before_starting(tmp_path, case):
    section, params, expected = BRINGUP_CASES[case]
    bad = overlay(tmp_path, case, section, params)
    rc, text = run([str(BIN / "eva-bringup"), "--quiet", "--config", "loopback", "--config", bad, "--duration", "1"])
    assert rc == 2, text
    assert the_error_line("eva-bringup", text) == f"eva-bringup: {bad}: {expected}"


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_bringup_rejects_a_malformed_params_file(tmp_path, case):
    bad = write(tmp_path, case, MALFORMED[case])
    rc, text = run([str(BIN / "eva-bringup"), "--quiet", "--config", bad, "--duration", "1"])
    assert rc == 2, text
    assert the_error_line("eva-bringup", text).startswith(f"eva-bringup: {bad}: ")


# -- the same checks without processes ------------------------------------------------------------
@pytest.mark.parametrize("case, problem", [
    ("empty", "empty params file"), ("scalar", "expected a mapping of node sections, got a int"),
    ("list", "expected a mapping of node sections, got a list"),
    ("no_ros__parameters", "controller: expected exactly one key 'ros__parameters'"),
    ("invalid_yaml", "invalid YAML"),
])
def test_malformed_files_are_one_line_errors(tmp_path, case, problem):
    bad = write(tmp_path, case, MALFORMED[case])
    with pytest.raises(ConfigError) as info:
        load_params_yaml(bad)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{bad}: ") and problem in text, text
    with pytest.raises(ConfigError):
        load_params_yaml(tmp_path / "missing.yaml")


def test_a_misspelled_section_is_reported(tmp_path):
    bad = overlay(tmp_path, "typo", "controler", {"control_rate_hz": 100.0})
    with pytest.raises(ConfigError, match=r": controler: no node has this name; did you mean 'controller'\?"):
        check_params_files(params_layers(bad))


def test_wildcard_keys_reach_every_node_and_are_checked(tmp_path):
    bad = overlay(tmp_path, "wild", "/**", {"embodimnt": "cobot_magic"})
    with pytest.raises(ConfigError, match=r"embodimnt: unknown key; did you mean 'embodiment'"):
        check_params_files(params_layers(bad))


def test_layering_later_files_win_key_by_key(tmp_path):
    extra = overlay(tmp_path, "extra", "controller", {"follower": {"blend_time": 0.05}, "control_rate_hz": 100})
    _bringup, nodes = check_bringup(params_layers(["loopback", extra]))
    ctl = nodes["controller"]
    assert ctl.control_rate_hz == 100.0 and ctl.follower.blend_time == 0.05
    assert ctl.follower.velocity_scale == 0.9          # from base.yaml, untouched by the overlay
    assert ctl.arm_backend == "loopback"               # from loopback.yaml
    assert nodes["camera"].source_options["loop"] is True
