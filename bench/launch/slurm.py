"""SLURM, the launching half: render the batch script from the top-level ``slurm/`` template and
talk to Slurm (sbatch, squeue, sacct). The command half (``bench slurm submit | status |
resubmit``: validating the bench command, the plan file, cell states, printing) is
bench.commands.slurm; this module knows no config, cell or record.

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
stops at a cell boundary and exits 99 (bench.launch.signals); the job then requeues itself and the
rerun resumes.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.errors import BadInput
from bench.launch.local import strip_option
from bench.launch.signals import PREEMPTED_EXIT

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the repository: bench/launch/slurm.py
TEMPLATE_DIR = SOURCE_ROOT / "slurm"
TEMPLATE = "bench_job.sbatch.j2"


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


def render_script(plan: dict[str, Any], cells: list[dict[str, str]] | None, script_name: str, nodes: int) -> str:
    """The batch script for ``plan`` on ``nodes`` nodes (one of ``--nodes 1,2,4``: Slurm sizes a
    job, and all tasks of an array, by one node count); with ``cells``, an array with one task per cell."""
    import jinja2

    o = plan["options"]
    launch, nproc = launch_mode(nodes, o["gpus_per_node"], o["tasks_per_node"])
    run_dir = plan["run_dir"]
    _directive_value("--out", run_dir)  # a line break in --out: name --out, not the --job-name made from it
    # sbatch expands %-patterns in --output: a literal % in the run directory is written %%.
    log = run_dir.replace("%", "%%") + ("/slurm-%A_%a.out" if cells else "/slurm-%j.out")
    pairs: list[tuple[str, str | None]] = [
        ("--job-name", o["job_name"] or f"bench-{Path(run_dir).name}"),
        ("--output", log),
        ("--open-mode", "append"),
        ("--requeue", None),
        ("--signal", f"B:USR1@{o['signal_before']}"),
        ("--nodes", str(nodes)),
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

