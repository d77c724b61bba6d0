"""One sweep loop for ``bench run`` and ``bench finetune``: run directory, invocation log, resume,
claims, preemption, progress, summary.

A scenario (bench.scenarios.step, bench.scenarios.finetune) says what its cells are, what one
cell measures and how to summarise; the sweep does everything around the cells, the same way for
both:

- Resume identity is (cell key, config id): the config id hashes ``bench.config.identity`` of the
  command's configuration plus the runtime (world size, device name and count, threads per rank),
  so changing any measuring setting measures new cells and an identical command skips them.
- Rank 0 reads the run directory, decides the to-do list and broadcasts it; no other rank reads
  the file system for it.
- Concurrent writers into one ``--out`` (SLURM array tasks share one) each claim a cell before
  measuring it (bench.claims: an exclusive claim file per cell identity under ``claims/``,
  released when the cell ends, a stale one taken over); a cell another live writer holds is
  skipped, and said so.
- SIGUSR1 / SIGTERM stop the sweep at the next cell boundary with exit code 99
  (bench.launch.signals).
- In a job of several ranks, each cell's outcome is exchanged after it (bench.launch.context.
  exchange_outcomes). A failure every rank decided alike -- the cap, the set-up limit, an OOM on
  every rank, a FLOP count that failed on rank 0 and was broadcast -- ends that cell and the sweep
  goes on; any other failure, or a rank that does not answer, ends the job (exit 1).

The sweep neither renders the report nor knows a command: the command that called it does that
with the ``SweepResult`` it gets back.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import json
import random
import secrets
import shlex
import socket
import sys
from dataclasses import dataclass
from typing import Any, Protocol

import click
from rich.markup import escape

from bench.claims import Claims
from bench.config import identity, identity_id
from bench.errors import BadInput
from bench.launch.context import DistContext, all_reduce_max, barrier, broadcast_object, exchange_outcomes
from bench.launch.signals import PREEMPTED_EXIT, StopFlag  # 99: the code the SLURM template requeues on
from bench.plan import Cell
from bench.record import (
    RecordWriteError,
    RunDir,
    cell_identity,
    check_record,
    default_run_dir,
    timestamp,
    writer_name,
)

# export-failed: the exporter's refusal is the cell's finding (bench.deploy), not retried on resume
FINISHED = ("ok", "oom", "export-failed")
# How a cell may fail on every rank by one decision, so the ranks stay in step: flags first, then status.
AGREED_FAILURES = ("setup-timeout", "time-cap", "flops-failed", "oom")


_SWEEP_NUMBERS = itertools.count()


def cell_outcome(rec: dict) -> str:
    """"ok", the agreed failure a record shows (AGREED_FAILURES), or "error"."""
    if rec.get("status") == "ok":
        return "ok"
    flags = rec.get("flags") or []
    return next((kind for kind in AGREED_FAILURES if kind in flags or rec.get("status") == kind), "error")


def outcomes_agreed(outcomes: list[str] | None) -> bool:
    """Every rank answered, and all measured the cell or all failed it by an agreed decision."""
    if not outcomes:
        return False
    return all(o == "ok" for o in outcomes) or all(o in AGREED_FAILURES for o in outcomes)


class CellOutcome(Protocol):
    """A scenario's typed result for one cell; ``to_record`` is its JSON record."""

    def to_record(self) -> dict[str, Any]: ...


class Scenario(Protocol):
    """What a sweep needs from a kind of cell."""

    config: Any  # RunConfig | FinetuneConfig

    def cells(self) -> list[Cell]: ...

    def prepare(self, ctx: DistContext, run_dir: RunDir, todo: list[Cell]) -> None: ...

    def run(self, cell: Cell, ctx: DistContext, history: list[dict]) -> CellOutcome: ...

    def summarize(self, records: list[dict], run_dir: RunDir, ctx: DistContext, console) -> None: ...


