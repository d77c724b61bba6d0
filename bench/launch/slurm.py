"""SLURM batch submission: turn a ``bench`` command into one job or one array task per cell.

``bench slurm submit [OPTIONS] -- run --models ... --res ...`` renders ``slurm/bench_job.sbatch.j2``
into the run directory as ``slurm_job.sbatch`` (a plain script a user can also ``sbatch`` by hand),
writes ``slurm_plan.json`` (the bench arguments, the cells, the options and every job submitted)
and submits it with ``sbatch``. Every job writes into the same run directory, so the results and
the report are those of a local run.

How a job starts bench (documented in the template header too):

- one node, one task: the batch shell runs ``python -m bench.cli ...``;
- ``--tasks-per-node K``: ``srun`` starts K tasks per node, each a bench rank that reads
  SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (bench.launch.context);
- several nodes or several GPUs per node: ``srun`` starts one task per node running
  ``torchrun --nnodes $SLURM_NNODES --node-rank $SLURM_NODEID --nproc-per-node G`` with a static
  rendezvous: node rank 0 hosts the store at the NodeAddr of the first host of
  SLURM_JOB_NODELIST (emulated or multi-homed nodes need not resolve by name), port
  20000 + job id % 20000 so concurrent jobs do not collide.

The job runs the Python that submitted it (``sys.executable``) from the submit directory, with this
source tree on PYTHONPATH. Every user value reaches the script through ``shlex.quote``; an option
Slurm rejects comes back as sbatch's own message with exit 2.

Preemption: ``--signal=B:USR1@S`` and ``--requeue``; the batch shell forwards USR1 to bench, which
stops at a cell boundary and exits 99; the job then requeues itself and the rerun resumes (bench run
skips cells already recorded). ``bench slurm status`` merges squeue (sacct where accounting exists)
with the records; ``bench slurm resubmit`` sends only the cells that are neither done nor queued.
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.errors import BadInput
from bench.launch.local import PREEMPTED_EXIT, strip_option
from bench.record import RunDir, new_run_id

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the repository: bench/launch/slurm.py
TEMPLATE_DIR = SOURCE_ROOT / "slurm"
TEMPLATE = "bench_job.sbatch.j2"
SCRIPT = "slurm_job.sbatch"
PLAN = "slurm_plan.json"

RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "RESIZING", "SIGNALING"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED", "RESV_DEL_HOLD", "STOPPED"}
STATES = ("done", "running", "pending", "failed", "missing")


# --------------------------------------------------------------------------------------------
# The bench command being submitted
# --------------------------------------------------------------------------------------------
@dataclass
class BenchCommand:
    """The arguments after ``--``, validated by bench's one parser (bench.config.parse_command),
    so a job that can only fail in the queue is never submitted."""

    args: list[str]
    run_dir: Path
    cells: list[dict[str, str]]  # [{"model": ..., "res": ...}], in run order
    cell_keys: dict[str, list[str]]  # "model@res" -> the sweep's cell keys (modes x batches)
    settings_ids: dict[str, str]  # "train" / "infer" -> bench.config.settings id (identity without runtime)


def parse_bench_command(args: tuple[str, ...] | list[str], distributed: bool) -> BenchCommand:
    """Validate the bench command; inject ``--out RUN_DIR`` (absolute) and ``--engine ddp`` for a
    distributed launch when no engine was given. (Threads need nothing: the script sets
    OMP_NUM_THREADS from the CPUs Slurm allocated, which torch follows.)"""
    from bench.config import identity, identity_id, parse_command
    from bench.plan import make_cells

    name, cfg, ctx = parse_command(list(args))
    rest = list(args[1:])
    run_dir = (Path(cfg.out) if cfg.out else Path("results") / new_run_id()).resolve()
    rest = strip_option(rest, "--out") + ["--out", str(run_dir)]
    if distributed:
        if ctx.get_parameter_source("engine") is click.core.ParameterSource.DEFAULT:
            rest += ["--engine", "ddp"]
            cfg.engine = "ddp"
        elif cfg.engine == "none":
            raise BadInput("several nodes, tasks or GPUs need a distributed engine: drop --engine none (ddp is then used)")
    modes = getattr(cfg, "modes", None) or [cfg.task]
    batches = getattr(cfg, "batches", None) or [cfg.batch]
    if name == "profile" and ctx.get_parameter_source("modes_text") is click.core.ParameterSource.DEFAULT:
        modes = ["infer"]
    cells, keys = [], {}
    for c in make_cells(cfg.models, cfg.res, ["infer"], [1]):
        cells.append({"model": c.model, "res": c.res})
        keys[f"{c.model}@{c.res}"] = [k.key for k in make_cells([c.model], [(c.height, c.width)], modes, batches,
                                                                 getattr(cfg, "task", "cls"))]
    settings = {kind: identity_id(identity(cfg, kind == "train", {})) for kind in ("train", "infer")}
    return BenchCommand([name, *rest], run_dir, cells, keys, settings)


def without_sweep(args: list[str]) -> list[str]:
    """``args`` without --models/--res, for array tasks that each add their own cell."""
    return [args[0], *strip_option(strip_option(args[1:], "--models"), "--res")]


# --------------------------------------------------------------------------------------------
# Rendering the script
# --------------------------------------------------------------------------------------------
def _directive_value(name: str, value: str) -> str:
    """Quote a value for an ``#SBATCH`` line. sbatch splits these lines like a shell (quotes,
    concatenation) but treats a backslash as an escape even inside quotes and ends at a newline,
    so those cannot be carried."""
    if any(c in value for c in "\\\n\r\0"):
        raise BadInput(f"{name} cannot contain a backslash or a line break: {value!r}")
    return shlex.quote(value)


def launch_mode(nodes: int, gpus_per_node: int, tasks_per_node: int) -> tuple[str, int]:
    """(launch, processes per srun task); see the module docstring."""
    if tasks_per_node > 1:
        return "tasks", 1
    if nodes > 1 or gpus_per_node > 1:
        return "torchrun", max(gpus_per_node, 1)
    return "single", 1


def render_script(plan: dict[str, Any], cells: list[dict[str, str]] | None, script_name: str) -> str:
    """The batch script for ``plan``; with ``cells``, an array with one task per cell."""
    import jinja2

    o = plan["options"]
    launch, nproc = launch_mode(o["nodes"], o["gpus_per_node"], o["tasks_per_node"])
    run_dir = plan["run_dir"]
    # sbatch expands %-patterns in --output: a literal % in the run directory is written %%.
    log = run_dir.replace("%", "%%") + ("/slurm-%A_%a.out" if cells else "/slurm-%j.out")
    pairs: list[tuple[str, str | None]] = [
        ("--job-name", o["job_name"] or f"bench-{Path(run_dir).name}"),
        ("--output", log),
        ("--open-mode", "append"),
        ("--requeue", None),
        ("--signal", f"B:USR1@{o['signal_before']}"),
        ("--nodes", str(o["nodes"])),
        ("--ntasks-per-node", str(o["tasks_per_node"] if launch == "tasks" else 1)),
    ]
    optional = [("--cpus-per-task", o["cpus_per_task"]), ("--gpus-per-node", o["gpus_per_node"] or None),
                ("--partition", o["partition"]), ("--account", o["account"]), ("--time", o["time"])]
    pairs += [(k, str(v)) for k, v in optional if v is not None]
    if cells:
        pairs.append(("--array", f"0-{len(cells) - 1}"))
    directives = [k if v is None else f"{k}={_directive_value(k, v)}" for k, v in pairs]
    for extra in o["sbatch_opts"]:
        if not extra.startswith("-"):
            raise BadInput(f"--sbatch-opt takes an sbatch option such as --qos=high, not {extra!r}")
        directives.append(_directive_value("--sbatch-opt", extra))

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters["q"] = lambda v: shlex.quote(str(v))
    bench_args = without_sweep(plan["bench_args"]) if cells else plan["bench_args"]
    return env.get_template(TEMPLATE).render(
        run_dir=run_dir, script_name=script_name, directives=directives, python=plan["python"],
        workdir=plan["workdir"], source_root=plan["source_root"], gpus_per_node=o["gpus_per_node"],
        nproc=nproc, launch=launch, tasks_per_node=o["tasks_per_node"], bench_args=bench_args,
        cells=cells or [], signal_before=o["signal_before"], preempted_exit=PREEMPTED_EXIT,
    )


# --------------------------------------------------------------------------------------------
# Talking to Slurm
# --------------------------------------------------------------------------------------------
def sbatch(script: Path, cwd: Path) -> str:
    """Submit ``script``; the job id, or sbatch's own error message as BadInput (exit 2)."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise BadInput("sbatch not found on PATH: run this on a Slurm login node, install Slurm, or use --dry-run")
    proc = subprocess.run([exe, "--parsable", str(script)], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        raise BadInput("; ".join(lines) or f"sbatch exited with status {proc.returncode}")
    return proc.stdout.strip().split(";")[0]


def _query(cmd: list[str]) -> subprocess.CompletedProcess | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None


def queue_states(job_ids: list[str]) -> tuple[dict[tuple[str, str | None], str], list[str]]:
    """Slurm's state of each job and array task: {(job id, array index or None): STATE}, plus
    notes on what could not be asked. squeue first (it keeps finished jobs for MinJobAge), then
    sacct for the rest where accounting is enabled."""
    states: dict[tuple[str, str | None], str] = {}
    notes: list[str] = []
    for jid in job_ids:  # one at a time: squeue fails the whole query on one purged id
        proc = _query(["squeue", "-h", "-r", "-t", "all", "-j", jid, "-o", "%F|%K|%T"])
        if proc is None:
            notes.append("squeue not available: states come from the records only")
            break
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            notes.append(f"squeue failed ({why}): states come from the records only")
            break
        for line in proc.stdout.splitlines():
            job, _, rest = line.partition("|")
            idx, _, state = rest.partition("|")
            if job and state:
                states[(job, None if idx in ("N/A", "") else idx)] = state.strip()
    unknown = [j for j in job_ids if not any(k[0] == j for k in states)]
    if unknown and not notes:
        proc = _query(["sacct", "-n", "-P", "-X", "-j", ",".join(unknown), "-o", "JobID,State"])
        if proc is None or proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["sacct failed"])[-1] if proc else "sacct not available"
            notes.append(f"jobs {', '.join(unknown)} are no longer in the queue and sacct cannot tell ({why})")
        else:
            for line in proc.stdout.splitlines():
                jobid, _, state = line.partition("|")
                job, _, idx = jobid.partition("_")
                if state and not idx.startswith("["):
                    states[(job, idx or None)] = state.split()[0]
    return states, notes


