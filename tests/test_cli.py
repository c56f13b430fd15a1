"""eva_core.cli: one-line errors with exit 2, --debug tracebacks, early writability checks and
output directories that are never destroyed by surprise."""

import os
import sys

import pytest

from eva_core.cli import (UserError, check_new_dir, check_writable, cli_main, replace_dir_atomically)

pytestmark = pytest.mark.unit


def _raiser(exc):
    def fn(argv):
        raise exc
    return fn


@pytest.mark.parametrize("exc, line", [
    (UserError("data/x.hdf5: no frames"), "tool: data/x.hdf5: no frames\n"),
    (ValueError("cfg.yaml: controller: rate: must be > 0"), "tool: cfg.yaml: controller: rate: must be > 0\n"),
    (FileNotFoundError(2, "No such file or directory", "missing.yaml"),
     "tool: [Errno 2] No such file or directory: 'missing.yaml'\n"),
    (KeyError("model.safetensors: missing key 'w'"), "tool: model.safetensors: missing key 'w'\n"),
    (ValueError("two\nlines"), "tool: two lines\n"),
])
def test_known_errors_are_one_line_and_exit_2(capsys, exc, line):
    assert cli_main("tool", _raiser(exc), []) == 2
    assert capsys.readouterr().err == line


def test_debug_shows_the_traceback_and_is_not_passed_on(monkeypatch):
    seen = []
    assert cli_main("tool", lambda argv: seen.append(argv), ["a", "--debug", "b"]) == 0
    assert seen == [["a", "b"]]
    with pytest.raises(UserError):
        cli_main("tool", _raiser(UserError("x")), ["--debug"])
    monkeypatch.setenv("EVA_DEBUG", "1")
    with pytest.raises(ValueError):
        cli_main("tool", _raiser(ValueError("x")), [])


def test_a_bug_keeps_its_traceback_and_return_codes_pass_through():
    with pytest.raises(ZeroDivisionError):
        cli_main("tool", lambda argv: 1 / 0, [])
    assert cli_main("tool", lambda argv: 3, []) == 3


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "deeper" / "report.json") == tmp_path / "new" / "deeper" / "report.json"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="a_file is not a directory"):
        check_writable(blocker / "report.json")
    with pytest.raises(UserError, match="is a directory"):
        check_writable(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        check_writable(blocker, kind="dir")
    with pytest.raises(UserError, match="cannot be written"):
        check_writable("/proc/eva_report.json")  # a read-only file system, even for root


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 directory")
def test_check_writable_read_only_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match="cannot be written"):
            check_writable(ro / "report.json")
    finally:
        ro.chmod(0o755)


def test_replace_dir_refuses_then_swaps_whole(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "precious.txt").write_text("keep")
    new = tmp_path / ".out.new"
    new.mkdir()
    (new / "fresh.txt").write_text("new")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        replace_dir_atomically(new, final, overwrite=False)
    assert (final / "precious.txt").read_text() == "keep" and new.is_dir()
    replace_dir_atomically(new, final, overwrite=True)
    assert sorted(p.name for p in final.iterdir()) == ["fresh.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no leftovers


def test_a_file_is_never_replaced_by_a_directory(tmp_path):
    f = tmp_path / "out"
    f.write_text("user data")
    new = tmp_path / "new"
    new.mkdir()
    for ow in (False, True):
        with pytest.raises(UserError, match="not a directory"):
            replace_dir_atomically(new, f, overwrite=ow)
        with pytest.raises(UserError, match="not a directory"):
            check_new_dir(f, ow)
    assert f.read_text() == "user data"
