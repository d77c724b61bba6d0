"""``bench calibrate``: this device's run-to-run noise as a stored figure that ``bench compare``
uses (bench.measure.calibration). Either from run directories already measured (``--from``: the
repeats and invocations in them), or measured now: the same small cells in ``--runs`` fresh
``bench run`` processes of ``--repeats`` repeats each (Kalibera & Jones's A/A design, two levels).
Writes ``<--out>/<machine key>.json`` and prints the price of an answer on this device."""
from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import click

from bench import stats
from bench.errors import BadInput
from bench.measure import calibration as C

PRICED = (0.03, 0.05, 0.10, 0.20, 0.50)  # the changes whose price the summary states


def _measure(work: Path, models: str, res: str, modes: str, runs: int, repeats: int, budget: float,
             threads: int | None) -> list[str]:
    """``runs`` fresh bench run processes into ``work``/run-i; their directories."""
    if work.exists() and any(work.iterdir()):
        raise BadInput(f"--work {work} is not empty; give a new folder for the calibration's runs")
    dirs = []
    for i in range(runs):
        out = work / f"run-{i + 1}"
        cmd = [sys.executable, "-m", "bench.cli", "run", "--models", models, "--res", res, "--modes", modes,
               "--repeats", str(repeats), "--budget", str(budget), "--out", str(out), "--no-report",
               "--numerics", "off", *(["--threads", str(threads)] if threads else [])]
        click.echo(f"calibrate: run {i + 1} of {runs}: {' '.join(cmd[2:])}", err=True)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            raise SystemExit(proc.returncode)
        dirs.append(str(out))
    return dirs


@click.command("calibrate")
@click.option("--from", "from_dirs", multiple=True,
              help="Take the noise from these run directories (repeat the option): the same cells measured "
                   "in several runs or invocations. Without it, measure now.")
@click.option("--models", default="resnet18,pvt_tiny,vit_t", show_default=True, help="Cells to measure now.")
@click.option("--res", default="64,96", show_default=True)
@click.option("--modes", default="infer,train", show_default=True)
@click.option("--runs", type=click.IntRange(2, 100), default=4, show_default=True,
              help="Fresh processes (bench run invocations) to measure now.")
@click.option("--repeats", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Repeats within each process (separates the block level from the process level).")
@click.option("--budget", type=click.FloatRange(0, min_open=True), default=0.5, show_default=True,
              help="Timing budget per cell visit, seconds.")
@click.option("--threads", type=click.IntRange(1), default=None, help="Threads per rank, as your runs use.")
@click.option("--work", default=None, help="Folder for the runs measured now [default: OUT/runs-<date>].")
@click.option("--out", default=str(C.DEFAULT_DIR), show_default=True, help="Folder the calibration is written to.")
@click.option("--metric", type=click.Choice(("latency", "throughput")), default="latency", show_default=True)
def calibrate_command(from_dirs: tuple[str, ...], models: str, res: str, modes: str, runs: int, repeats: int,
                      budget: float, threads: int | None, work: str | None, out: str, metric: str) -> None:
    """Measure this device's noise between runs and store it for bench compare."""
    from bench.outputs import check_output_file, shown
    from bench.record import is_run_dir

    for d in from_dirs:
        if not is_run_dir(Path(d)):
            raise BadInput(f"--from {shown(d)} is not a run directory (no records or invocation log of bench run)")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"--out {shown(out)} is a file; give a folder")
    # Before anything is measured or made: the folder (or its nearest existing parent) takes files.
    check_output_file(out_dir / "<machine key>.json", "--out")
    if from_dirs:
        dirs, method = list(from_dirs), f"from {len(from_dirs)} run directories"
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        dirs = _measure(Path(work) if work else out_dir / f"runs-{stamp}", models, res, modes, runs, repeats,
                        budget, threads)
        method = f"measured: {runs} runs x {repeats} repeats of {models} at {res}, {modes}, budget {budget:g} s"
    cals = C.calibrate_from_runs(dirs, method, metric)
    for cal in cals:
        path = C.save(cal, out_dir)
        click.echo(f"{cal.key.slug}: between processes sd {C.sd_percent(cal.process)} ({cal.df_process} df), "
                   f"between repeats in a process sd {C.sd_percent(cal.block)} ({cal.df_block} df), "
                   f"{cal.cells} cells; wrote {path}")
        prices = []
        for x in PRICED:
            n = stats.runs_needed(cal.noise(), x, stats.default_threshold("cpu"))
            what = "'same' within 3%" if x <= stats.default_threshold("cpu") else f"{100 * x:g}%"
            prices.append(f"{what}: {n if n is not None else '-'}")
        click.echo(f"  runs per side for a verdict (90% of the time, threshold 3%): {', '.join(prices)}")