# --------------------------------------------------------------------------------------------
# Cell states
# --------------------------------------------------------------------------------------------
def cell_states(plan: dict[str, Any], records: list[dict[str, Any]],
                queue: dict[tuple[str, str | None], str]) -> list[dict[str, Any]]:
    """One row per planned cell (model x resolution): done when every one of its sweep cells
    (modes x batches) has an ok/oom record of the same configuration (the resume identity without
    the runtime: ``settings_id``), else running / pending from the latest job that covers it, else
    failed (an error record, or its job ended without recording it), else missing."""
    settings = set((plan.get("settings_ids") or {}).values())
    finished = {r.get("cell_key") for r in records if r.get("status") in ("ok", "oom")
                and (not settings or r.get("settings_id") in settings)}
    rows = []
    for cell in plan["cells"]:
        mine = [r for r in records if r.get("model") == cell["model"] and str(r.get("res")) == cell["res"]]
        expected = (plan.get("cell_keys") or {}).get(f"{cell['model']}@{cell['res']}") or []
        done = bool(expected) and all(k in finished for k in expected)
        job_ref, slurm_state = None, None
        for job in plan["jobs"]:
            if cell not in job["cells"]:
                continue
            idx = str(job["cells"].index(cell)) if job["array"] else None
            job_ref = f"{job['job_id']}_{idx}" if idx is not None else job["job_id"]
            slurm_state = queue.get((job["job_id"], idx))
        if done:
            state = "done"
        elif slurm_state in RUNNING:
            state = "running"
        elif slurm_state in PENDING:
            state = "pending"
        elif any(r.get("status") == "error" for r in mine) or slurm_state is not None:
            state = "failed"
        else:
            state = "missing"
        rows.append({**cell, "state": state, "job": job_ref, "slurm_state": slurm_state,
                     "records": len(mine), "errors": sum(r.get("status") == "error" for r in mine)})
    return rows


