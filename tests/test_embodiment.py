"""Embodiment: every limit of the piper_sdk table and EVA's reward read back from the URDF + YAML; errors name the file/key."""

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from eva_core.embodiment import EmbodimentError, load_embodiment

pytestmark = pytest.mark.unit

DEG = math.pi / 180
FIXTURE = Path(__file__).parent / "fixtures" / "single_piper" / "single_piper.yaml"


@pytest.fixture(scope="module")
def emb():
    return load_embodiment("cobot_magic")


def test_action_layout(emb):
    arm = [f"joint{i}" for i in range(1, 7)]
    assert emb.joint_names == tuple(
        [f"left_{j}" for j in arm] + ["left_gripper"] + [f"right_{j}" for j in arm] + ["right_gripper"]
    )
    assert emb.dof == 14 and emb.gripper_indices == (6, 13)
    assert emb.arm_indices == tuple(i for i in range(14) if i not in (6, 13))


def test_position_limits_match_piper_sdk_table(emb):
    from piper_sdk.piper_param.piper_param_manager import C_PiperParamManager

    table = C_PiperParamManager().GetPiperParamOrigin()["joint_limit"]
    for side in (0, 7):
        for j in range(6):
            lo, hi = table[f"j{j + 1}"]
            assert emb.pos_lower[side + j] == pytest.approx(lo, abs=1e-12)
            assert emb.pos_upper[side + j] == pytest.approx(hi, abs=1e-12)
    # the piper_sdk limits in degrees, to the table's precision (the SDK rounds to 3-5 digits)
    deg = [(-150, 150), (0, 180), (-170, 0), (-100, 100), (-70, 70), (-120, 120)]
    for j, (lo, hi) in enumerate(deg):
        assert emb.pos_lower[j] == pytest.approx(lo * DEG, abs=2e-3)
        assert emb.pos_upper[j] == pytest.approx(hi * DEG, abs=2e-3)
    assert np.all(emb.pos_lower[[6, 13]] == 0) and np.all(emb.pos_upper[[6, 13]] == 1)


def test_velocity_and_acceleration_limits_are_eva_reward_values(emb):
    speeds = np.array([180, 195, 180, 225, 225, 225]) * DEG
    np.testing.assert_allclose(speeds, [3.1416, 3.4034, 3.1416, 3.9270, 3.9270, 3.9270], atol=1e-4)
    expected = np.concatenate([speeds * 0.85, [2.0], speeds * 0.85, [2.0]])
    np.testing.assert_allclose(emb.vel_max, expected, rtol=1e-6)
    np.testing.assert_array_equal(emb.acc_max, [5.0] * 6 + [10.0] + [5.0] * 6 + [10.0])
    np.testing.assert_array_equal(emb.reward_weights, [1.0] * 6 + [0.2] + [1.0] * 6 + [0.2])


def test_urdf_velocity_is_vendor_max_speed(emb):
    for side in ("left", "right"):
        for j, deg_s in enumerate([180, 195, 180, 225, 225, 225]):
            assert emb.urdf_joints[f"{side}_joint{j + 1}"].velocity == pytest.approx(deg_s * DEG, abs=1e-6)
        g = emb.urdf_joints[f"{side}_gripper"]
        assert g.type == "prismatic" and g.lower == 0 and g.upper == pytest.approx(0.038)


def test_joint_state_conversion_roundtrip(emb):
    a = np.linspace(emb.pos_lower, emb.pos_upper, 7)
    q = emb.action_to_joint_positions(a)
    np.testing.assert_allclose(q[:, 6], a[:, 6] * 0.035)  # finger travel = stroke / 2
    np.testing.assert_allclose(q[:, :6], a[:, :6])
    np.testing.assert_allclose(emb.joint_positions_to_action(q), a)


