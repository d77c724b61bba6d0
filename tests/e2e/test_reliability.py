"""Reliability of the run directory and of stopping, as a user meets it: the real command line
in real processes (tests/conftest.py::run_bench), with small cells (resnet18 at 64 px, inference,
0.1 s budget) so each process takes seconds.

Covered: a torn last line; a full disk (a real tmpfs); unreadable and malformed records in resume
and report; a records file that is a directory or a symlink; bad --out; concurrent writers
(claims, stale claims, shards, one shared file); a failure (FLOP counting out of memory) that
stays in its cell; SIGTERM / SIGUSR1 / SIGINT to the parent of a --nproc 2 job (bench run and
bench finetune); bench finetune rejected at load time creating nothing. The in-process cases (a
full disk under a fake writer, run ids, is_oom, first_line, the stop flag) are in
tests/unit/test_reliability.py.
"""
from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import NO_MFU, REPO, run_bench

from bench.record import RunDir, read_records_counted

SMALL = ["--models", "resnet18", "--modes", "infer", "--budget", "0.1", "--max-time", "10"]


def run_small(out: Path, res: str = "64", *extra: str, report: bool = False, **kw) -> subprocess.CompletedProcess:
    return run_bench("run", *SMALL, "--res", res, "--out", str(out), *([] if report else ["--no-report"]), *extra, **kw)