@dataclass
class SweepResult:
    run_dir: RunDir
    records: list[dict]
    exit_code: int = 0


def runtime_identity(ctx: DistContext) -> dict[str, Any]:
    """Facts of this process that change a measurement: world size, nodes, device name and count, threads.

    ``nodes`` enters only when the ranks span several nodes: a single-node run then hashes exactly
    as before, so existing run directories still resume and ``bench compare`` still matches them,
    while 2 nodes x 1 rank and 1 node x 2 ranks (one ``--nodes 1,2`` study) are two cells."""
    import torch

    from bench.environment import device_name

    runtime = {
        "world_size": ctx.world_size,
        "device_name": device_name(ctx.device),
        "device_count": torch.cuda.device_count() if ctx.device.type == "cuda" else 1,
        "threads": torch.get_num_threads(),
    }
    if ctx.nodes > 1:
        runtime["nodes"] = ctx.nodes
    return runtime


def record_invocation(run_dir: RunDir, command: str, ctx: DistContext, config=None) -> str:
    """Append this command, its whole configuration and the environment to invocations.jsonl
    (and env.json on a new directory); its id."""
    from dataclasses import asdict

    from bench.environment import collect_env

    env = collect_env(command, ctx.device, run_dir.path.name)
    if config is not None:
        env.update(kind=config.kind, settings=asdict(config))
    inv_id = secrets.token_hex(6)
    run_dir.append_invocation({"invocation": inv_id, **env})
    if not (run_dir.path / "env.json").exists():
        run_dir.write_json("env.json", env)
    return inv_id


def run_sweep(scenario: Scenario, ctx: DistContext, console) -> SweepResult:
    """Run every cell of ``scenario`` not already finished in its run directory."""
    cfg = scenario.config
    run_dir = RunDir(broadcast_object(str(cfg.out or default_run_dir()), ctx), writer_name())
    invocation = _open_run_dir(run_dir, cfg, ctx)
    sweep = _Sweep(scenario, ctx, console, run_dir, invocation, _todo(scenario, run_dir, ctx, console))
    if sweep.todo.visits:
        from bench.measure.memory import freeze_startup_objects  # torch is loaded by now

        freeze_startup_objects()
        scenario.prepare(ctx, run_dir, list(dict.fromkeys(v.cell for v in sweep.todo.visits)))
    new_records, exit_code = sweep.run_cells()
    if ctx.is_main and exit_code != PREEMPTED_EXIT:
        scenario.summarize(new_records, run_dir, ctx, console)
    if ctx.is_main:
        _say_unmeasured(sweep, new_records, console)
    return SweepResult(run_dir, new_records, exit_code)


def _say_unmeasured(sweep: "_Sweep", new_records: list[dict], console) -> None:
    """The visits this run did not measure, said last so that none goes missing silently: those
    another writer held, those that failed, and those a stop left for a rerun."""
    failed = [f"{r.get('cell_key')} ({r.get('status')}: {r.get('error')})" for r in new_records
              if r.get("status") not in FINISHED]
    reached = len(new_records) + len(sweep.unmeasured)
    left = [f"{v.claim_key} (not reached)" for v in sweep.todo.visits[reached:]]
    lines = sweep.unmeasured + failed + left
    if lines:
        console.print(f"[yellow]left unmeasured by this run ({len(lines)}):[/] " + escape("; ".join(lines)))


def _open_run_dir(run_dir: RunDir, cfg, ctx: DistContext) -> str | None:
    """Rank 0 creates the run directory and logs the invocation; every rank gets its id."""
    invocation = None
    if ctx.is_main:
        run_dir.check_writable()  # before creating anything (records.jsonl a directory, a symlink)
        try:
            run_dir.create()
        except OSError as exc:
            raise BadInput(f"cannot create the run directory {run_dir.path} ({exc.strerror or exc})") from None
        with _write_errors(run_dir, "the invocation log"):
            invocation = record_invocation(run_dir, shlex.join(["bench", *sys.argv[1:]]), ctx, cfg)
    invocation = broadcast_object(invocation, ctx)
    barrier(ctx)
    return invocation


