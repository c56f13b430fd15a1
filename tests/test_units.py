"""SDK unit conversions: exact factor and round trips."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eva_core import units
from eva_core.embodiment import load_embodiment

pytestmark = pytest.mark.unit

STROKE = load_embodiment().arms[0].gripper_stroke_m  # Cobot Magic: 0.07 m


def test_exact_radian_factor():
    assert units.RAD_TO_MDEG == 1000 * 180 / math.pi
    assert units.rad_to_sdk_joint(math.pi / 2) == 90_000
    assert isinstance(units.rad_to_sdk_joint(1.0), int) and isinstance(units.sdk_joint_to_rad(1), float)
    assert units.rad_to_sdk_joint(-2.6179) == round(-2.6179 * 180_000 / math.pi)
    # piper_ros's 180/3.14 would be 0.05 % off: 90 deg -> 90 050
    assert abs(units.rad_to_sdk_joint(math.pi / 2) - round(math.pi / 2 * 180_000 / 3.14)) > 40


@given(st.floats(-3.2, 3.2))
def test_joint_roundtrip_within_half_count(rad):
    back = units.sdk_joint_to_rad(units.rad_to_sdk_joint(rad))
    assert abs(back - rad) <= 0.5 / units.RAD_TO_MDEG + 1e-15


@given(st.floats(0.0, 1.0))
def test_gripper_roundtrip(g):
    um = units.gripper_norm_to_sdk(g, STROKE)
    assert 0 <= um <= 70_000
    assert abs(units.gripper_sdk_to_norm(um, STROKE) - g) <= 0.5 / 70_000 + 1e-12
    assert abs(units.gripper_m_to_norm(units.gripper_norm_to_m(g, STROKE), STROKE) - g) < 1e-12


def test_gripper_units():
    assert units.gripper_norm_to_sdk(1.0, STROKE) == 70_000  # 0.07 m = 70 mm = 70 000 x 0.001 mm
    assert units.gripper_m_to_sdk(0.035) == 35_000
    assert units.gripper_stroke_to_finger_m(0.07) == 0.035


def test_arrays_vectorise():
    r = np.array([0.0, 1.0, -1.0])
    s = units.rad_to_sdk_joint(r)
    assert s.dtype == np.int64 and s.shape == (3,)
    np.testing.assert_allclose(units.sdk_joint_to_rad(s), r, atol=1e-5)


def test_the_stroke_comes_from_the_caller():
    import pytest

    with pytest.raises(TypeError):
        units.gripper_norm_to_sdk(1.0)  # no default robot stroke
    assert units.gripper_norm_to_sdk(1.0, 0.05) == 50_000
    assert STROKE == 0.07 and STROKE <= units.SDK_GRIPPER_RANGE_M
