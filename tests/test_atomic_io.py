"""Atomic writes: nothing half-written on failure, normal file modes on success."""

import os

import pytest

from eva_core.atomic_io import atomic_dir, atomic_path, write_json

pytestmark = pytest.mark.unit


def test_failure_leaves_destination_untouched(tmp_path):
    dest = tmp_path / "report.json"
    write_json(dest, {"ok": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert dest.read_text().strip().startswith("{") and '"ok": 1' in dest.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temp file left


def test_modes_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        with atomic_dir(tmp_path / "ckpt") as d:
            (d / "x").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755


def test_atomic_dir_replaces_whole(tmp_path):
    dest = tmp_path / "out"
    with atomic_dir(dest) as d:
        (d / "old.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(dest) as d:
            (d / "new.txt").write_text("2")
            raise ValueError("boom")
    assert sorted(p.name for p in dest.iterdir()) == ["old.txt"]
    with atomic_dir(dest) as d:
        (d / "new.txt").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]


def test_atomic_dir_without_overwrite_refuses_an_existing_dir_and_a_file(tmp_path):
    from eva_core.cli import UserError

    dest = tmp_path / "out"
    with atomic_dir(dest, overwrite=False) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(UserError, match="--overwrite"):
        with atomic_dir(dest, overwrite=False) as d:
            pytest.fail("the block must not run")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        with atomic_dir(f) as d:
            pytest.fail("the block must not run")
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]
