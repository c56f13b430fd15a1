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


def test_prepare_output_dir_refuses_a_used_output_in_one_line_naming_both_flags(tmp_path):
    from eva_core.cli import prepare_output_dir

    out = tmp_path / "run"
    assert prepare_output_dir(out).path == out and out.is_dir()  # absent: created
    assert prepare_output_dir(out).path == out  # empty: used as it is
    (out / "eval.json").write_text("{}")
    with pytest.raises(UserError) as e:
        prepare_output_dir(out, flag="--out")
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and str(out) in msg and "--resume" in msg and "--overwrite" in msg
    with pytest.raises(UserError, match="pass --overwrite to replace it") as e:
        prepare_output_dir(out, resumable=False)
    assert "--resume" not in str(e.value)  # a data CLI has no --resume
    with pytest.raises(UserError, match="exclude each other"):
        prepare_output_dir(out, resume=True, overwrite=True)
    assert prepare_output_dir(out, resume=True).path == out
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a directory"):
        prepare_output_dir(tmp_path / "a_file", overwrite=True)
    assert (out / "eval.json").read_text() == "{}"


def test_overwrite_builds_beside_and_swaps_in_only_a_complete_output(tmp_path):
    from eva_core.cli import prepare_output_dir

    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with prepare_output_dir(out, overwrite=True) as tmp:
            assert tmp != out and tmp.parent == out.parent
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("the new run failed")
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and (out / "old.txt").read_text() == "old"
    run = prepare_output_dir(out, overwrite=True)
    (run.path / "new.txt").write_text("new")
    assert (out / "old.txt").exists()  # untouched until the commit
    assert run.final_path(run.path / "final" / "x") == out.resolve() / "final" / "x"
    run.commit()
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["run"]
    # staged: the output appears only once complete, also where none existed
    with prepare_output_dir(tmp_path / "data", resumable=False, staged=True) as tmp:
        assert not (tmp_path / "data").exists()
        (tmp / "ep.hdf5").write_text("x")
    assert (tmp_path / "data" / "ep.hdf5").is_file()


def test_training_ranks_other_than_0_neither_check_nor_create(tmp_path, monkeypatch):
    from training.common import prepare_output_dir

    out = tmp_path / "run"
    out.mkdir()
    (out / "x").write_text("x")
    monkeypatch.setenv("RANK", "1")
    assert prepare_output_dir(out).path == out  # rank 0 checked it; this one only joins
    assert prepare_output_dir(out, overwrite=True).path == tmp_path / ".run.overwrite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="not empty"):
        prepare_output_dir(out)
