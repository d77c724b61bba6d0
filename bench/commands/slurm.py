"""``bench slurm submit | status | resubmit``: a ``bench`` command as one SLURM job or one array
task per cell, and following it.

``bench slurm submit [OPTIONS] -- run --models ... --res ...`` validates the bench command with
bench's one parser, renders the batch script (bench.launch.slurm) into the run directory as
``slurm_job.sbatch`` (a plain script a user can also ``sbatch`` by hand), writes
``slurm_plan.json`` (the bench arguments, the cells, the options and every job submitted) and
submits it. Every job writes into the same run directory, so the results and the report are those
of a local run.

``bench slurm status`` merges squeue (sacct where accounting exists) with the records;
``bench slurm resubmit`` sends only the cells that are neither done nor queued.

``--nodes 1,2,4`` (a scaling study) submits one job per node count into the same run directory:
Slurm sizes a job, and every task of an array, by one ``--nodes``, so an array cannot hold several
node counts. The jobs write their own shards (bench.record.writer_name) and the node count is part
of each cell's resume identity (bench.sweep.runtime_identity), so they neither collide nor take
each other's cells as done; status and resubmit go per node count (records' ``nodes``).
"""
from __future__ import annotations

import datetime
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.claims import claim_holders
from bench.config import identity, identity_id, parse_command, parse_int
from bench.errors import BadInput
from bench.launch.local import strip_option
from bench.launch.slurm import SOURCE_ROOT, launch_mode, queue_states, render_script, sbatch
from bench.plan import make_cells
from bench.record import RunDir, default_run_dir

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
    name, cfg, ctx = parse_command(list(args))
    rest = list(args[1:])
    run_dir = (Path(cfg.out) if cfg.out else default_run_dir()).resolve()
    rest = strip_option(rest, "--out") + ["--out", str(run_dir)]
    if distributed and getattr(cfg, "repeats", None) == "auto":
        raise BadInput("--repeats auto starts fresh bench processes itself, which the ranks of a job of several "
                       "nodes, tasks or GPUs cannot; give a number (--repeats 3)")
    if distributed:
        from bench.engines import DEFAULT_DISTRIBUTED, get_engine

        if ctx.get_parameter_source("engine") is click.core.ParameterSource.DEFAULT:
            rest += ["--engine", DEFAULT_DISTRIBUTED]
            cfg.engine = DEFAULT_DISTRIBUTED
        elif not get_engine(cfg.engine).distributed:
            raise BadInput("several nodes, tasks or GPUs need a distributed engine: "
                           f"drop --engine {cfg.engine} ({DEFAULT_DISTRIBUTED} is then used)")
    modes = getattr(cfg, "modes", None) or [cfg.task]
    batches = getattr(cfg, "batches", None) or [cfg.batch]
    cells, keys = [], {}
    for c in make_cells(cfg.models, cfg.res, ["infer"], [1]):
        cells.append({"model": c.model, "res": c.res})
        keys[f"{c.model}@{c.res}"] = [k.key for k in make_cells([c.model], [(c.height, c.width)], modes, batches,
                                                                 getattr(cfg, "task", "cls"))]
    settings = {kind: identity_id(identity(cfg, kind == "train", {})) for kind in ("train", "infer")}
    return BenchCommand([name, *rest], run_dir, cells, keys, settings)



def parse_node_counts(text: str) -> list[int]:
    """``--nodes``: one node count (``2``) or a comma list of distinct ones (``1,2,4``), in the
    order given; 0, a repeat or an empty item is refused (BadInput: one line, exit 2)."""
    items = [t.strip() for t in str(text).split(",")]
    if not all(items):
        raise BadInput(f"bad --nodes '{text}': give node counts >= 1 separated by commas, e.g. --nodes 1,2,4")
    counts = [parse_int(t, "node count") for t in items]
    repeated = sorted({n for n in counts if counts.count(n) > 1})
    if repeated:
        raise BadInput(f"--nodes lists {', '.join(map(str, repeated))} twice: give each node count once")
    return counts


# --------------------------------------------------------------------------------------------
# Cell states
# --------------------------------------------------------------------------------------------
def node_counts(plan: dict[str, Any]) -> list[int]:
    """The plan's node counts; an older plan's single ``"nodes": N`` reads as [N]."""
    nodes = (plan.get("options") or {}).get("nodes", 1)
    return list(nodes) if isinstance(nodes, list) else [nodes]


