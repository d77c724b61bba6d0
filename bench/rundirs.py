"""Run directories named on the command line: turning a command's arguments (paths, and globs the
shell left unexpanded) into the run directories they stand for, for ``bench query``,
``bench report`` and ``bench history``.

Below the database (bench.db indexes the directories this returns) and the report: it only looks
at the file system, reads no record and imports nothing but the record's file names.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from bench.errors import BadInput
from bench.record import is_run_dir, not_a_run_dir
from bench.sanitize import visible

_GLOB_CHARS = set("*?[")


def _shown(path: Any) -> str:
    """A path inside a one-line message: control characters escaped."""
    return visible(str(path), one_line=True)


def resolve_run_dirs(args: Iterable[str | os.PathLike]) -> list[Path]:
    """The run directories named by ``args``: paths, or globs the shell left unexpanded (quoted,
    or too many for one command line); duplicates count once.

    ``results/*`` meets folders that are not runs: a folder whose children are run directories (a
    study kept as several runs) stands for those; a folder with no run at either level (notes, a
    benchmark's JSON) is passed over with one line on stderr. A file or a missing path is an error,
    and so is a list in which nothing is a run."""
    out: list[Path] = []
    seen: set[str] = set()
    passed_over: list[str] = []
    for arg in args:
        text = str(arg)
        if not Path(text).exists() and _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise BadInput(f"'{_shown(text)}' matches no run directory")
        else:
            matches = [text]
        for m in matches:
            path = Path(m)
            if is_run_dir(path):
                found = [path]
            elif path.is_dir():
                found = sorted(c for c in path.iterdir() if is_run_dir(c))
                if not found:
                    passed_over.append(_shown(path))
            else:
                raise BadInput(not_a_run_dir(path))
            for run in found:
                key = str(run.resolve())
                if key not in seen:
                    seen.add(key)
                    out.append(run)
    if not out:
        if passed_over:
            raise BadInput(not_a_run_dir(Path(passed_over[0])) if len(passed_over) == 1 else
                           f"none of the {len(passed_over)} directories is a run directory or holds one; "
                           "pass directories written by `bench run --out DIR`")
        raise BadInput("no run directory given; pass one or more directories written by `bench run --out DIR`")
    if passed_over:
        print(f"bench: passed over {len(passed_over)} "
              f"{'directory that holds' if len(passed_over) == 1 else 'directories that hold'} no run: "
              f"{', '.join(passed_over)}", file=sys.stderr)
    return out
