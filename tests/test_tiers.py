"""Every test module declares its tier; the conftest check names the modules that do not."""

from types import SimpleNamespace

import pytest

from eva_ros.testing.tiers import TIERS, untiered

pytestmark = pytest.mark.unit


def _item(module: str, *marks: str):
    return SimpleNamespace(module=SimpleNamespace(__name__=module),
                           get_closest_marker=lambda name: name if name in marks else None)


def test_modules_without_a_tier_are_named_once():
    items = [_item("test_a", "unit"), _item("test_b", "slow"), _item("test_b", "slow", "timeout"),
             _item("test_c", "ros", "slow"), _item("test_d", "e2e"), _item("test_e")]
    assert untiered(items) == ["test_b", "test_e"]
    assert untiered([_item("test_a", t) for t in TIERS]) == []


def test_the_tiers_are_registered(pytestconfig):
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert set(TIERS) | {"slow"} <= registered
    assert "--strict-markers" in pytestconfig.getini("addopts")