def cell_states(plan: dict[str, Any], records: list[dict[str, Any]],
                queue: dict[tuple[str, str | None], str]) -> list[dict[str, Any]]:
    """One row per planned cell (model x resolution) and node count: done when every one of its
    sweep cells (modes x batches) has an ok/oom record of the same configuration (the resume
    identity without the runtime: ``settings_id``) measured on that many nodes, else running /
    pending from the latest job of that node count that covers it, else failed (an error record,
    or its job ended without recording it), else missing. With one node count the records' ``nodes``
    is not asked (records written before it have none)."""
    settings = set((plan.get("settings_ids") or {}).values())
    counts = node_counts(plan)
    rows = []
    for nodes in counts:
        mine = records if len(counts) == 1 else [r for r in records if r.get("nodes") == nodes]
        jobs = [j for j in plan["jobs"] if j.get("nodes", counts[0]) == nodes]
        rows += _states_at(plan, nodes, mine, jobs, settings, queue)
    return rows


def _states_at(plan: dict[str, Any], nodes: int, records: list[dict[str, Any]], jobs: list[dict[str, Any]],
               settings: set[str], queue: dict[tuple[str, str | None], str]) -> list[dict[str, Any]]:
    """cell_states' rows of one node count, from its records and its jobs."""
    finished = {r.get("cell_key") for r in records if r.get("status") in ("ok", "oom")
                and (not settings or r.get("settings_id") in settings)}
    rows = []
    for cell in plan["cells"]:
        mine = [r for r in records if r.get("model") == cell["model"] and str(r.get("res")) == cell["res"]]
        expected = (plan.get("cell_keys") or {}).get(f"{cell['model']}@{cell['res']}") or []
        done = bool(expected) and all(k in finished for k in expected)
        job_ref, slurm_state = None, None
        for job in jobs:
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
        rows.append({**cell, "nodes": nodes, "state": state, "job": job_ref, "slurm_state": slurm_state,
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
    bad_cells = [c for c in plan["cells"] if not _is_cell(c)]
    bad_jobs = [j for j in plan["jobs"] if not (isinstance(j, dict) and {"job_id", "array", "cells"} <= j.keys())]
    if missing or bad_cells or bad_jobs:
        what = f"options {', '.join(missing)}" if missing else ("a cell" if bad_cells else "a job")
        raise BadInput(f"{path} is malformed ({what} missing or of the wrong type)")
    wrong = _wrong_field(plan)
    if wrong:
        raise BadInput(f"{path} is malformed ({wrong}); resubmit with 'bench slurm submit' into a new --out")
    plan["options"]["nodes"] = node_counts(plan)  # an older plan's single count, as the list a new one writes
    from bench.launch.local import check_out_dir

    check_out_dir(plan["run_dir"])  # /proc/x, a file: one line, before anything reads or writes there
    return plan


def _is_cell(c: Any) -> bool:
    return isinstance(c, dict) and isinstance(c.get("model"), str) and isinstance(c.get("res"), str)


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_node_counts(v: Any) -> bool:
    """A plan's ``nodes``: a list of distinct counts >= 1, or one count (a plan written before lists)."""
    if isinstance(v, list):
        return bool(v) and all(_is_int(n, 1) for n in v) and len(set(v)) == len(v)
    return _is_int(v, 1)


# The options' types as `bench slurm submit` writes them (click's INT / STRING / flags); the plan
# is a hand-editable JSON file, so each is checked here (no schema library is a dependency).
_OPTION_CHECKS: dict[str, Any] = {
    "nodes": _is_node_counts, "gpus_per_node": lambda v: _is_int(v, 0),
    "tasks_per_node": lambda v: _is_int(v, 1), "signal_before": lambda v: _is_int(v, 1),
    "cpus_per_task": lambda v: v is None or _is_int(v, 1),
    "partition": lambda v: v is None or isinstance(v, str), "account": lambda v: v is None or isinstance(v, str),
    "time": lambda v: v is None or isinstance(v, str), "job_name": lambda v: v is None or isinstance(v, str),
    "sbatch_opts": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "array_per_cell": lambda v: isinstance(v, bool),
}


def _wrong_field(plan: dict[str, Any]) -> str | None:
    """The first field of the plan whose type or value is wrong, in words; None when all are right."""
    for name, ok in _OPTION_CHECKS.items():
        if not ok(plan["options"][name]):
            return f"options.{name} is {plan['options'][name]!r}"
    if not plan["bench_args"] or not all(isinstance(a, str) for a in plan["bench_args"]):
        return "bench_args must be a list of strings"
    if not Path(plan["run_dir"]).is_absolute():
        return f"run_dir {plan['run_dir']!r} is not an absolute path"
    for i, job in enumerate(plan["jobs"]):
        if not isinstance(job["job_id"], str) or not job["job_id"]:
            return f"jobs[{i}].job_id is {job['job_id']!r}, not a job id string"
        if not isinstance(job["array"], bool):
            return f"jobs[{i}].array is {job['array']!r}"
        if not isinstance(job["cells"], list) or not all(_is_cell(c) for c in job["cells"]):
            return f"jobs[{i}].cells is not a list of cells"
        wrong = _wrong_job_nodes(job, node_counts(plan))
        if wrong:
            return f"jobs[{i}].{wrong}"
    return None


def _wrong_job_nodes(job: dict[str, Any], counts: list[int]) -> str | None:
    """A job's ``nodes``: one of the plan's counts; absent (a plan written before --nodes lists)
    only where the plan has a single count, which it then ran on."""
    if "nodes" not in job:
        return None if len(counts) == 1 else "nodes is missing (the plan has several node counts)"
    if not _is_int(job["nodes"], 1) or job["nodes"] not in counts:
        return f"nodes is {job['nodes']!r}, not one of the plan's node counts {counts}"
    return None


def current_states(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    plan = load_plan(run_dir)
    queue, notes = queue_states([j["job_id"] for j in plan["jobs"]])
    return plan, cell_states(plan, RunDir(run_dir).records(), queue), notes



# --------------------------------------------------------------------------------------------
# Submitting
# --------------------------------------------------------------------------------------------
def submit_plan(plan: dict[str, Any], cells: list[dict[str, str]], script_name: str, dry_run: bool,
                nodes: int) -> str | None:
    """Render, write and submit one job on ``nodes`` nodes covering ``cells``, then record it in
    the plan. A submission sbatch refuses leaves nothing of its own behind."""
    array = plan["options"]["array_per_cell"]
    script = render_script(plan, cells if array else None, script_name, nodes)
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
        "job_id": job_id, "array": array, "cells": cells, "script": script_name, "nodes": nodes,
        "submitted_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    run.write_json(PLAN, plan)
    return job_id


def submit(o: dict[str, Any]) -> list[str]:
    """``bench slurm submit``: the lines to print."""
    from bench.launch.local import check_out_dir

    counts = parse_node_counts(o["nodes"])
    launches = [launch_mode(n, o["gpus_per_node"], o["tasks_per_node"])[0] for n in counts]
    cmd = parse_bench_command(o["bench_args"], distributed=any(launch != "single" for launch in launches))
    check_out_dir(str(cmd.run_dir))  # the check `bench run` makes: a file, /proc/x -> one line, exit 2
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
            "partition": o["partition"], "nodes": counts, "gpus_per_node": o["gpus_per_node"],
            "tasks_per_node": o["tasks_per_node"], "cpus_per_task": o["cpus_per_task"], "time": o["time_limit"],
            "account": o["account"], "job_name": o["job_name"], "signal_before": o["signal_before"],
            "sbatch_opts": list(o["sbatch_opts"]), "array_per_cell": o["array_per_cell"],
        },
        "jobs": [],
    }
    if (cmd.run_dir / PLAN).exists() and not o["dry_run"]:
        raise BadInput(f"{cmd.run_dir} already has {PLAN}; use 'bench slurm resubmit {cmd.run_dir}' or a new --out")
    what = f"array of {len(cmd.cells)} cells" if o["array_per_cell"] else f"{len(cmd.cells)} cells"
    lines = []
    for nodes in counts:
        script = SCRIPT if len(counts) == 1 else f"slurm_job.nodes-{nodes}.sbatch"
        job_id = _submit_one(plan, cmd.cells, script, o["dry_run"], nodes, lines)
        if job_id is not None:
            on = f", {nodes} node{'s' if nodes > 1 else ''}" if len(counts) > 1 else ""
            lines.append(f"Submitted batch job {job_id} ({what}{on}) into {cmd.run_dir}")
    return lines


def _submit_one(plan: dict[str, Any], cells: list[dict[str, str]], script: str, dry_run: bool, nodes: int,
                done: list[str]) -> str | None:
    """submit_plan for one node count; when sbatch refuses a later one, the error also says which
    jobs were already submitted (they stay in the plan: 'bench slurm resubmit' sends the rest)."""
    try:
        return submit_plan(plan, cells, script, dry_run, nodes)
    except BadInput as e:
        if not done:
            raise
        sent = "; ".join(line.removeprefix("Submitted ") for line in done)
        raise BadInput(f"{e.message} (for --nodes {nodes}; already submitted: {sent}; "
                       f"'bench slurm resubmit {plan['run_dir']}' sends the rest)") from None


def print_status(run_dir: Path, as_json: bool) -> None:
    """``bench slurm status``: which cells are done, running, pending, failed or missing."""
    _, rows, notes = current_states(run_dir)
    claims = claim_holders(RunDir(run_dir))
    if as_json:
        click.echo(json.dumps({"cells": rows, "notes": notes, "claims": claims}, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colour = {"done": "green", "running": "cyan", "pending": "yellow", "failed": "red", "missing": "magenta"}
    table = Table(title=f"SLURM cells in {run_dir}")
    for col in ("nodes", "model", "res", "state", "job", "slurm state", "records"):
        table.add_column(col)
    for r in rows:
        records = f"{r['records']} ({r['errors']} error)" if r["errors"] else str(r["records"])
        table.add_row(str(r["nodes"]), r["model"], r["res"], f"[{colour[r['state']]}]{r['state']}[/]",
                      r["job"] or "-", r["slurm_state"] or "-", records)
    console = Console()
    console.print(table)
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    several = len({r["nodes"] for r in rows}) > 1
    left = [f"{r['model']}@{r['res']}{' on ' + str(r['nodes']) + ' nodes' if several else ''} ({r['state']})"
            for r in rows if r["state"] != "done"]
    if left:
        console.print("left unmeasured: " + escape(", ".join(left)))
    for cell_key, holder in claims.items():
        console.print(f"claim: {escape(cell_key)} held by {escape(holder)}")
    for note in notes:
        console.print(f"note: {note}")


def resubmit(run_dir: Path, dry_run: bool) -> list[str]:
    """``bench slurm resubmit``: only the cells that are neither done nor queued, one job per node
    count that has any."""
    plan, rows, _ = current_states(run_dir)
    counts = node_counts(plan)
    lines: list[str] = []
    for nodes in counts:
        todo = [{"model": r["model"], "res": r["res"]} for r in rows
                if r["nodes"] == nodes and r["state"] in ("failed", "missing")]
        if not todo:
            continue
        several = len(counts) > 1
        script_name = f"slurm_job.resubmit-{len(plan['jobs'])}" + (f".nodes-{nodes}" if several else "") + ".sbatch"
        job_id = _submit_one(plan, todo, script_name, dry_run, nodes, lines)
        if job_id is not None:
            cells = ", ".join(f"{c['model']}@{c['res']}" for c in todo)
            on = f" on {nodes} node{'s' if nodes > 1 else ''}" if several else ""
            lines.append(f"Submitted batch job {job_id}{on} for {len(todo)} cells: {cells}")
    if not lines and not any(r["state"] in ("failed", "missing") for r in rows):
        return ["Nothing to resubmit: every cell is done, running or pending."]
    return lines


# --------------------------------------------------------------------------------------------
# The click commands
# --------------------------------------------------------------------------------------------
@click.group("slurm")
def slurm_group() -> None:
    """Run bench commands as SLURM batch jobs and follow them."""


@slurm_group.command("submit")
@click.option("--partition", "-p", help="Slurm partition (sbatch --partition).")
@click.option("--nodes", "-N", default="1", show_default=True,
              help="Nodes per job; more than one starts torchrun on each node. A list (1,2,4) submits one job "
                   "per node count into the same run directory: a scaling study.")
@click.option("--gpus-per-node", type=click.IntRange(min=0), default=0, show_default=True,
              help="GPUs per node; torchrun starts one process per GPU.")
@click.option("--tasks-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="srun tasks per node, each a bench rank (instead of torchrun).")
@click.option("--cpus-per-task", "-c", type=click.IntRange(min=1), help="CPUs per task; sets OMP_NUM_THREADS.")
@click.option("--time", "-t", "time_limit", help="Time limit per job, e.g. 01:00:00.")
@click.option("--account", "-A", help="Account to charge.")
@click.option("--job-name", "-J", help="Job name [bench-<run dir name>].")
@click.option("--signal-before", type=click.IntRange(min=1), default=120, show_default=True,
              help="Seconds before the time limit that Slurm sends USR1 to stop at a cell boundary.")
@click.option("--sbatch-opt", "sbatch_opts", multiple=True,
              help="Any other sbatch option, one per use, e.g. --sbatch-opt=--qos=high.")
@click.option("--array-per-cell", is_flag=True, help="One array task per model x resolution.")
@click.option("--dry-run", is_flag=True, help="Print the script; submit nothing, write nothing.")
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED)
def slurm_submit_command(**options) -> None:
    """Submit BENCH_ARGS (after '--', e.g. '-- run --models resnet18 --res 224') as SLURM jobs."""
    for line in submit(options):
        click.echo(line)


@slurm_group.command("status")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def slurm_status_command(run_dir: Path, as_json: bool) -> None:
    """Which cells of RUN_DIR are done, running, pending, failed or missing."""
    print_status(run_dir, as_json)


@slurm_group.command("resubmit")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the script; submit nothing.")
def slurm_resubmit_command(run_dir: Path, dry_run: bool) -> None:
    """Submit again only the cells of RUN_DIR that are neither done nor queued."""
    for line in resubmit(run_dir, dry_run):
        click.echo(line)
