"""Claims: the exclusive claim file a writer takes on a cell before measuring it, so concurrent
writers into one ``--out`` (SLURM array tasks share one) never measure a cell twice.

One claim file per cell identity under ``claims/``, created under a lock on ``claims/.lock`` and
released when the cell ends. A held claim's mtime is refreshed by a heartbeat thread. A claim
whose process is gone (same host: dead pid, another start time or boot; another host: a stale
heartbeat) is taken over, and so is one that does not name its process fully (host, pid, start
time, boot id) or is a symlink. The sweep (bench.sweep) takes and releases claims around each
visit; ``bench slurm status`` lists who holds them (``claim_holders``).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
import stat
import threading
import time
from pathlib import Path

from bench.record import RunDir


class Claims:
    """Exclusive claim files, one per cell identity, so concurrent writers never measure a cell twice."""

    def __init__(self, run_dir: RunDir):
        self.dir = run_dir.path / "claims"
        self.held: set[Path] = set()
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    def _heartbeat(self) -> None:
        """Refresh the mtime of every held claim while this process lives: another host respects
        a claim only while its heartbeat is fresh (HEARTBEAT_STALE_S)."""
        while not self._stop.wait(HEARTBEAT_S):
            for path in list(self.held):
                with contextlib.suppress(OSError):
                    os.utime(path)

    def _start_heartbeat(self) -> None:
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name="bench-claim-heartbeat", daemon=True)
            self._beat.start()

    def _path(self, key: str, config_id: str) -> Path:
        return self.dir / (hashlib.sha256(f"{key}#{config_id}".encode()).hexdigest()[:24] + ".claim")

    def take(self, key: str, config_id: str) -> str | None:
        """None when the claim is ours; else who holds it. Checking a claim, removing a stale one
        and creating ours happen under one lock on ``claims/.lock``, so two writers that both
        find a stale claim cannot both take it over."""
        self.dir.mkdir(exist_ok=True)
        path = self._path(key, config_id)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "cell": key, "boot_id": _boot_id(),
              "start_time": _start_time(os.getpid())}
        lock = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            holder = _read_claim(path)
            if path.exists() or path.is_symlink():
                if holder is not None and _alive(holder, path):
                    return f"pid {holder['pid']} on {holder['host']}"
                path.unlink(missing_ok=True)  # stale (its process is gone), unreadable, malformed or a symlink
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held.add(path)
            self._start_heartbeat()
            return None
        except FileExistsError:  # a writer that does not take the lock (an older bench) won
            return "another writer (claim raced)"
        finally:
            os.close(lock)

    def release(self, key: str, config_id: str) -> None:
        path = self._path(key, config_id)
        if path in self.held:
            self.held.discard(path)
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def release_all(self) -> None:
        for path in list(self.held):
            self.held.discard(path)
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def claim_holders(run_dir: RunDir) -> dict[str, str]:
    """Cell key -> who claims it and whether that claim still stands ("pid 7 on node1, live" /
    "..., stale: the next writer takes it over"), for ``bench slurm status``."""
    out: dict[str, str] = {}
    directory = run_dir.path / "claims"
    if not directory.is_dir() or directory.is_symlink():
        return out
    for path in sorted(directory.glob("*.claim")):
        holder = _read_claim(path)
        if holder and isinstance(holder.get("cell"), str):
            state = "live" if _alive(holder, path) else "stale: the next writer takes it over"
            out[holder["cell"]] = f"pid {holder.get('pid')} on {holder.get('host')}, {state}"
    return out


MAX_CLAIM_BYTES = 64 << 10  # a claim is ~200 bytes of JSON


def _read_claim(path: Path) -> dict | None:
    """A claim's holder, or None when it cannot stand: unreadable, not a regular file, a symlink
    (never followed: its target says nothing of who measures the cell) or malformed. A claim
    names its process fully (host, pid, start time, boot id), as ``Claims.take`` writes it; a
    hand-written ``{"pid": 1}`` with no host is not another machine's claim to wait 600 s for."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # ELOOP: a symlink
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            data = json.loads(fh.read(MAX_CLAIM_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and _well_formed(data) else None


def _well_formed(holder: dict) -> bool:
    def text(key: str) -> bool:
        return isinstance(holder.get(key), str) and bool(holder[key].strip())

    def number(key: str) -> bool:
        value = holder.get(key)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf

    return text("host") and text("boot_id") and number("start_time") and number("pid") \
        and isinstance(holder["pid"], int)


HEARTBEAT_S = 30.0  # a held claim's mtime is refreshed this often
HEARTBEAT_STALE_S = 600.0  # another host's claim whose mtime is older than this is taken over


def _boot_id() -> str | None:
    """This boot's id: a claim from an earlier boot is stale whatever its pid."""
    import psutil

    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:  # no /proc (not Linux): the boot time names the boot as well
        return f"booted-{psutil.boot_time():.0f}"


def _start_time(pid: int) -> float | None:
    """The process's start time (psutil), so a reused pid is not taken for the claim's process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, OverflowError):
        return None


def _alive(holder: dict, path: Path | None = None) -> bool:
    """Whether a claim's process may still be measuring its cell. Another host's claim: while
    its heartbeat (the file's mtime) is fresh. This host's: while a process with its pid runs,
    started at the claim's start time, in this boot; a claim without a start time (hand-written,
    or an older bench) is stale."""
    if holder.get("host") != socket.gethostname():
        return _fresh(path)
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    boot, started = holder.get("boot_id"), holder.get("start_time")
    if boot is not None and boot != _boot_id():
        return False  # claimed before this boot
    now_started = _start_time(pid)
    if now_started is None:
        return False  # no such process
    if isinstance(started, (int, float)) and not isinstance(started, bool):
        return abs(now_started - started) < 1.0  # else the pid was reused
    return False  # no start time recorded (hand-written, or an older bench): cannot be ours to wait for


def _fresh(path: Path | None) -> bool:
    if path is None:
        return True
    try:
        return time.time() - path.lstat().st_mtime < HEARTBEAT_STALE_S
    except OSError:
        return False