_PLAN_KEYS = {"bench_args": list, "cells": list, "cell_keys": dict, "run_dir": str, "python": str, "workdir": str,
              "source_root": str, "options": dict, "jobs": list}
_OPTION_KEYS = ("partition", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "time", "account",
                "job_name", "signal_before", "sbatch_opts", "array_per_cell")


def load_plan(run_dir: Path) -> dict[str, Any]:
    """``slurm_plan.json``, checked: a missing key or a wrong type is one line, exit 2."""
    path = run_dir / PLAN
    if not path.exists():
        raise BadInput(f"{run_dir} has no {PLAN}: it was not submitted with 'bench slurm submit'")
    try:
        plan = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not valid JSON ({e})") from None
    if not isinstance(plan, dict):
        raise BadInput(f"{path} is not a bench slurm plan (expected a JSON object)")
    for key, kind in _PLAN_KEYS.items():
        if not isinstance(plan.get(key), kind):
            raise BadInput(f"{path} is missing '{key}' (or it is not a {kind.__name__}); resubmit with "
                           "'bench slurm submit' into a new --out")
    missing = [k for k in _OPTION_KEYS if k not in plan["options"]]
    bad_cells = [c for c in plan["cells"] if not (isinstance(c, dict) and isinstance(c.get("model"), str)
                                                   and isinstance(c.get("res"), str))]
    bad_jobs = [j for j in plan["jobs"] if not (isinstance(j, dict) and {"job_id", "array", "cells"} <= j.keys())]
    if missing or bad_cells or bad_jobs:
        what = f"options {', '.join(missing)}" if missing else ("a cell" if bad_cells else "a job")
        raise BadInput(f"{path} is malformed ({what} missing or of the wrong type)")
    return plan


