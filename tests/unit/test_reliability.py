"""The run directory and stopping, the parts that need no process of their own (moved from
tests/e2e/test_reliability.py, which keeps the real-process cases): a full disk under a fake
writer, run ids, is_oom on communication errors, first_line, the default run directory, the
stop flag."""
from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest

from bench.record import RunDir, new_run_id


def _fake_write(monkeypatch, behaviour):
    """os.write misbehaves for record lines (JSON objects ending in a newline) only."""
    real = os.write

    def write(fd, data):
        if bytes(data).startswith(b"{") and bytes(data).endswith(b"\n") and b'"cell_key"' in bytes(data):
            return behaviour(real, fd, bytes(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("behaviour", ["short", "enospc", "fsync-eio"])
def test_full_disk_is_one_line_exit_1_with_the_record_on_stderr(tmp_path, monkeypatch, capsys, behaviour):
    from bench.sweep import _append_or_die

    run_dir = RunDir(tmp_path / "run").create()
    run_dir.append({"cell_key": "cls|a|64|infer|1", "status": "ok"})
    before = run_dir.records_path.read_bytes()
    rec = {"cell_key": "cls|b|64|infer|1", "status": "ok", "latency_ms": 1.5}
    if behaviour == "short":
        _fake_write(monkeypatch, lambda real, fd, data: real(fd, data[: len(data) // 2]))
    elif behaviour == "enospc":
        def enospc(real, fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")
        _fake_write(monkeypatch, enospc)
    else:
        def eio(fd):
            raise OSError(errno.EIO, "Input/output error")
        monkeypatch.setattr(os, "fsync", eio)

    with pytest.raises(SystemExit) as exit_info:
        _append_or_die(run_dir, rec)
    assert exit_info.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 2 and json.loads(err[0]) == rec  # the record, whole, as JSON
    assert err[1].startswith("Error: cannot write the record of cls|b|64|infer|1")
    assert ("disk full" in err[1]) == (behaviour != "fsync-eio")
    monkeypatch.undo()
    assert run_dir.records_path.read_bytes() == before  # no partial line left behind
    run_dir.append(rec)  # and the next append is whole
    assert [r["cell_key"] for r in run_dir.records()] == ["cls|a|64|infer|1", "cls|b|64|infer|1"]


def test_run_ids_started_in_the_same_second_differ(monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20250101-000000")
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50


def test_is_oom_tells_a_cell_oom_from_a_communication_error():
    import torch
    import torch.distributed as dist

    from bench.measure.memory import is_oom

    cell_ooms = [
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                     "you tried to allocate 50334720 bytes. Error code 12 (Cannot allocate memory)"),
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"),
    ]
    communication = [
        RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error, NCCL version 2.18.1\n"
                     "Last error: Cuda failure 'out of memory'"),
        RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error: out of memory"),
        RuntimeError("ProcessGroupGloo: out of memory while allocating the collective buffer"),
        dist.DistBackendError("out of memory"),
        RuntimeError("c10d: out of memory in collective all_reduce"),
    ]
    assert all(is_oom(e) for e in cell_ooms), [str(e) for e in cell_ooms if not is_oom(e)]
    assert not any(is_oom(e) for e in communication), [str(e) for e in communication if is_oom(e)]
    assert not is_oom(RuntimeError("shape mismatch")) and not is_oom(ValueError("memory layout"))


def test_first_line_is_one_bounded_line_and_never_empty():
    """bench.errors.first_line is what every record's ``error`` and every one-line message uses."""
    from bench.errors import first_line

    assert first_line(RuntimeError("  boom\n  File x, line 3\n")) == "boom"
    assert first_line(RuntimeError("boom\nmore"), with_type=True) == "RuntimeError: boom"
    assert first_line(RuntimeError()) == "RuntimeError"  # no message: the type, never ""
    assert first_line(MemoryError(), with_type=True) == "MemoryError"
    assert first_line(ValueError("x" * 1000)) == "x" * 300
    assert first_line(ValueError("x" * 1000), 50) == "x" * 50


def test_default_run_dir_is_unique_under_results():
    from bench.record import default_run_dir

    dirs = {default_run_dir() for _ in range(20)}
    assert len(dirs) == 20 and all(d.parent == Path("results") for d in dirs)


def test_stop_flag_records_the_signal_without_dying():
    """SIGUSR1 / SIGTERM set the flag the sweep checks between cells (bench.launch.signals)."""
    from bench.launch.signals import PREEMPTED_EXIT, STOP_SIGNALS, StopFlag

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        flag = StopFlag().install()
        assert flag.signal is None
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # Python runs the handler at the next bytecode boundary
        assert flag.signal == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # the process is still here
        time.sleep(0.05)
        assert flag.signal == signal.SIGTERM
        assert StopFlag.shared() is StopFlag.shared() and PREEMPTED_EXIT == 99
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