@dataclass(frozen=True)
class Visit:
    """One measurement of a cell: ``repeat`` 0..N-1 of ``--repeats N``."""

    cell: Cell
    repeat: int = 0

    @property
    def claim_key(self) -> str:
        return self.cell.key if self.repeat == 0 else f"{self.cell.key}#repeat{self.repeat}"


def visit_order(cells: list[Cell], repeats: int, seed: int) -> list[Visit]:
    """Every cell once per round, round after round (Kalibera & Jones' multi-level design: drift on
    the machine then hits every model alike). With several rounds each round's order is shuffled
    from ``seed`` (Google Benchmark's random interleaving), so no model always follows the same
    neighbour; one round keeps the given order (model-major, one model built per resolution)."""
    if repeats <= 1:
        return [Visit(c, 0) for c in cells]
    visits = []
    for r in range(repeats):
        order = list(cells)
        random.Random(seed * 1_000_003 + r).shuffle(order)
        visits += [Visit(c, r) for c in order]
    return visits


def visit_identity(rec: dict) -> tuple[str, str, int] | None:
    """(cell key, config id, repeat) of a record; a record written before repeats is repeat 0."""
    ident = cell_identity(rec)
    repeat = rec.get("repeat", 0)
    if ident is None or not isinstance(repeat, int) or isinstance(repeat, bool):
        return None
    return (*ident, repeat)


@dataclass
class _Todo:
    """What this writer measures, in order, and what it needs to know about the directory."""

    visits: list[Visit]
    ids: dict[str, str]  # cell key -> resume identity (config id, runtime included)
    settings_ids: dict[str, str]  # cell key -> the same without the runtime (SLURM status compares these)
    history: list[dict]  # well-formed records already there (rank 0), then each new one
    known: dict[tuple[str, str, int], int]  # records per visit at the start: more later = another writer's


def _todo(scenario: Scenario, run_dir: RunDir, ctx: DistContext, console) -> _Todo:
    """Rank 0 reads the directory and decides which visits are left; the other ranks get its list.
    Resume counts repeats: a visit is done when a finished record with its identity and repeat exists."""
    cfg = scenario.config
    runtime = runtime_identity(ctx)
    cells = list(dict.fromkeys(scenario.cells()))
    ids = {c.key: identity_id({**identity(cfg, c.train, runtime), "cell": _cell_settings(cfg, c)}) for c in cells}
    settings_ids = {c.key: identity_id(identity(cfg, c.train, {})) for c in cells}
    visits = visit_order(cells, getattr(cfg, "repeats", 1), getattr(cfg, "order_seed", 0))
    history: list[dict] = []
    known: dict[tuple[str, str, int], int] = {}
    todo: list[int] | None = None
    if ctx.is_main:
        readable = run_dir.records()  # one warning if some lines are unreadable
        history = readable  # valid records only (RunDir.records checks each): what scenarios compute with
        done = _finished(readable)
        known = _counts(readable)
        skipped = [v for v in visits if (v.cell.key, ids[v.cell.key], v.repeat) in done]
        if skipped:
            console.print(f"[yellow]resume:[/] skipping {len(skipped)} finished cells in {run_dir.path}: "
                          + ", ".join(v.claim_key for v in skipped))
        todo = [i for i, v in enumerate(visits) if v not in skipped]
    todo = broadcast_object(todo, ctx)
    return _Todo([visits[i] for i in todo], ids, settings_ids, history, known)


