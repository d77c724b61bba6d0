"""Issue 18 items 10-12 (the run directory's claims): a stale claim is taken over, and claims/
as a file or a symlink is refused up front."""
from __future__ import annotations

import json
import os
import shutil
import socket
import time

from tests.e2e.test_reliability import copy_run, measured, one_line_error, run_small  # noqa: F401 (a fixture)

from bench.record import RunDir
from bench.sweep import Claims, _read_claim


def test_hand_written_claim_of_pid_1_is_taken_over(tmp_path):
    """Item 10: {"host": this host, "pid": 1} skipped the cell forever."""
    claims = Claims(RunDir(tmp_path))
    claims.dir.mkdir()
    claims._path("k", "c").write_text(json.dumps({"host": socket.gethostname(), "pid": 1}))
    assert claims.take("k", "c") is None
    mine = _read_claim(claims._path("k", "c"))
    assert mine["pid"] == os.getpid() and mine["start_time"] and "boot_id" in mine
    claims.release_all()


def test_claim_of_a_reused_pid_or_earlier_boot_is_stale(tmp_path):
    claims = Claims(RunDir(tmp_path))
    claims.dir.mkdir()
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    claims._path("a", "c").write_text(json.dumps({**me, "start_time": 1.0}))  # pid reused
    claims._path("b", "c").write_text(json.dumps({**me, "start_time": time.time(), "boot_id": "old-boot"}))
    assert claims.take("a", "c") is None and claims.take("b", "c") is None
    claims.release_all()


def test_live_claim_is_respected_and_other_host_only_while_fresh(tmp_path):
    first, second = Claims(RunDir(tmp_path)), Claims(RunDir(tmp_path))
    assert first.take("k", "c") is None
    assert "pid" in second.take("k", "c")  # this very process, alive
    first.release_all()
    path = second._path("o", "c")
    path.write_text(json.dumps({"host": "elsewhere", "pid": 7}))
    assert second.take("o", "c") is not None  # fresh heartbeat: respected
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    assert second.take("o", "c") is None  # heartbeat an hour old: taken over
    second.release_all()


def test_claims_as_a_file_is_refused_up_front(measured, tmp_path):  # noqa: F811
    """Item 11: exit 1 after invocations.jsonl was appended."""
    out = copy_run(measured, tmp_path)
    shutil.rmtree(out / "claims", ignore_errors=True)
    (out / "claims").write_text("x")
    before = (out / "invocations.jsonl").read_bytes()
    proc = run_small(out)
    assert proc.returncode == 2 and "claims" in one_line_error(proc)
    assert (out / "invocations.jsonl").read_bytes() == before


def test_claims_as_a_symlink_is_refused(measured, tmp_path):  # noqa: F811
    """Item 12: files were created and deleted in the symlink's target."""
    out = copy_run(measured, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    shutil.rmtree(out / "claims", ignore_errors=True)
    (out / "claims").symlink_to(outside)
    proc = run_small(out, "64,96")
    assert proc.returncode == 2 and "symlink" in one_line_error(proc)
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