def _write_variant(tmp_path: Path, mutate, urdf_edit=None) -> Path:
    src = Path(load_embodiment().config_file)
    doc = yaml.safe_load(src.read_text())
    mutate(doc["embodiment"])
    urdf = Path(load_embodiment().urdf_file)
    text = urdf.read_text()
    (tmp_path / urdf.name).write_text(urdf_edit(text) if urdf_edit else text)
    out = tmp_path / "robot.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def test_new_embodiment_needs_no_code(tmp_path):
    # a one-armed robot: only the left arm's dims, with its own acceleration limit
    def one_arm(e):
        e["name"] = "single_piper"
        e["action"] = e["action"][:7]
        e["arms"].pop("right")
        e["limits"]["joint_acceleration_max"] = 2.5

    emb = load_embodiment(_write_variant(tmp_path, one_arm))
    assert emb.name == "single_piper" and emb.dof == 7 and emb.gripper_indices == (6,)
    assert np.all(emb.acc_max[:6] == 2.5)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda e: e["action"].__setitem__(0, {"name": "left_joint9", "type": "joint"}), "left_joint9"),
        (lambda e: e["limits"].pop("velocity_safety_factor"), "velocity_safety_factor"),
        (lambda e: e["action"][6].__setitem__("stroke_max_m", 0.5), "stroke_max_m"),
        (lambda e: e["action"][1].__setitem__("type", "wheel"), "action[1]"),
        (lambda e: e["action"].append(dict(e["action"][0])), "duplicate"),
        (lambda e: e.__setitem__("reward", [1, 2]), "reward"),
        (lambda e: e.pop("arms"), "missing key 'arms'"),
        (lambda e: e["arms"]["right"].__setitem__("dims", [7, 8, 9]), "are on no arm"),
        (lambda e: e["arms"]["right"].__setitem__("dims", [6, 7, 8, 9, 10, 11, 12, 13]), "already on arm 'left'"),
        (lambda e: e["arms"]["right"].__setitem__("dims", [7, 9, 8, 10, 11, 12, 13]), "contiguous"),
        (lambda e: e["arms"]["right"].__setitem__("dims", [7, 8, 9, 10, 11, 12, 13, 14]), "indices must be in"),
        (lambda e: e["arms"]["left"].pop("can"), "arms.left: missing key 'can'"),
        # non-finite or unordered numbers in the YAML (issue 10)
        (lambda e: e["limits"].__setitem__("velocity_safety_factor", float("inf")), "velocity_safety_factor: must be finite"),
        (lambda e: e["limits"].__setitem__("velocity_safety_factor", float("nan")), "velocity_safety_factor: must be finite"),
        (lambda e: e["limits"].__setitem__("velocity_safety_factor", "nan"), "velocity_safety_factor: needs a number"),
        (lambda e: e["limits"].__setitem__("velocity_safety_factor", 0.0), "velocity_safety_factor: must be > 0"),
        (lambda e: e["limits"].__setitem__("gripper_velocity_max", float("inf")), "gripper_velocity_max: must be finite"),
        (lambda e: e["limits"].__setitem__("joint_acceleration_max", -1.0), "joint_acceleration_max: must be > 0"),
        (lambda e: e["limits"].__setitem__("gripper_acceleration_max", True), "gripper_acceleration_max: needs a number"),
        (lambda e: e["action"][6].__setitem__("stroke_max_m", float("nan")), "stroke_max_m: must be finite"),
        (lambda e: e["reward_weights"].__setitem__("joint", float("nan")), "reward_weights.joint: must be finite"),
    ],
)
def test_bad_config_names_key(tmp_path, mutate, needle):
    path = _write_variant(tmp_path, mutate)
    with pytest.raises(EmbodimentError) as ei:
        load_embodiment(path)
    assert needle in str(ei.value) and str(path) in str(ei.value)


def test_yaml_reward_section_overrides_the_reward_defaults(tmp_path):
    from eva_core.reward import RewardConfig

    reward = {"p0": 1000.0, "position_limit": True}
    emb = load_embodiment(_write_variant(tmp_path, lambda e: e.__setitem__("reward", reward)))
    cfg = RewardConfig.from_embodiment(emb)
    assert cfg.p0 == 1000.0 and cfg.position_limit
    assert RewardConfig.from_embodiment(emb, p0=5.0).p0 == 5.0  # keyword overrides beat the YAML
    assert RewardConfig.from_embodiment(load_embodiment()).p0 == 2000.0
    typo = load_embodiment(_write_variant(tmp_path, lambda e: e.__setitem__("reward", {"not_a_field": 1})))
    with pytest.raises(ValueError, match=r"robot\.yaml: embodiment\.reward: not_a_field: unknown key"):
        RewardConfig.from_embodiment(typo)


def test_missing_config_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_robot"):
        load_embodiment(tmp_path / "no_such_robot.yaml")


