"""The run directory: ``records.jsonl`` (one JSON object per finished cell) and ``env.json``.

Each record is appended as one line, flushed and fsync'd before the next cell starts, so a crash
or SIGKILL loses no finished cell; a torn last line (killed mid-write) is skipped on reading.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

RECORDS = "records.jsonl"
ENV = "env.json"


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname().split('.')[0]}"


class RunDir:
    """A results directory that cells append to."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def records_path(self) -> Path:
        return self.path / RECORDS

    def create(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a single write of one line (O_APPEND keeps concurrent writers'
        lines whole), then fsync."""
        line = (json.dumps(record, sort_keys=True, default=_json_default) + "\n").encode()
        fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        return list(read_records(self.records_path))

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` atomically (temp file + rename)."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
        os.replace(tmp, target)
        return target


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write: the cell did not finish


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