@dataclass
class _Sweep:
    """One sweep in progress: the loop over the cells, a stop at a cell boundary, claims."""

    scenario: Scenario
    ctx: DistContext
    console: Any
    run_dir: RunDir
    invocation: str | None
    todo: _Todo

    def run_cells(self) -> tuple[list[dict], int]:
        """The new records and the exit code: 0, PREEMPTED_EXIT (a stop was asked for) or 1 (a
        cell failed in a distributed job other than by a decision every rank agreed on, so the
        ranks may now be out of step)."""
        stop = StopFlag.shared().install()
        self.sweep_number = next(_SWEEP_NUMBERS)  # the same on every rank: each runs the same sweeps
        self.unmeasured: list[str] = []  # visits this writer left to another, and why
        claims = Claims(self.run_dir)
        new_records: list[dict] = []
        try:
            with _progress(self.console) as progress:
                bar = progress.add_task("cells", total=len(self.todo.visits))
                for index, visit in enumerate(self.todo.visits):
                    cell = visit.cell
                    if self._stop_agreed(stop):
                        self.console.print(f"[red]preempted[/] (signal {stop.signal}): stopped at a cell boundary; "
                                           f"rerun with --out {self.run_dir.path} to resume")
                        return new_records, PREEMPTED_EXIT
                    again = f" repeat {visit.repeat}" if visit.repeat else ""
                    progress.update(bar, description=f"{cell.model} {cell.res} {cell.mode} b{cell.batch}{again}")
                    rec = self._measure(visit, claims, index)
                    progress.advance(bar)
                    if rec is None:
                        continue
                    new_records.append(rec)
                    if self.ctx.distributed and not self._ranks_in_step(rec, index):
                        return new_records, 1
        finally:
            claims.release_all()
        if self._stop_agreed(stop):
            # Asked for during the last cell: every cell is recorded, but the caller asked us to
            # stop, and says so with the same exit code (nothing is left to resume).
            self.console.print(f"[red]preempted[/] (signal {stop.signal}) during the last cell; every cell is "
                               f"recorded in {self.run_dir.path}")
            return new_records, PREEMPTED_EXIT
        return new_records, 0

    def _ranks_in_step(self, rec: dict, index: int) -> bool:
        """After a cell of a distributed job: may the sweep go on? Says why not, or that an agreed
        failure ended only its cell."""
        mine = cell_outcome(rec)
        wait_s = 2 * getattr(self.scenario.config, "timeout", 300.0)
        outcomes = exchange_outcomes(f"{self.run_dir.path.name}/{self.sweep_number}/{index}", mine, self.ctx, wait_s)
        if not outcomes_agreed(outcomes):
            said = "no answer from every rank" if outcomes is None else "outcomes per rank " + ", ".join(outcomes)
            # escape(): an error may quote "[/path/file.cc:129]", which rich would read as markup.
            self.console.print(f"[red]rank {self.ctx.rank}: cell {rec.get('cell_key')} failed in a "
                               f"{self.ctx.world_size}-rank job:[/] {escape(str(rec.get('error') or mine))} "
                               f"({said}); ending the job")
            return False
        if mine != "ok" and self.ctx.is_main:
            self.console.print(f"[yellow]cell {rec.get('cell_key')} failed on every rank ({mine}):[/] "
                               f"{escape(str(rec.get('error')))}; going on with the next cell")
        return True

    def _stop_agreed(self, stop: StopFlag) -> bool:
        """A collective: every rank stops at the same boundary if any rank got the signal."""
        return bool(all_reduce_max(1.0 if stop.signal else 0.0, self.ctx))

    def _measure(self, visit: Visit, claims: Claims, index: int) -> dict | None:
        """Claim ``visit``, measure it and append its record; None when another writer has it.
        Each visit measures from scratch: the model is built again, since the variance between
        builds and processes is part of what repeats are for."""
        ctx, cell, key = self.ctx, visit.cell, visit.cell.key
        config_id = self.todo.ids[key]
        holder = None
        if ctx.is_main:
            with _write_errors(self.run_dir, f"the claim of {visit.claim_key}"):
                holder = _claim(claims, self.run_dir, visit, config_id, self.todo.known)
        holder = broadcast_object(holder, ctx)
        if holder:
            self.console.print(f"[yellow]skip:[/] {escape(visit.claim_key)} {escape(holder)}")
            self.unmeasured.append(f"{visit.claim_key} ({holder})")
            return None
        try:
            rec = self.scenario.run(cell, ctx, self.todo.history).to_record()
            rec.update(cell_key=key, config_id=config_id, settings_id=self.todo.settings_ids[key],
                       repeat=visit.repeat, repeats=getattr(self.scenario.config, "repeats", 1),
                       order_seed=getattr(self.scenario.config, "order_seed", None),
                       invocation=self.invocation, run_id=self.run_dir.path.name, timestamp=timestamp(),
                       hostname=socket.gethostname(), cell_index=index)
            rec = check_record(rec)
            if ctx.is_main:
                _append_or_die(self.run_dir, rec)
        finally:
            if ctx.is_main:
                claims.release(visit.claim_key, config_id)
        self.todo.history.append(rec)
        return rec


