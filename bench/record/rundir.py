"""The run directory on disk: appending a record whole or not at all (fcntl lock, torn tails),
reading every record file of a directory (upgraded and validated), run ids and timestamps."""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.record.declared import MAX_KEPT_SAMPLES, thinned, valid
from bench.record.upgrade import upgrade

RECORDS = "records.jsonl"
INVOCATIONS = "invocations.jsonl"
ENV = "env.json"


def timestamp() -> str:
    """Local time with microseconds and offset: orders retries within one second. One clock
    read, so the seconds and the microseconds cannot come from two different seconds."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def new_run_id() -> str:
    """Unique even for two runs started in the same second on one host."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname().split('.')[0]}-{secrets.token_hex(3)}"


def default_run_dir() -> Path:
    """Where a run writes without ``--out``: ``results/<new run id>``. The one place it is spelled,
    for the local commands, the sweep and ``bench slurm submit``."""
    return Path("results") / new_run_id()


_WARNED: set[tuple[str, int, int]] = set()  # (run directory, lines skipped, records thinned) already said


def read_warnings(run_dir: str, skipped: int, thinned_records: int) -> list[str]:
    """The lines a reader says about one run directory: records left out, samples thinned."""
    lines = []
    if skipped:
        lines.append(f"bench: skipped {skipped} unreadable or invalid record(s) in {run_dir} (not JSON objects, "
                     "not UTF-8, or a field of the wrong type or value, damaged latency samples included: see "
                     "bench.record.valid)")
    if thinned_records:
        lines.append(f"bench: thinned the latency samples of {thinned_records} record(s) in {run_dir} to "
                     f"{MAX_KEPT_SAMPLES:,} each, evenly (as bench run keeps them; samples_thinned is set)")
    return lines


def writer_name() -> str | None:
    """The shard this process writes: None (records.jsonl) for a local run; one per SLURM job or
    array task, since O_APPEND is not atomic across NFS clients."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    return f"slurm-{job}-{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"


def is_run_dir(path: Path) -> bool:
    """A directory bench wrote: it holds a records file or a shard, the invocation log or env.json.
    The one test, for the readers (bench query, report, history, calibrate) and for the output
    rule that keeps a command from writing over a run's files (bench.outputs)."""
    try:
        return path.is_dir() and (any(p.is_file() for p in RunDir(path).record_files())
                                  or (path / INVOCATIONS).is_file() or (path / ENV).is_file())
    except OSError:  # unreadable: not one bench can use
        return False


def not_a_run_dir(path: Path) -> str:
    """The one-line message for a ``path`` named as a run directory that is not one: it names the
    real problem (a file, a broken link, missing, a folder bench did not write)."""
    from bench.sanitize import visible

    shown = visible(str(path), one_line=True)
    hint = f"pass a directory written by `bench run --out DIR` (with {RECORDS} or {INVOCATIONS})"
    if path.is_file():
        return (f"'{shown}' is a file, not a run directory; pass its run directory "
                f"('{visible(str(path.parent), one_line=True)}')")
    if path.is_dir():
        return f"'{shown}' is not a run directory; {hint}"
    if path.is_symlink():
        return f"'{shown}' is a broken symlink; {hint}"
    if path.exists():
        return f"'{shown}' is not a directory; {hint}"
    return f"run directory '{shown}' does not exist; {hint}"


class RecordWriteError(OSError):
    """An append that could not be written whole (disk full, short write)."""


