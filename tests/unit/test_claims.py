"""Claims on a cell in the run directory. Issue 27 group 9: a claim that does not name its process
fully (host, pid, start time, boot id), or that is a symlink, is malformed and taken over at once,
not honoured for 600 s as another machine's claim. Issue 18 item 10 (moved from
tests/e2e/test_adversarial_rundir.py: they need no process of their own): a hand-written claim of
pid 1, a reused pid or an earlier boot is stale and taken over; a live claim, and another host's
while its heartbeat is fresh, is respected."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest

from bench.claims import Claims, _boot_id, _read_claim, claim_holders
from bench.record import RunDir


@pytest.fixture
def claims(tmp_path):
    taken = Claims(RunDir(tmp_path))
    taken.dir.mkdir()
    yield taken
    taken.release_all()


def _mine(claims: Claims, key: str) -> bool:
    held = _read_claim(claims._path(key, "c"))
    return held is not None and held["pid"] == os.getpid() and held["host"] == socket.gethostname()


WHOLE = {"host": "node-elsewhere", "pid": 7, "start_time": 1.0, "boot_id": "elsewhere-boot", "cell": "k"}
MALFORMED = {
    "pid only": {"pid": 1},
    "no host": {k: v for k, v in WHOLE.items() if k != "host"},
    "host null": {**WHOLE, "host": None},
    "empty host": {**WHOLE, "host": " "},
    "no start time": {k: v for k, v in WHOLE.items() if k != "start_time"},
    "start time text": {**WHOLE, "start_time": "1.0"},
    "start time true": {**WHOLE, "start_time": True},
    "no boot id": {k: v for k, v in WHOLE.items() if k != "boot_id"},
    "boot id number": {**WHOLE, "boot_id": 3},
    "pid float": {**WHOLE, "pid": 7.0},
    "pid 0": {**WHOLE, "pid": 0},
}


@pytest.mark.parametrize("holder", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_claim_is_taken_over_at_once(claims, holder):
    path = claims._path("k", "c")
    path.write_text(json.dumps(holder))  # fresh: a well-formed claim of another host would be honoured
    assert claims.take("k", "c") is None
    assert _mine(claims, "k")


def test_a_whole_claim_of_another_host_is_still_honoured_while_fresh(claims):
    """The control: the same claim with every field stands (the rule above is not 'take all')."""
    claims._path("k", "c").write_text(json.dumps(WHOLE))
    assert claims.take("k", "c") == "pid 7 on node-elsewhere"
    assert claim_holders(RunDir(claims.dir.parent)) == {"k": "pid 7 on node-elsewhere, live"}


@pytest.mark.parametrize("target", [WHOLE, {"pid": 1}], ids=["to a whole claim", "to pid 1"])
def test_a_symlinked_claim_is_not_followed_and_is_taken_over(claims, tmp_path, target):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(target))
    path = claims._path("k", "c")
    path.symlink_to(outside)
    assert _read_claim(path) is None
    assert claim_holders(RunDir(claims.dir.parent)) == {}
    assert claims.take("k", "c") is None
    assert not path.is_symlink() and _mine(claims, "k")
    assert json.loads(outside.read_text()) == target  # the link's target is left alone


def test_a_claim_that_is_a_fifo_or_huge_is_malformed(claims):
    fifo = claims._path("f", "c")
    os.mkfifo(fifo)
    assert _read_claim(fifo) is None  # no blocking open
    assert claims.take("f", "c") is None and _mine(claims, "f")
    huge = claims._path("h", "c")
    huge.write_text(json.dumps({**WHOLE, "pad": "x" * (1 << 20)}))
    assert claims.take("h", "c") is None and _mine(claims, "h")


def test_our_own_claims_are_whole(claims):
    assert claims.take("k", "c") is None
    held = _read_claim(claims._path("k", "c"))
    assert held is not None and held["boot_id"] == _boot_id() and 0 < held["start_time"] <= time.time()
    assert Claims(RunDir(claims.dir.parent)).take("k", "c") == f"pid {os.getpid()} on {socket.gethostname()}"


# ---------------------------------------------------------------- issue 18 item 10


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
    claims._path("a", "c").write_text(json.dumps({**me, "start_time": 1.0, "boot_id": _boot_id()}))  # pid reused
    claims._path("b", "c").write_text(json.dumps({**me, "start_time": time.time(), "boot_id": "old-boot"}))
    assert claims.take("a", "c") is None and claims.take("b", "c") is None
    claims.release_all()


def test_live_claim_is_respected_and_other_host_only_while_fresh(tmp_path):
    first, second = Claims(RunDir(tmp_path)), Claims(RunDir(tmp_path))
    assert first.take("k", "c") is None
    assert "pid" in second.take("k", "c")  # this very process, alive
    first.release_all()
    path = second._path("o", "c")
    path.write_text(json.dumps({"host": "elsewhere", "pid": 7, "start_time": time.time(), "boot_id": "b"}))
    assert second.take("o", "c") is not None  # fresh heartbeat: respected
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    assert second.take("o", "c") is None  # heartbeat an hour old: taken over
    second.release_all()