def _cell_settings(cfg, cell: Cell) -> Any:
    """Per-cell settings outside the shared config (a fine-tune's checkpoint for this model)."""
    checkpoints = getattr(cfg, "checkpoints", None) or {}
    return checkpoints.get(cell.model)


class WriteFailed(click.ClickException):
    """The run directory cannot be written (disk full, quota, I/O error): one line, exit 1."""

    exit_code = 1


@contextlib.contextmanager
def _write_errors(run_dir: RunDir, what: str):
    try:
        yield
    except OSError as exc:
        reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        raise WriteFailed(f"cannot write {what} in {run_dir.path} ({reason})") from None


def _finished(records: list[dict]) -> set[tuple[str, str, int]]:
    """Visits (cell identity, repeat) with a finished (ok / oom) record; records of the wrong
    shape count for none."""
    out = set()
    for r in records:
        ident = visit_identity(r)
        if ident is not None and isinstance(r.get("status"), str) and r["status"] in FINISHED:
            out.add(ident)
    return out


def _counts(records: list[dict]) -> dict[tuple[str, str, int], int]:
    out: dict[tuple[str, str, int], int] = {}
    for r in records:
        ident = visit_identity(r)
        if ident is not None:
            out[ident] = out.get(ident, 0) + 1
    return out


def _claim(claims: Claims, run_dir: RunDir, visit: Visit, config_id: str, known: dict) -> str | None:
    """None when this writer should measure the visit now; else why not (for the skip message).
    After taking the claim the records are read again: a writer that started with us may have
    measured the visit and released its claim before we got here."""
    holder = claims.take(visit.claim_key, config_id)
    if holder:
        return f"is being measured by {holder}"
    records, ident = run_dir.records(warn=False), (visit.cell.key, config_id, visit.repeat)
    if ident in _finished(records) or _counts(records).get(ident, 0) > known.get(ident, 0):
        claims.release(visit.claim_key, config_id)
        return "was measured meanwhile by another writer into this directory"
    return None


def _append_or_die(run_dir: RunDir, rec: dict) -> None:
    """A record that cannot be written is printed whole to stderr (so it is not lost); exit 1."""
    try:
        run_dir.append(rec)
    except (RecordWriteError, OSError) as exc:
        print(json.dumps(rec, sort_keys=True, default=str), file=sys.stderr)
        reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        print(f"Error: cannot write the record of {rec.get('cell_key')} to {run_dir.records_path} ({reason}); "
              "it is printed above as JSON", file=sys.stderr)
        sys.exit(1)


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def make_console(ctx: DistContext):
    """Rank 0 speaks; wide enough for the summary table when stderr is a log file."""
    from rich.console import Console

    return Console(stderr=True, quiet=not ctx.is_main, width=None if sys.stderr.isatty() else 200)