class RunDir:
    """A results directory that cells append to."""

    def __init__(self, path: str | os.PathLike, writer: str | None = None):
        self.path = Path(path)
        self.writer = writer  # None: records.jsonl; else this writer's own shard

    @property
    def records_path(self) -> Path:
        return self.path / (RECORDS if self.writer is None else f"records.{self.writer}.jsonl")

    def record_files(self) -> list[Path]:
        """records.jsonl and every writer's shard, in a stable order."""
        return [p for p in [self.path / RECORDS, *sorted(self.path.glob("records.*.jsonl"))]
                if p.name == RECORDS or not p.name.startswith("records.torn-")]

    def create(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def check_writable(self) -> None:
        """Refuse a records file, the invocation log or the claims folder that is a symlink or of
        the wrong kind, before measuring: bench writes (and deletes) only inside the run directory."""
        from bench.errors import BadInput

        files = [*self.record_files(), self.records_path, self.path / INVOCATIONS]
        for path, is_kind, kind in [*((f, Path.is_file, "file") for f in files),
                                    (self.path / "claims", Path.is_dir, "directory")]:
            if path.is_symlink():
                raise BadInput(f"{path} is a symlink; bench writes only inside the run directory "
                               "(remove it or choose another --out)")
            if path.exists() and not is_kind(path):
                raise BadInput(f"{path} exists but is not a {kind}; remove it or choose another --out")

    def append(self, record: dict[str, Any]) -> None:
        """Append one record whole or not at all: under an exclusive lock (concurrent writers of
        one file), cut a torn tail off, one checked write, fsync; on any failure the file is cut
        back to its length before the write."""
        line = (json.dumps(record, sort_keys=True, default=_json_default, allow_nan=False) + "\n").encode()
        path = self.records_path
        if path.is_symlink():
            raise RecordWriteError(errno.ELOOP, f"{path} is a symlink; refusing to follow it")
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
            self._quarantine_torn_tail(fd, path)
            start = os.fstat(fd).st_size
            failure: OSError | None = None
            try:
                written = os.write(fd, line)
                if written != len(line):
                    failure = OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
                else:
                    os.fsync(fd)
            except OSError as exc:
                failure = exc
            if failure is not None:
                try:
                    os.ftruncate(fd, start)  # take back a partial line so the file stays whole
                except OSError:
                    pass
                raise RecordWriteError(failure.errno or errno.EIO,
                                       f"cannot append to {path}: {failure.strerror or failure}")
        finally:
            os.close(fd)

    def _quarantine_torn_tail(self, fd: int, path: Path) -> None:
        """A last line without its newline (a kill mid-write) would swallow the next record:
        move its bytes to a side file and cut it off (the caller holds the file's lock)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        # Find the last newline, reading backwards in blocks (the file may be large).
        cut, pos = 0, size
        while pos > 0:
            block = min(1 << 16, pos)
            pos -= block
            chunk = os.pread(fd, block, pos)
            i = chunk.rfind(b"\n")
            if i >= 0:
                cut = pos + i + 1
                break
        tail = os.pread(fd, size - cut, cut)
        side = self.path / f"records.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}.jsonl"
        side_fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            if os.write(side_fd, tail) != len(tail):
                raise OSError(errno.ENOSPC, f"short write while keeping the torn line in {side}")
            os.fsync(side_fd)
        finally:
            os.close(side_fd)
        os.ftruncate(fd, cut)
        os.fsync(fd)
        print(f"bench: {path} ended in a torn line ({size - cut} bytes); kept them in {side} and cut them off",
              file=sys.stderr)

    def invocation_entries(self) -> dict[str, dict[str, Any]]:
        """Each line of invocations.jsonl that is a JSON object naming its invocation, by that id
        (unreadable lines passed over): what produced each record (command, commit, torch)."""
        out: dict[str, dict[str, Any]] = {}
        path = self.path / INVOCATIONS
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("invocation"), str):
                    out[entry["invocation"]] = entry
        return out

    def records(self, warn: bool = True) -> list[dict[str, Any]]:
        """Every readable record of records.jsonl and the shards; unreadable lines are skipped
        and long sample lists thinned, each said in one line that counts them (none when ``warn``
        is False)."""
        out: list[dict[str, Any]] = []
        skipped = thin = 0
        for path in self.record_files():
            read = read_records(path)
            out += read.records
            skipped += read.skipped
            thin += read.thinned
        said = (str(self.path.resolve()), skipped, thin)
        if warn and (skipped or thin) and said not in _WARNED:
            # Once per process: a command reads its directory several times (resume, report).
            _WARNED.add(said)
            for line in read_warnings(str(self.path), skipped, thin):
                print(line, file=sys.stderr)
        return out

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` atomically (temp file + rename)."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False))
        os.replace(tmp, target)
        return target

    def append_invocation(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, sort_keys=True, default=_json_default, allow_nan=False) + "\n").encode()
        fd = os.open(self.path / INVOCATIONS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            written = os.write(fd, line)
            if written != len(line):
                raise RecordWriteError(errno.ENOSPC, f"short write to {self.path / INVOCATIONS}")
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class RecordsRead:
    """What reading one records file gave: the valid records (upgraded, samples bounded), the lines
    left out (unreadable or invalid) and the records whose samples were thinned on read."""

    records: list[dict[str, Any]]
    skipped: int
    thinned: int


def read_records_counted(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """(the readable records of one file, upgraded; how many lines were unreadable)."""
    read = read_records(path)
    return read.records, read.skipped


def read_records(path: str | os.PathLike) -> RecordsRead:
    """Every valid record of one file, upgraded, its ``latency_samples_ms`` thinned to
    ``MAX_KEPT_SAMPLES`` (flagged ``samples_thinned``); the lines left out and the records thinned
    counted."""
    path = Path(path)
    if not path.is_file():
        return RecordsRead([], 0, 0)
    out, bad, thin = [], 0, 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep, a 5000-digit number
                bad += 1
                continue
            if not isinstance(rec, dict):
                bad += 1
                continue
            rec = upgrade(rec)
            if not valid(rec):  # NaN latency, "fast" throughput, -3 iters: neither finished nor a figure
                bad += 1
                continue
            samples = rec.get("latency_samples_ms")
            if isinstance(samples, list) and len(samples) > MAX_KEPT_SAMPLES:
                rec["latency_samples_ms"] = thinned(samples)
                rec["samples_thinned"] = True
                thin += 1
            out.append(rec)
    return RecordsRead(out, bad, thin)


def latest_by_cell(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (cell_key, config_id): the latest by timestamp (a retried cell's last try).
    A record whose cell_key is not a string (or config_id neither a string nor missing) stands alone."""
    best: dict[tuple, dict[str, Any]] = {}
    for i, rec in enumerate(records):
        cell_key, config_id = rec.get("cell_key"), rec.get("config_id")
        if isinstance(cell_key, str) and cell_key and (config_id is None or isinstance(config_id, str)):
            key: tuple = ("cell", cell_key, config_id)
        else:
            key = ("#", i)
        old = best.get(key)
        if old is None or str(rec.get("timestamp") or "") >= str(old.get("timestamp") or ""):
            best[key] = rec
    return list(best.values())


def cell_identity(rec: dict[str, Any]) -> tuple[str, str] | None:
    """(cell_key, config_id) of a record when both are strings (resume identity); else None."""
    key, config_id = rec.get("cell_key"), rec.get("config_id")
    return (key, config_id) if isinstance(key, str) and isinstance(config_id, str) else None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (Path, tuple)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
