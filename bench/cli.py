"""The command line. Every command is thin: parse -> config (bench.config) -> call the layer that
does the work. Nothing imports this module; it imports everything (arrows point down the stack:
cli -> sweep -> scenarios -> measure / engines -> models).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bench import __version__
from bench import config as cfgmod
from bench.errors import BadInput
from bench.report.command import report_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bench")
def main() -> None:
    """Benchmark and profile vision backbones (PVT, ViT, ResNet) for dense prediction."""
    from bench.environment import flush_denormals

    flush_denormals()  # before any torch op starts the OpenMP worker threads


# --------------------------------------------------------------------------------------------
# bench run / bench profile


def _start(nproc: int, threads: int | None, out: str | None, new_out: bool) -> str | None:
    """Self-launch under torchrun for --nproc > 1 (exits with the job's status); else set threads."""
    import torch

    from bench.launch.local import relaunch_if_requested
    from bench.record import new_run_id

    if nproc > 1:
        out = out or str(Path("results") / new_run_id())
        relaunch_if_requested(nproc, [] if not new_out else ["--out", out], threads)
    if threads:
        torch.set_num_threads(threads)
    return out


def _sweep(scenario, device: str, timeout_s: float = 300.0) -> None:
    from bench.launch.context import init_distributed, shutdown
    from bench.launch.local import report_stop_to_launcher
    from bench.sweep import StopFlag, make_console, run_sweep

    StopFlag.shared().install()  # a SIGTERM while the process group forms still stops the sweep
    ctx = init_distributed(device, timeout_s=timeout_s)
    try:
        result = run_sweep(scenario, ctx, make_console(ctx))
    finally:
        shutdown(ctx)
    if result.exit_code:
        sys.exit(report_stop_to_launcher(result.exit_code))


def _run(cfg: cfgmod.RunConfig, source_out_given: bool) -> None:
    import torch

    from bench.scenarios.classify import ClassifyScenario

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda, but no CUDA device is visible; use --device cpu")
    from bench.launch.local import check_out_dir

    check_out_dir(cfg.out)
    cfg.out = _start(cfg.nproc, cfg.threads, cfg.out, new_out=not source_out_given)
    _sweep(ClassifyScenario(cfg), cfg.device, cfg.timeout)


def _out_given(ctx: click.Context) -> bool:
    return ctx.get_parameter_source("out_dir") not in (None, click.core.ParameterSource.DEFAULT)


@click.pass_context
def _run_callback(ctx: click.Context, **params) -> None:
    """Measure params, GMACs, latency, throughput and peak memory for each model x resolution."""
    _run(cfgmod.run_config(params), _out_given(ctx))


@click.pass_context
def _profile_callback(ctx: click.Context, **params) -> None:
    """`bench run --profile` (inference cells unless --modes says otherwise): one torch.profiler
    trace per cell under RUN_DIR/traces/<cell>/rank<N>.*.pt.trace.json, and each record's
    op-category breakdown. View: tensorboard --logdir RUN_DIR/traces (torch-tb-profiler plugin)."""
    if ctx.get_parameter_source("modes_text") is click.core.ParameterSource.DEFAULT:
        params["modes_text"] = "infer"
    params["profile"] = True
    _run(cfgmod.run_config(params), _out_given(ctx))


main.add_command(click.Command("run", params=cfgmod.run_params(), callback=_run_callback,
                               help=_run_callback.__doc__))
main.add_command(click.Command("profile", params=cfgmod.run_params(), callback=_profile_callback,
                               help=_profile_callback.__doc__))


# --------------------------------------------------------------------------------------------
# bench finetune


@click.pass_context
def _finetune_callback(ctx: click.Context, **params) -> None:
    """Fine-tune each backbone under RetinaNet (det) or Semantic FPN (seg) and score it."""
    from bench.launch.local import check_out_dir
    from bench.scenarios.finetune import FinetuneScenario

    cfg = cfgmod.finetune_config(params)
    check_out_dir(cfg.out)
    scenario = FinetuneScenario(cfg)
    scenario.check_inputs()
    out_given = ctx.get_parameter_source("out") not in (None, click.core.ParameterSource.DEFAULT)
    cfg.out = _start(cfg.nproc, None, cfg.out, new_out=not out_given)
    _sweep(scenario, "auto")


main.add_command(click.Command("finetune", params=cfgmod.finetune_params(), callback=_finetune_callback,
                               help=_finetune_callback.__doc__))


# --------------------------------------------------------------------------------------------
# bench flops


@main.command("flops")
@click.option("--models", "models_text", required=True, help="Comma-separated model names, e.g. pvt_small,vit_s,resnet50.")
@click.option("--task", type=click.Choice(cfgmod.TASKS), default="cls", show_default=True,
              help="cls: the backbone as a classifier; det: RetinaNet + FPN (+P6/P7) + head; seg: Semantic FPN.")
@click.option("--res", "res_text", default=None,
              help="Sizes, height first: 224,512, 512x640 or a range 224:1024:64 "
                   "[default: cls 224, det 800x1280 (padded to 32), seg 512].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option("--no-cross-check", is_flag=True,
              help="Skip the independent torch.utils.flop_counter count (explicit-attention path).")
def flops_command(models_text: str, task: str, res_text: str | None, as_json: bool, no_cross_check: bool) -> None:
    """Parameters, GMACs and GFLOPs (= 2 x GMACs) per model and resolution, per stage and part.

    A size whose count does not fit in memory is printed as an oom row; the others go on."""
    import torch

    from bench.measure.flops import CROSS_CHECK_TOLERANCE, count_flops, print_flops_table
    from bench.measure.memory import free_memory, is_oom
    from bench.plan import Cell
    from bench.scenarios import dense
    from models import create_model

    names = cfgmod.parse_models(models_text)
    sizes = cfgmod.parse_resolutions(res_text or cfgmod.DEFAULT_FLOPS_RES[task], 1 if task == "det" else 32)
    rows: list[dict] = []
    reports = []
    for name in names:
        model = create_model(name) if task == "cls" else None
        for h, w in sizes:
            cell = Cell(name, h, w, "infer", 1, task)
            try:
                if task == "cls":
                    report = count_flops(model, name, h, w, cross_check=not no_cross_check)
                else:
                    report = dense.count(cell)
                    if (h, w) != tuple(report.input_hw) and not as_json:
                        click.echo(f"{name}: {h}x{w} padded to {report.input_hw[0]}x{report.input_hw[1]} "
                                   "(a multiple of 32, as mmdet pads)", err=True)
            except Exception as exc:  # noqa: BLE001 - one size that does not fit must not end the table
                text = str(exc).strip()
                rows.append({"model": name, "task": task, "res": cell.res, "status": "oom" if is_oom(exc) else "error",
                             "error": f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"})
                free_memory(torch.device("cpu"))
                continue
            reports.append(report)
            rows.append({**report.as_dict(), "status": "ok"})
    if as_json:
        click.echo(json.dumps(rows, indent=2, allow_nan=False))
    else:
        print_flops_table(reports)
        for row in rows:
            if row["status"] != "ok":
                click.echo(f"{row['model']}@{row['res']}: {row['status']}: {row['error']}", err=True)
    for r in reports:
        if r.crosscheck_rel_diff is not None and r.crosscheck_rel_diff > CROSS_CHECK_TOLERANCE:
            click.echo(f"warning: {r.model}@{r.res}: fvcore and torch.utils.flop_counter (explicit attention) disagree "
                       f"by {100 * r.crosscheck_rel_diff:.2f}% on matmul/conv/attention", err=True)


# --------------------------------------------------------------------------------------------
# bench report, bench slurm

main.add_command(report_command, "report")


@main.group("slurm")
def slurm_group() -> None:
    """Run bench commands as SLURM batch jobs and follow them."""


@slurm_group.command("submit")
@click.option("--partition", "-p", help="Slurm partition (sbatch --partition).")
@click.option("--nodes", "-N", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nodes per job; more than one starts torchrun on each node.")
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
    from bench.launch.slurm import submit

    for line in submit(options):
        click.echo(line)


@slurm_group.command("status")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def slurm_status_command(run_dir: Path, as_json: bool) -> None:
    """Which cells of RUN_DIR are done, running, pending, failed or missing."""
    from bench.launch.slurm import print_status

    print_status(run_dir, as_json)


@slurm_group.command("resubmit")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the script; submit nothing.")
def slurm_resubmit_command(run_dir: Path, dry_run: bool) -> None:
    """Submit again only the cells of RUN_DIR that are neither done nor queued."""
    from bench.launch.slurm import resubmit

    for line in resubmit(run_dir, dry_run):
        click.echo(line)


def entry() -> None:
    """Console-script entry: click's own usage errors (bad option, bad choice) also come out as
    one line and exit code 2, like our BadInput errors."""
    import os

    from bench.launch.local import JOB_STATUS_ENV

    if JOB_STATUS_ENV in os.environ and "RANK" in os.environ:
        # A rank of a job `--nproc` started: the parent may forward SIGTERM at any moment, even
        # while this rank still imports torch; it must stop at a cell boundary, not die.
        from bench.sweep import StopFlag

        StopFlag.shared().install()
    try:
        main.main(standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        from bench.launch.local import report_stop_to_launcher

        code = report_stop_to_launcher(130)  # a rank of a self-launched job: the parent says it
        if code:
            click.echo("Interrupted.", err=True)
        sys.exit(code)


if __name__ == "__main__":
    entry()