def current_states(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    plan = load_plan(run_dir)
    queue, notes = queue_states([j["job_id"] for j in plan["jobs"]])
    return plan, cell_states(plan, RunDir(run_dir).records(), queue), notes


# --------------------------------------------------------------------------------------------
# Submitting
# --------------------------------------------------------------------------------------------
def submit_plan(plan: dict[str, Any], cells: list[dict[str, str]], script_name: str, dry_run: bool) -> str | None:
    """Render, write and submit one job covering ``cells``, then record it in the plan. A
    submission sbatch refuses leaves nothing behind."""
    array = plan["options"]["array_per_cell"]
    script = render_script(plan, cells if array else None, script_name)
    if dry_run:
        click.echo(script, nl=False)
        return None
    run = RunDir(plan["run_dir"])
    created = not run.path.exists()
    run.create()
    path = run.path / script_name
    path.write_text(script)
    path.chmod(0o755)
    try:
        job_id = sbatch(path, Path(plan["workdir"]))
    except BadInput:
        path.unlink()
        if created:
            run.path.rmdir()
        raise
    plan["jobs"].append({
        "job_id": job_id, "array": array, "cells": cells, "script": script_name,
        "submitted_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    run.write_json(PLAN, plan)
    return job_id


def submit(o: dict[str, Any]) -> list[str]:
    """``bench slurm submit``: the lines to print."""
    launch, _ = launch_mode(o["nodes"], o["gpus_per_node"], o["tasks_per_node"])
    cmd = parse_bench_command(o["bench_args"], distributed=launch != "single")
    plan = {
        "bench_args": cmd.args,
        "cells": cmd.cells,
        "cell_keys": cmd.cell_keys,
        "settings_ids": cmd.settings_ids,
        "run_dir": str(cmd.run_dir),
        "python": sys.executable,
        "workdir": os.getcwd(),
        "source_root": str(SOURCE_ROOT),
        "options": {
            "partition": o["partition"], "nodes": o["nodes"], "gpus_per_node": o["gpus_per_node"],
            "tasks_per_node": o["tasks_per_node"], "cpus_per_task": o["cpus_per_task"], "time": o["time_limit"],
            "account": o["account"], "job_name": o["job_name"], "signal_before": o["signal_before"],
            "sbatch_opts": list(o["sbatch_opts"]), "array_per_cell": o["array_per_cell"],
        },
        "jobs": [],
    }
    if (cmd.run_dir / PLAN).exists() and not o["dry_run"]:
        raise BadInput(f"{cmd.run_dir} already has {PLAN}; use 'bench slurm resubmit {cmd.run_dir}' or a new --out")
    job_id = submit_plan(plan, cmd.cells, SCRIPT, o["dry_run"])
    if job_id is None:
        return []
    what = f"array of {len(cmd.cells)} cells" if o["array_per_cell"] else f"{len(cmd.cells)} cells"
    return [f"Submitted batch job {job_id} ({what}) into {cmd.run_dir}"]


def print_status(run_dir: Path, as_json: bool) -> None:
    """``bench slurm status``: which cells are done, running, pending, failed or missing."""
    _, rows, notes = current_states(run_dir)
    if as_json:
        click.echo(json.dumps({"cells": rows, "notes": notes}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    colour = {"done": "green", "running": "cyan", "pending": "yellow", "failed": "red", "missing": "magenta"}
    table = Table(title=f"SLURM cells in {run_dir}")
    for col in ("model", "res", "state", "job", "slurm state", "records"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["res"], f"[{colour[r['state']]}]{r['state']}[/]", r["job"] or "-",
                      r["slurm_state"] or "-", f"{r['records']} ({r['errors']} error)" if r["errors"] else str(r["records"]))
    console = Console()
    console.print(table)
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for note in notes:
        console.print(f"note: {note}")


def resubmit(run_dir: Path, dry_run: bool) -> list[str]:
    """``bench slurm resubmit``: only the cells that are neither done nor queued."""
    plan, rows, _ = current_states(run_dir)
    todo = [{"model": r["model"], "res": r["res"]} for r in rows if r["state"] in ("failed", "missing")]
    if not todo:
        return ["Nothing to resubmit: every cell is done, running or pending."]
    script_name = f"slurm_job.resubmit-{len(plan['jobs'])}.sbatch"
    job_id = submit_plan(plan, todo, script_name, dry_run)
    if job_id is None:
        return []
    return [f"Submitted batch job {job_id} for {len(todo)} cells: " + ", ".join(f"{c['model']}@{c['res']}" for c in todo)]
