"""Test tiers (pytest markers registered in pytest.ini): every test declares one."""

from __future__ import annotations

TIERS = ("unit", "ros", "e2e")   # unit: no DDS, no subprocess; ros: DDS or child processes; e2e: a whole tool


def untiered(items) -> list[str]:
    """The modules (sorted names) of the collected pytest `items` that carry no tier marker."""
    return sorted({item.module.__name__ for item in items
                   if getattr(item, "module", None) is not None and not any(item.get_closest_marker(t) for t in TIERS)})
