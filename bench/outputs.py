"""Where bench may write a file: the one rule every output path passes (``report --out``,
``history --out``, the ``--index`` of ``query`` and ``report --where``), the one atomic write, and
the one way to print to a reader that may have gone away (``bench compare ... | head``).

An output path is refused with one line (BadInput, exit 2) and nothing written when it is:

- empty, or a name the system cannot hold: a component over NAME_MAX bytes or a path over
  PATH_MAX (the limits of the file system it would be on, as ``os.pathconf`` says);
- an existing thing that is not a regular file: a symlink (never followed: it may point at a run's
  records or at /dev/full), a directory, a FIFO, a device or a socket;
- one of a run directory's own files: ``records.jsonl``, a writer's shard ``records.*.jsonl``,
  ``invocations.jsonl``, ``env.json``, ``slurm_plan.json``, or anything under a run directory's
  ``claims/`` or ``traces/`` (measured data is never replaced by a report);
- an existing file that is not the caller's to rewrite: a report never replaces a DuckDB database
  (an index, bench's or another's), and an index is rewritten only when it carries bench's marker
  (the caller passes ``ours``), since rebuilding one drops its tables;
- in a directory that does not exist and cannot be made, or does not take new files.

The write itself goes to a temporary file in the same directory and is renamed over the target
(``os.replace``), after the target is checked again: a full disk, a quota or a kill leaves the old
file (or none), never a truncated one, and no temporary file behind.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable

from bench.errors import BadInput
from bench.record import ENV, INVOCATIONS, RECORDS, is_run_dir
from bench.sanitize import visible

# A run directory's own files (bench.record, bench.commands.slurm's plan) and folders (claims of
# cells being measured, profiler traces): no output of bench lands on them.
RUN_DIR_FILES = (RECORDS, "records.*.jsonl", INVOCATIONS, ENV, "slurm_plan.json")
RUN_DIR_FOLDERS = ("claims", "traces")
DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
SHOWN_CHARS = 120  # an over-long path is shown cut to this many characters

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink", stat.S_IFIFO: "a FIFO",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def shown(path: str | os.PathLike) -> str:
    """A path inside a one-line message: control characters escaped, cut to SHOWN_CHARS."""
    text = visible(str(path), one_line=True)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 12] + "..." + text[-9:]


def _limits(path: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the file system the nearest existing ancestor of ``path`` is on."""
    probe = path.parent
    while True:
        try:
            return os.pathconf(probe, "PC_NAME_MAX"), os.pathconf(probe, "PC_PATH_MAX")
        except (OSError, ValueError):
            if probe == probe.parent:
                return 255, 4096  # Linux's
            probe = probe.parent


def _check_length(path: Path, flag: str) -> None:
    absolute = Path(os.path.abspath(path))
    name_max, path_max = _limits(absolute)
    too_long = [p for p in absolute.parts if len(os.fsencode(p)) > name_max]
    if too_long:
        raise BadInput(f"{flag} {shown(path)}: a name of {len(os.fsencode(too_long[0]))} bytes in it; "
                       f"a file or folder name may have at most {name_max} here")
    if len(os.fsencode(absolute)) >= path_max:
        raise BadInput(f"{flag} {shown(path)}: the path is {len(os.fsencode(absolute))} bytes; "
                       f"at most {path_max - 1} here")


def _run_dir_part(target: Path) -> str | None:
    """What of a run directory ``target`` would replace, or None."""
    if any(fnmatch.fnmatchcase(target.name, pattern) for pattern in RUN_DIR_FILES):
        return f"a run directory's {target.name}" if is_run_dir(target.parent) else f"named like a run's {target.name}"
    for folder in target.parents:
        if folder.name in RUN_DIR_FOLDERS and is_run_dir(folder.parent):
            return f"inside the run directory {shown(folder.parent)}'s {folder.name}/"
    return None


def is_duckdb_file(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return False


def _writable_folder(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` is a directory that takes new files."""
    folder = path.parent
    while not os.path.lexists(folder):
        folder = folder.parent
    if not folder.is_dir():
        raise BadInput(f"{flag} {shown(path)} is under a file ({shown(folder)}); choose another {flag}")
    # os.access says yes to root on any directory of a writable mount (/proc, /sys): make (and
    # drop at once) an unnamed file there.
    try:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BadInput(f"{flag} {shown(path)}: {shown(folder)} is not writable "
                       f"({exc.strerror or exc}); choose another {flag}") from None


def check_output_file(out: str | os.PathLike, flag: str = "--out",
                      ours: Callable[[Path], bool] | None = None) -> Path:
    """``out`` checked against the rule in the module doc; returns it as a Path. ``ours`` says
    whether an existing regular file may be replaced (default: anything but a DuckDB database)."""
    if not str(out).strip():
        raise BadInput(f"{flag} is empty; give a file name")
    path = Path(out)
    _check_length(path, flag)
    try:
        mode: int | None = path.lstat().st_mode  # the link itself, never what it points to
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        if exc.errno != errno.ENOTDIR:
            raise BadInput(f"{flag} {shown(path)}: {exc.strerror or exc}; choose another {flag}") from None
        mode = None  # under a file: _writable_folder names it
    if mode is not None and not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise BadInput(f"{flag} {shown(path)} is {kind}; bench replaces its file, so give a new path or a regular file")
    target = Path(os.path.realpath(path.parent)) / path.name  # the parent's links resolved, not the file's
    part = _run_dir_part(target)
    if part is not None:
        raise BadInput(f"{flag} {shown(path)} is {part}: bench never writes over measured data; choose another {flag}")
    if mode is not None:
        allowed = ours(path) if ours is not None else not is_duckdb_file(path)
        if not allowed:
            what = "a DuckDB database" if is_duckdb_file(path) else "a file"
            raise BadInput(f"{flag} {shown(path)} is {what} that bench did not make for {flag}; writing it would "
                           f"lose what it holds, so choose another {flag}")
    _writable_folder(path, flag)
    return path


def write_atomically(out: str | os.PathLike, data: str | bytes, flag: str = "--out",
                     ours: Callable[[Path], bool] | None = None) -> Path:
    """Write ``data`` to ``out`` whole or not at all: a temporary file in the same directory,
    fsync, ``out`` checked again (it may have changed meanwhile), rename. A failure (a full disk)
    is one line and leaves the old file as it was."""
    path = Path(out)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bench-", suffix=".tmp")  # a short name: never too long
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide a report from the group
        check_output_file(path, flag, ours)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise BadInput(f"{flag} {shown(path)}: {exc.strerror or exc}; nothing was written") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def quiet_stdout() -> None:
    """The reader of our stdout went away (``| head``): point stdout at /dev/null, so that the
    rest of the output and Python's flush at exit are dropped without a word (the recipe of
    Python's signal module documentation, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def print_out(text: str, nl: bool = True) -> bool:
    """``text`` to stdout; False (and stdout silenced) when the reader has gone, so a command can
    still end with its own exit code (compare's verdict) instead of a BrokenPipeError."""
    import click

    try:
        click.echo(text, nl=nl)
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        quiet_stdout()
        return False


def print_rich(renderable: object, width: int) -> bool:
    """A rich table to stdout through ``print_out``: rendered into a string first, because rich's
    own broken-pipe handling exits 1 (compare's and history's "slower") with no word. Coloured
    only on a terminal, as rich would."""
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, force_terminal=sys.stdout.isatty() or None)
    console.print(renderable)
    return print_out(console.file.getvalue(), nl=False)  # type: ignore[attr-defined]
