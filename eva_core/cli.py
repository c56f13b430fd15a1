"""One error style for every eva-* command line tool.

`cli_main(prog, fn, argv)` runs `fn(argv)`. A known error (a `ValueError` such as a config or
embodiment error, an `OSError`, a `KeyError`, or a `UserError`) prints ONE line
`"<prog>: <message>"` to stderr and returns 2. `--debug` anywhere in argv, or `EVA_DEBUG=1`,
shows the traceback instead. Anything else is a bug and keeps its traceback.

Outputs are never destroyed by surprise: `check_writable` fails before long work starts,
`replace_dir_atomically` refuses an existing directory without `--overwrite` and, with it,
swaps the new directory in only once it is complete. `prepare_output_dir` is the one rule of the
training and data CLIs: a non-empty output needs --resume or --overwrite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence


class UserError(Exception):
    """A mistake the user can fix (bad input file, existing output, ...): one line, exit 2."""


class OutputExistsError(UserError, FileExistsError):
    """An output that a CLI would replace without being told to (--resume or --overwrite)."""


KNOWN_ERRORS = (UserError, ValueError, OSError, KeyError)


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line (a KeyError without its repr quotes)."""
    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(msg.split())
    return msg or type(exc).__name__


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("EVA_DEBUG", "") not in ("", "0")


def add_debug_arg(ap: argparse.ArgumentParser) -> None:
    """List `--debug` in --help (cli_main consumes it before `fn` parses argv)."""
    ap.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def cli_main(prog: str, fn: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `fn(argv)` with the one-line error style; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        rc = fn(argv)
    except KNOWN_ERRORS as e:
        if debug:
            raise
        print(f"{prog}: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def add_overwrite_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--overwrite", action="store_true",
                    help="replace an existing output (only after the new one is complete)")


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | os.PathLike, *, kind: str = "file") -> Path:
    """Raise `UserError` now if `path` (a "file" or a "dir" to be written) cannot be written.

    It creates and removes a probe file in the directory that will hold the output (os.access
    is not enough: it ignores read-only mounts and says yes to root). Returns `path` as a Path.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"check_writable: kind must be 'file' or 'dir', got {kind!r}")
    p = Path(path).expanduser()
    if p.exists():
        if kind == "file" and p.is_dir():
            raise UserError(f"{p}: is a directory, expected a file path")
        if kind == "dir" and not p.is_dir():
            raise UserError(f"{p}: exists and is not a directory")
    # the output (or its temp sibling, for atomic writes) is created in `holder`
    holder = p.parent if (kind == "file" or p.exists()) else p
    base = _nearest_existing(holder)
    if not base.is_dir():
        raise UserError(f"{p}: cannot be written: {base} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".eva-write-probe.", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{p}: cannot be written ({base}: {e.strerror or e})") from e
    return p


def check_new_dir(final_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse early an output directory that exists (unless `overwrite`) or is a file."""
    final = Path(final_dir)
    if final.exists() or final.is_symlink():
        if not final.is_dir():
            raise UserError(f"{final}: exists and is not a directory; refusing to replace it")
        if not overwrite:
            raise UserError(f"{final}: already exists; pass --overwrite to replace it")
    check_writable(final, kind="dir")
    return final


def replace_dir_atomically(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Move the complete `tmp_dir` (a sibling of `final_dir`) to `final_dir`.

    An existing `final_dir` is refused unless `overwrite`; a file there is always refused.
    With `overwrite` the old directory is renamed aside, the new one renamed in, and only then
    the old one deleted; if the swap fails the old one is put back.
    """
    tmp, final = Path(tmp_dir), Path(final_dir)
    if not tmp.is_dir():
        raise UserError(f"{tmp}: the new output directory does not exist")
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return final
    check_new_dir(final, overwrite)
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
    old.rmdir()
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


class OutputDir:
    """Where a CLI writes its output: `final` (the directory the user named) or, with --overwrite,
    `path`, a sibling `.NAME.overwrite` built first and renamed over `final` by `commit()` once
    complete (the old output stays intact if the new one fails). The sibling's name is fixed so
    every process of one `accelerate launch` writes to the same place."""

    def __init__(self, final: Path, path: Path):
        self.final, self.path = final, path

    def final_path(self, p: str | os.PathLike) -> Path:
        """`p` (under `path`) where it will live after `commit()`: for paths recorded in outputs."""
        p = Path(p).resolve()
        try:
            return self.final.resolve() / p.relative_to(self.path.resolve())
        except ValueError:
            return p

    def commit(self) -> Path:
        """Swap the new output in (only one process may call it); a no-op without --overwrite."""
        if self.path != self.final:
            os.chmod(self.path, 0o777 & ~_umask())  # mkdtemp-like modes: as mkdir would have made it
            replace_dir_atomically(self.path, self.final, overwrite=True)
        return self.final

    def discard(self) -> None:
        """Remove a staged output that failed (the old one, if any, was never touched)."""
        if self.path != self.final:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        self.commit() if exc_type is None else self.discard()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def overwrite_sibling(final: Path) -> Path:
    return final.parent / f".{final.name}.overwrite"


def prepare_output_dir(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                       flag: str = "--out", resumable: bool = True, staged: bool = False) -> OutputDir:
    """The one output-directory rule of every training and data CLI, checked before any work.

    An absent or empty directory is used as it is. An existing non-empty one is refused unless
    `resume` (continue the run in it) or `overwrite` (build the new output in a sibling, swapped in
    by `OutputDir.commit()` once complete). `staged`: always build in that sibling, so the output
    appears only when complete (data CLIs: `with prepare_output_dir(...) as tmp:`)."""
    final = Path(out).expanduser()
    if resume and overwrite:
        raise UserError(f"{flag} {final}: --resume and --overwrite exclude each other")
    if final.exists() and not final.is_dir():
        raise UserError(f"{flag} {final}: exists and is not a directory")
    used = final.is_dir() and any(final.iterdir())
    if used and not (resume or overwrite):
        hint = "pass --resume to continue that run or --overwrite to replace it" if resumable else \
            "pass --overwrite to replace it"
        raise OutputExistsError(f"{flag} {final}: not empty; {hint}")
    work = overwrite_sibling(final) if (used and overwrite) or staged else final
    if work != final and (work.exists() or work.is_symlink()):  # left by a failed --overwrite
        shutil.rmtree(work) if work.is_dir() and not work.is_symlink() else work.unlink()
    check_writable(work, kind="dir")
    work.mkdir(parents=True, exist_ok=True)
    return OutputDir(final, work)