def start(*args: str, env: dict | None = None, prefix: list[str] | None = None) -> subprocess.Popen:
    args = (*args, *NO_MFU) if args[:1] == ("run",) and "--mfu" not in args else args
    return subprocess.Popen([*(prefix or []), sys.executable, "-m", "bench.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """stderr is one line starting with 'Error:' (no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), proc.stderr[-3000:]
    return lines[0]


def records_of(out: Path) -> list[dict]:
    return RunDir(out).records()


def copy_run(measured: Path, tmp_path: Path, name: str = "run") -> Path:
    out = tmp_path / name
    shutil.copytree(measured, out)
    return out


# --------------------------------------------------------------------------------------------
# 1. A torn last line


def test_torn_last_line_is_kept_aside_and_the_run_goes_on(measured, tmp_path):
    out = copy_run(measured, tmp_path)
    records = out / "records.jsonl"
    whole = records.read_bytes()
    other = json.dumps({**json.loads(whole), "cell_key": "cls|other|224|infer|1", "pad": "x" * 600}).encode()
    torn = other[:500]
    assert b"\n" not in torn
    with records.open("ab") as fh:  # another records file's first 500 bytes, no newline
        fh.write(torn)

    proc = run_small(out, "64,96")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torn line (500 bytes)" in proc.stderr and "records.torn-" in proc.stderr
    assert "skipping 1 finished cells" in proc.stderr  # the torn line did not hide the finished cell
    side = list(out.glob("records.torn-*.jsonl"))
    assert len(side) == 1 and side[0].read_bytes() == torn
    data = records.read_bytes()
    assert data.startswith(whole) and data.endswith(b"\n")
    got, bad = read_records_counted(records)
    assert bad == 0 and [r["res"] for r in got] == ["64", "96"]
    assert json.loads(data.splitlines()[0]) == json.loads(whole)
    # the side file is not read as records, by resume or by the report
    assert [r["res"] for r in records_of(out)] == ["64", "96"]


# --------------------------------------------------------------------------------------------
# 2. A full disk


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the in-process fake above covers the write path")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(directory: Path) -> None:
    with open(directory / "filler", "wb", buffering=0) as fh:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


@pytest.mark.parametrize("when", ["during-the-cell", "before-the-cell"])
def test_full_disk_real_tmpfs(small_tmpfs, when):
    """A real full file system (a 2 MB tmpfs filled up) while `bench run` works in it."""
    out = small_tmpfs / "run"
    proc = start("run", *SMALL, "--res", "64", "--out", str(out), "--no-report")
    deadline = time.time() + 120
    if when == "during-the-cell":
        def ready():  # a claim file: the cell is being measured
            return (out / "claims").is_dir() and bool(list((out / "claims").glob("*.claim")))
    else:
        def ready():
            return (out / "env.json").exists()
    while not ready():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    _fill(small_tmpfs)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "disk full" in errors[0], err[-3000:]
    if when == "during-the-cell":
        assert errors[0].startswith("Error: cannot write the record of cls|resnet18|64|infer|1")
        printed = [line for line in err.splitlines() if line.startswith("{")]
        rec = json.loads(printed[-1])  # the measured record, whole, on stderr
        assert rec["cell_key"] == "cls|resnet18|64|infer|1" and rec["params"] > 0
    records = out / "records.jsonl"
    assert not records.exists() or records.read_bytes() == b""  # no partial line


# --------------------------------------------------------------------------------------------
# 3. Unreadable and malformed records: resume and report


JUNK = [b"null", b"[1, 2]", b"3", b"\xff\xfe{not utf-8}"]


def test_unreadable_and_malformed_lines_neither_crash_resume_nor_report(measured, tmp_path):
    out = copy_run(measured, tmp_path)
    rec = json.loads((out / "records.jsonl").read_text())
    malformed = [
        {**rec, "cell_key": ["cls", "resnet18", "64"]},                  # cell_key a list
        {**rec, "cell_key": 7, "config_id": ["x"]},                      # cell_key an int, config_id a list
        {**rec, "batch": [1, 2], "cell_key": "cls|resnet18|64|infer|2"},  # a field of the wrong shape
        {**rec, "status": ["ok"], "cell_key": "cls|resnet18|96|infer|1", "config_id": {"a": 1}},
    ]
    with (out / "records.jsonl").open("ab") as fh:
        for line in [*JUNK, *(json.dumps(m).encode() for m in malformed)]:
            fh.write(line + b"\n")

    proc = run_small(out, "64,96", report=True)  # the end-of-run report reads the malformed records too
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # The 4 junk lines and the 4 records of the wrong shape (invalid against the Record schema)
    warnings = [line for line in proc.stderr.splitlines() if "unreadable or invalid record" in line]
    assert len(warnings) == 1 and "skipped 8 unreadable or invalid record(s)" in warnings[0], proc.stderr[-3000:]
    assert "skipping 1 finished cells" in proc.stderr
    assert "report not rendered" not in proc.stderr and (out / "report.html").is_file()
    assert sum(1 for r in records_of(out) if r.get("res") == "96" and r.get("cell_key") == "cls|resnet18|96|infer|1"
               and isinstance(r.get("config_id"), str)) == 1  # the 96 cell was measured

    report = run_bench("report", str(out), "--out", str(tmp_path / "r.md"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stderr.count("unreadable or invalid record") == 1
    assert (tmp_path / "r.md").read_text().count("resnet18") >= 2


def test_records_file_that_is_a_directory_is_refused_before_measuring(tmp_path):
    out = tmp_path / "run"
    (out / "records.jsonl").mkdir(parents=True)
    proc = run_small(out)
    assert proc.returncode == 2
    assert "records.jsonl exists but is not a file" in one_line_error(proc)
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl"]  # no invocation, no env, no claims


def test_records_symlink_outside_the_run_dir_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("precious\n")
    (out / "records.jsonl").symlink_to(target)
    proc = run_small(out)
    assert proc.returncode == 2
    assert "is a symlink" in one_line_error(proc)
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl"]


# --------------------------------------------------------------------------------------------
# 5. The report never writes over its inputs; bad --out


def test_report_out_over_records_is_refused(measured, tmp_path):
    out = copy_run(measured, tmp_path)
    before = (out / "records.jsonl").read_bytes()
    proc = run_bench("report", str(out), "--out", str(out / "records.jsonl"), "--format", "csv")
    assert proc.returncode == 2
    assert "never writes over measured data" in one_line_error(proc)
    assert (out / "records.jsonl").read_bytes() == before


def _bad_outs(tmp_path: Path) -> list[tuple[str, str, Path | None]]:
    """(--out, words in the error, a path that must not be created)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [(str(a_file), "is a file", None), (str(a_file / "run"), "under a file", a_file / "run"),
             ("", "empty", None), ("   ", "empty", None)]
    if os.geteuid() == 0:
        # root writes into any directory of a writable mount, so no chmod can make one read-only
        # for it here: /proc is a directory nobody can create files in.
        cases.append(("/proc/bench-not-writable/run", "not writable", Path("/proc/bench-not-writable")))
    else:
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        cases.append((str(ro / "run"), "not writable", ro / "run"))
    return cases


def test_bad_out_is_one_line_exit_2_and_creates_nothing(tmp_path):
    for out, words, not_created in _bad_outs(tmp_path):
        before = sorted(p.name for p in tmp_path.iterdir())
        proc = run_bench("run", *SMALL, "--res", "64", "--out", out, "--no-report", cwd=tmp_path)
        assert proc.returncode == 2, (out, proc.stderr[-2000:])
        assert words in one_line_error(proc), (out, proc.stderr)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, out  # no results/, nothing else
        if not_created is not None:
            assert not not_created.exists()


# --------------------------------------------------------------------------------------------
# 4. Concurrent writers


def _claim_path(run_dir: Path, key: str, config_id: str) -> Path:
    return run_dir / "claims" / (hashlib.sha256(f"{key}#{config_id}".encode()).hexdigest()[:24] + ".claim")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_two_runs_into_one_out_measure_each_cell_once_and_take_over_stale_claims(tmp_path):
    out = tmp_path / "shared"
    args = ["run", *SMALL, "--res", "64,96", "--out", str(out), "--no-report"]
    first, second = start(*args), start(*args)
    errs = []
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        errs.append(err)
    records = records_of(out)
    keys = [r["cell_key"] for r in records]
    assert sorted(keys) == ["cls|resnet18|64|infer|1", "cls|resnet18|96|infer|1"], keys  # each cell once
    # whichever writer did not measure a cell says why: held, measured meanwhile, or already finished
    said = [e for e in errs if "skip:" in e or "resume: skipping" in e]
    assert said, errs
    assert len({r["invocation"] for r in records}) >= 1
    assert not list((out / "claims").glob("*.claim"))  # every claim released

    # A stale claim (its process is gone) on the 96 cell is taken over by the next run.
    rec96 = next(r for r in records if r["res"] == "96")
    lines = [line for line in (out / "records.jsonl").read_text().splitlines() if json.loads(line)["res"] != "96"]
    (out / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    claim = _claim_path(out, rec96["cell_key"], rec96["config_id"])
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "cell": rec96["cell_key"]}))
    proc = run_bench(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipping 1 finished cells" in proc.stderr and "skip:" not in proc.stderr
    assert sorted(r["res"] for r in records_of(out)) == ["64", "96"] and not claim.exists()


def test_claims_held_by_a_live_process_or_another_host_are_respected(tmp_path):
    from bench.claims import Claims, _boot_id

    run_dir = RunDir(tmp_path / "run").create()
    claims = Claims(run_dir)
    claims.dir.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(live.pid).create_time()  # a claim names its process by pid and start time
        cases = {"live": {"host": socket.gethostname(), "pid": live.pid, "start_time": started, "boot_id": _boot_id()},
                 "other-host": {"host": "another-host.invalid", "pid": 1, "start_time": 1.0, "boot_id": "b"},
                 "dead": {"host": socket.gethostname(), "pid": _dead_pid()}}
        for name, holder in cases.items():
            _claim_path(run_dir.path, name, "cfg").write_text(json.dumps(holder))
        assert f"pid {live.pid}" in claims.take("live", "cfg")
        assert "another-host.invalid" in claims.take("other-host", "cfg")
        assert claims.take("dead", "cfg") is None  # stale: taken over
        assert json.loads(_claim_path(run_dir.path, "dead", "cfg").read_text())["pid"] == os.getpid()
        assert claims.take("fresh", "cfg") is None and claims.take("fresh", "cfg") is not None  # ours: held
        claims.release_all()
        assert not _claim_path(run_dir.path, "dead", "cfg").exists()
    finally:
        live.kill()
        live.wait()


def test_a_cell_another_writer_finished_meanwhile_is_not_measured_again(tmp_path):
    """Writer B read the directory before A measured the cell, and takes the claim after A
    released it: B reads the records again and skips the cell."""
    from bench.claims import Claims
    from bench.plan import Cell
    from bench.sweep import Visit, _claim, _counts

    run_dir = RunDir(tmp_path / "run").create()
    claims = Claims(run_dir)
    known = _counts(run_dir.records())  # B's view at its start: nothing
    cell = Cell("resnet18", 64, 64, "infer", 1)
    RunDir(run_dir.path).append({"cell_key": cell.key, "config_id": "c", "status": "error"})  # A, meanwhile
    assert "measured meanwhile" in _claim(claims, run_dir, Visit(cell), "c", known)
    assert not claims.held and not list(claims.dir.glob("*.claim"))
    assert _claim(claims, run_dir, Visit(cell, repeat=1), "c", known) is None  # another repeat: ours
    other = Cell("vit_t", 64, 64, "infer", 1)
    assert _claim(claims, run_dir, Visit(other), "c", known) is None  # a cell nobody measured: ours


def _append_many(path: str, writer: str | None, n: int, tag: int) -> None:
    run_dir = RunDir(path, writer=writer)
    for i in range(n):
        run_dir.append({"cell_key": f"w{tag}|{i}", "status": "ok", "error": "x" * (i % 7) * 300})


@pytest.mark.parametrize("shared_file", [False, True], ids=["shards", "one-file"])
def test_many_concurrent_writers_lose_no_record(tmp_path, shared_file):
    n_writers, per_writer = 6, 200
    path = tmp_path / "run"
    path.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), None if shared_file else f"w{i}", per_writer, i))
             for i in range(n_writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    records, bad = [], 0
    for f in RunDir(path).record_files():
        got, skipped = read_records_counted(f)
        records += got
        bad += skipped
    assert bad == 0 and len(records) == n_writers * per_writer
    assert len({r["cell_key"] for r in records}) == n_writers * per_writer
    assert len(RunDir(path).records()) == n_writers * per_writer
    assert len(RunDir(path).record_files()) == (1 if shared_file else n_writers + 1)


# --------------------------------------------------------------------------------------------
# 6. A failure stays in its cell


OOM_LIMIT = str(5_000_000_000)  # bytes of address space: enough for torch and a 64 px vit_t, not for 2048 px


def test_flops_out_of_memory_stays_in_its_cell(tmp_path):
    out = tmp_path / "run"
    proc = start("run", "--models", "vit_t", "--res", "2048,64", "--modes", "infer", "--budget", "0.1",
                 "--max-time", "10", "--out", str(out), "--no-report",
                 prefix=["prlimit", f"--as={OOM_LIMIT}"], env={"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "2"})
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    big, small = records_of(out)
    assert big["res"] == "2048" and big["status"] in ("oom", "error") and "flops-failed" in big["flags"]
    assert "FLOPs" in big["error"]
    assert small["res"] == "64" and small["status"] == "ok" and small["gmacs"] > 0


def test_flops_command_reports_the_size_that_does_not_fit(tmp_path):
    proc = start("flops", "--models", "vit_t", "--res", "64,2048", "--json",
                 prefix=["prlimit", f"--as={OOM_LIMIT}"], env={"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "2"})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    rows = json.loads(out)
    assert [r["res"] for r in rows] == ["64", "2048"]
    assert rows[0]["status"] == "ok" and rows[1]["status"] in ("oom", "error") and rows[1]["error"]


# --------------------------------------------------------------------------------------------
# 7. Stopping a --nproc 2 job from its parent


def _stop_job(args: list[str], sig: int, ready, timeout: float = 600):
    """Start ``bench ARGS``, wait until ``ready()``, send ``sig`` to the parent only; return
    (exit code, stderr, every process that was under the parent)."""
    proc = start(*args)
    parent = psutil.Process(proc.pid)
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    family = parent.children(recursive=True)
    assert len([p for p in family if "bench.cli" in " ".join(p.cmdline())]) >= 2, family  # the ranks
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err, family


def _gone(procs) -> bool:
    deadline = time.time() + 30
    while time.time() < deadline:
        if not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
            return True
        time.sleep(0.2)
    return False


DDP_RUN = ["run", "--nproc", "2", "--engine", "ddp", "--modes", "train", "--models", "resnet18", "--res", "64,96,128",
           "--budget", "0.1", "--max-time", "30", "--no-report"]


@pytest.mark.multiproc
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.extended)],
                         ids=["SIGTERM", "SIGUSR1"])
def test_stop_signal_to_the_parent_stops_every_rank_at_a_cell_boundary(tmp_path, sig):
    out = tmp_path / "ddp"
    code, err, family = _stop_job([*DDP_RUN, "--out", str(out)], sig,
                                  lambda: bool(read_records_counted(out / "records.jsonl")[0]))
    assert code == 99, err[-3000:]
    assert "stopped the 2-rank job at a cell boundary" in err
    # torchrun did not report the asked-for stop as a failure
    assert "ChildFailedError" not in err and "FAILED" not in err and "Traceback" not in err, err[-3000:]
    records = read_records_counted(out / "records.jsonl")[0]
    assert 1 <= len(records) < 3 and all(r["world_size"] == 2 for r in records)
    assert _gone(family), [p for p in family if p.is_running()]
    resumed = RunDir(out).records()
    assert len({r["cell_key"] for r in resumed}) == len(resumed)  # whole records, no duplicates


@pytest.mark.multiproc
def test_sigint_to_the_parent_interrupts_every_rank(tmp_path):
    out = tmp_path / "ddp"
    code, err, family = _stop_job([*DDP_RUN, "--out", str(out)], signal.SIGINT,
                                  lambda: (out / "claims").is_dir() and bool(list((out / "claims").glob("*.claim"))))
    assert code == 130, err[-3000:]
    assert "interrupted the 2-rank job" in err
    assert "ChildFailedError" not in err, err[-3000:]
    assert _gone(family), [p for p in family if p.is_running()]
    assert not list((out / "claims").glob("*.claim"))  # released on the way out


@pytest.mark.multiproc
def test_a_killed_parent_leaves_no_rank_behind(tmp_path):
    """SIGKILL cannot be forwarded: torchrun gets SIGKILL when its parent dies, and each rank when
    torchrun dies (PR_SET_PDEATHSIG; tests/e2e/test_launch_bounds.py kills torchrun too)."""
    out = tmp_path / "ddp"
    proc = start(*DDP_RUN, "--out", str(out))
    deadline = time.time() + 600
    while not ((out / "claims").is_dir() and list((out / "claims").glob("*.claim"))):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.communicate()
    deadline = time.time() + 90
    while time.time() < deadline and [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
        time.sleep(0.5)
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.multiproc
@pytest.mark.extended  # a finetune stopped between cells: test_finetune signal_stops
def test_sigterm_to_a_finetune_parent_stops_with_99(tmp_path):
    out = tmp_path / "ft"
    args = ["finetune", "--nproc", "2", "--engine", "ddp", "--task", "seg", "--models", "resnet18", "--res", "64",
            "--steps", "50", "--batch", "2", "--fpn-channels", "16", "--train-images", "16", "--val-images", "4",
            "--out", str(out)]
    code, err, family = _stop_job(args, signal.SIGTERM,
                                  lambda: (out / "claims").is_dir() and bool(list((out / "claims").glob("*.claim"))))
    assert code == 99, err[-3000:]
    assert "ChildFailedError" not in err and "Traceback" not in err, err[-3000:]
    assert _gone(family), [p for p in family if p.is_running()]


# --------------------------------------------------------------------------------------------
# 9. bench finetune rejected at load time creates nothing


FT = ["finetune", "--task", "seg", "--models", "resnet18", "--res", "64", "--steps", "2", "--fpn-channels", "16",
      "--train-images", "8", "--val-images", "2"]


def test_finetune_rejected_at_load_time_creates_nothing(tmp_path):
    broken = tmp_path / "inputs" / "broken.pth"
    broken.parent.mkdir()
    broken.write_bytes(b"this is not a checkpoint")
    cases = [
        (["--checkpoint", f"resnet18={tmp_path / 'inputs' / 'missing.pth'}"], "checkpoint not found"),
        (["--checkpoint", f"resnet18={broken}"], ""),
        (["--data", f"ade20k:{tmp_path / 'inputs' / 'no-such-dir'}"], ""),
        (["--batch", "9"], "--batch 9 is larger than the training split"),
        (["--batch", "5", "--nproc", "2", "--engine", "ddp"], "per rank"),
    ]
    work = tmp_path / "cwd"
    work.mkdir()
    # each refusal once (a process each), with and without --out in turn: both kinds of run
    # directory are refused before they exist, and the suite stays in its time (docs/testing.md)
    for i, (extra, words) in enumerate(cases):
        out = ["--out", str(tmp_path / "out")] if i % 2 else []
        proc = run_bench(*FT, *extra, *out, cwd=work, timeout=300)
        assert proc.returncode == 2, (extra, proc.stderr[-2000:])
        assert words in one_line_error(proc), (extra, proc.stderr)
        assert not list(work.iterdir()), (extra, list(work.iterdir()))  # no results/<run id>
        assert not (tmp_path / "out").exists(), extra


# ------------------------------------------------------------------------------------ the small shared helpers