@pytest.mark.parametrize("old, new, needle", [
    ('lower="-2.6179" upper="2.6179" effort="100.0"', 'lower="nan" upper="2.6179" effort="100.0"',
     "joint 'left_joint1' <limit lower>: must be finite, got 'nan'"),
    ('lower="-2.6179" upper="2.6179" effort="100.0"', 'lower="-inf" upper="2.6179" effort="100.0"',
     "joint 'left_joint1' <limit lower>: must be finite, got '-inf'"),
    ('velocity="3.141593"', 'velocity="nan"', "<limit velocity>: must be finite, got 'nan'"),
    ('velocity="3.141593"', 'velocity="0"', "<limit velocity>: must be > 0"),
    ('lower="-2.6179" upper="2.6179" effort="100.0"', 'lower="2.6179" upper="-2.6179" effort="100.0"',
     "lower 2.6179 must be < upper -2.6179"),
    ('lower="-2.6179" upper="2.6179" effort="100.0"', 'lower="x" upper="2.6179" effort="100.0"',
     "<limit lower>: needs a number, got 'x'"),
])
def test_non_finite_or_unordered_urdf_limits_fail_loading(tmp_path, old, new, needle):
    path = _write_variant(tmp_path, lambda e: None, lambda text: text.replace(old, new, 1))
    with pytest.raises(EmbodimentError) as ei:
        load_embodiment(path)
    msg = str(ei.value)
    assert needle in msg and str(tmp_path / "cobot_magic.urdf") in msg and "\n" not in msg


def test_check_embodiment_cli_reports_a_nan_limit_in_one_line(tmp_path, capsys):
    from eva_core.embodiment_cli import main

    path = _write_variant(tmp_path, lambda e: e["limits"].__setitem__("velocity_safety_factor", float("inf")))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "velocity_safety_factor: must be finite" in err and str(path) in err


def test_arms_table_drives_the_layout(emb):
    assert [a.name for a in emb.arms] == ["left", "right"] and emb.action_dim == 14
    left, right = emb.arms
    assert left.slice == slice(0, 7) and right.slice == slice(7, 14)
    assert left.joint_dims == tuple(range(6)) and left.gripper_dim == 6 and right.gripper_dim == 13
    assert left.can == "can_left" and right.can == "can_right" and left.gripper_stroke_m == 0.07
    assert emb.gripper_dims == (6, 13) and emb.arm("right") is right
    a = np.arange(14.0)
    np.testing.assert_array_equal(a[emb.mirror_permutation], np.r_[a[7:], a[:7]])
    with pytest.raises(KeyError, match="no arm 'middle'"):
        emb.arm("middle")


def test_single_piper_fixture_is_7d_with_an_identity_mirror():
    emb = load_embodiment(FIXTURE)
    assert emb.name == "single_piper" and emb.dof == emb.action_dim == 7
    assert [a.name for a in emb.arms] == ["left"] and emb.gripper_dims == (6,)
    np.testing.assert_array_equal(emb.mirror_permutation, np.arange(7))
    np.testing.assert_allclose(emb.pos_lower, load_embodiment().pos_lower[:7])


def test_limit_violations_names_out_of_range_and_non_finite_dims(emb):
    mid = (emb.pos_lower + emb.pos_upper) / 2
    assert emb.limit_violations(mid) == [] and emb.limit_violations(emb.pos_upper) == []
    q = mid.copy()
    q[2], q[13], q[8] = emb.pos_upper[2] + 1e-6, np.nan, -np.inf
    assert emb.limit_violations(q) == ["left_joint3", "right_joint2", "right_gripper"]
    with pytest.raises(ValueError, match="expected 14 values"):
        emb.limit_violations(mid[:7])


def test_loaded_once_per_file_and_reloaded_when_it_changes(tmp_path):
    assert load_embodiment() is load_embodiment("cobot_magic") is load_embodiment(load_embodiment().config_file)
    path = _write_variant(tmp_path, lambda e: None)
    first = load_embodiment(path)
    assert load_embodiment(str(path)) is first
    path.write_text(path.read_text().replace("joint_acceleration_max: 5.0", "joint_acceleration_max: 4.0"))
    assert load_embodiment(path).acc_max[0] == 4.0


def test_limit_arrays_are_read_only(emb):
    for a in (emb.pos_lower, emb.pos_upper, emb.vel_max, emb.acc_max, emb.is_gripper, emb.mirror_permutation):
        with pytest.raises(ValueError):
            a[0] = 0
