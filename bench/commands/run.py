"""``bench run`` and ``bench profile``, and what every sweeping command shares: self-launching for
``--nproc``, the sweep inside the process group, and the report rendered after the sweep."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from bench import config as cfgmod
from bench.errors import BadInput, first_line
from bench.record import RunDir, default_run_dir


def start(nproc: int, threads: int | None, out: str | None, new_out: bool) -> str | None:
    """Self-launch under torchrun for --nproc > 1 (exits with the job's status); else flush
    denormals and set threads: this process measures. The run directory is chosen here, before
    the ranks exist, so every rank writes into one. A parent that launches imports no torch."""
    from bench.launch.local import die_with_launcher, relaunch_if_requested

    die_with_launcher()  # a rank of our own --nproc job: dies with torchrun (nothing elsewhere)
    if nproc > 1:
        out = out or str(default_run_dir())
        relaunch_if_requested(nproc, [] if not new_out else ["--out", out], threads)
    import torch

    from bench.environment import flush_denormals

    flush_denormals()  # before any torch op starts the OpenMP worker threads
    if threads:
        torch.set_num_threads(threads)
    return out


def sweep(scenario, device: str, timeout_s: float = 300.0, report: bool = False) -> None:
    """Run ``scenario``'s sweep in this process group; rank 0 then renders the run's report (when
    ``report``) unless the sweep was stopped. Exits with the sweep's code when it is not 0."""
    from bench.launch.context import barrier, init_distributed, shutdown
    from bench.launch.local import report_stop_to_launcher
    from bench.launch.signals import PREEMPTED_EXIT, StopFlag
    from bench.sweep import make_console, run_sweep

    StopFlag.shared().install()  # a SIGTERM while the process group forms still stops the sweep
    ctx = init_distributed(device, timeout_s=timeout_s)
    console = make_console(ctx)
    try:
        result = run_sweep(scenario, ctx, console)
        if result.exit_code == 0:
            # Every rank leaves the process group together: rank 0 still summarises while the
            # others would tear down; once, under load, a DeepSpeed ZeRO-3 rank that left first
            # aborted at exit ("terminate called without an active exception").
            barrier(ctx)
    finally:
        shutdown(ctx)
    if report and ctx.is_main and result.exit_code != PREEMPTED_EXIT:
        render_run_report(result.run_dir, console)
    if result.exit_code:
        sys.exit(report_stop_to_launcher(result.exit_code))


def render_run_report(run_dir: RunDir, console) -> None:
    """``report.html`` beside the records. A report that fails is one line: the records are safe
    and ``bench report`` can render them later."""
    if not run_dir.records():
        return
    from bench.report import render_report

    try:
        path = render_report([run_dir.path], run_dir.path / "report.html")
        console.print(f"report: {path}")
    except Exception as exc:  # noqa: BLE001 - the records are safe; the report is a view
        console.print(f"[yellow]report not rendered:[/] {first_line(exc, with_type=True)}")


def _run(cfg: cfgmod.RunConfig, source_out_given: bool, batch_given: bool = False) -> None:
    from bench.launch.local import check_nproc, check_out_dir, own_job_world_size, under_launcher

    if cfg.global_batch is not None and batch_given:
        raise BadInput(f"--global-batch {cfg.global_batch} sets the batch per rank (global / ranks); drop --batch "
                       "(or drop --global-batch: then --batch is per rank, weak scaling)")
    world = own_job_world_size()
    if world is not None:  # a rank of our own --nproc job (a --config file's study list is the parent's)
        cfg.nproc = [world]
    if len(cfg.nproc) > 1 and under_launcher():
        raise BadInput(f"--nproc {','.join(map(str, cfg.nproc))} is a local study; under srun use bench slurm submit "
                       "--nodes ...")
    check_out_dir(cfg.out)
    traces = Path(cfg.out) / "traces" if cfg.out and getattr(cfg, "profile", False) else None
    if traces is not None and (traces.is_symlink() or (traces.exists() and not traces.is_dir())):
        raise BadInput(f"{traces} exists but is not a directory; bench profile writes its traces there "
                       "(remove it or choose another --out)")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BadInput("--device cuda, but no CUDA device is visible; use --device cpu")
    check_nproc(cfg.nproc, cfg.device)
    if cfg.repeats == "auto":
        repeats_auto(cfg)
    if len(cfg.nproc) > 1:
        study(cfg)
    cfg.out = start(cfg.nproc[0], cfg.threads, cfg.out, new_out=not source_out_given)
    from bench.scenarios.step import StepScenario  # torch, timm: in the process that measures

    sweep(StepScenario(cfg), cfg.device, cfg.timeout, report=not cfg.no_report)


def study(cfg: cfgmod.RunConfig) -> None:
    """``--nproc 1,2,4``: each world size in turn into one run directory, then one report (the
    scaling section compares the world sizes); exits with the study's code (bench.launch.local)."""
    from rich.console import Console

    from bench.launch.local import run_study
    from bench.launch.signals import PREEMPTED_EXIT

    out = cfg.out or str(default_run_dir())
    code = run_study(cfg.nproc, out, cfg.threads)
    if not cfg.no_report and code not in (PREEMPTED_EXIT, 130) and Path(out).is_dir():
        render_run_report(RunDir(Path(out)), Console(stderr=False))
    sys.exit(code)


def repeats_auto(cfg: cfgmod.RunConfig, argv: list[str] | None = None) -> None:
    """``--repeats auto``: this same command (``argv``, default this process's) as fresh bench
    processes into one run directory, the k-th with ``--repeats k`` (a resumed run measures one
    new repeat in a new process), as many as bench.measure.auto_runs decides from the noise
    between runs (never from a comparison: its docstring says why). Each process's output is
    this one's; the first that exits non-zero ends the run with its code (99 stopped, 130
    interrupted: SIGTERM / SIGUSR1 / Ctrl-C are forwarded to it, bench.launch.local.ChildRunner);
    then one report, as a scaling study makes (``study``). Exits."""
    from rich.console import Console

    from bench.launch.local import run_in_turn, strip_option, under_launcher
    from bench.launch.signals import PREEMPTED_EXIT
    from bench.measure.auto_runs import MAX_RUNS, AutoRuns

    if under_launcher():
        raise BadInput("--repeats auto starts fresh bench processes itself, which ranks under torchrun or srun "
                       "cannot; give a number (--repeats 3), or run it outside the launcher")
    out = cfg.out or str(default_run_dir())
    argv = list(sys.argv[1:] if argv is None else argv)
    command = strip_option(strip_option(argv, "--repeats"), "--out")

    def say(line: str) -> None:
        click.echo(line, err=True)

    plan = AutoRuns(out, cfg.change, say)

    def next_command(done: int) -> list[str] | None:
        total = plan.total(done)
        if done >= total:
            return None
        say(f"auto: run {done + 1} of {total} -> {out}")
        return [sys.executable, "-m", "bench.cli", *command, "--repeats", str(done + 1), "--out", out, "--no-report"]

    code = run_in_turn(next_command, MAX_RUNS)
    if code in (PREEMPTED_EXIT, 130):
        say(f"auto: stopped; rerun the same command (same --out {out}) to resume")
    elif not cfg.no_report and Path(out).is_dir():
        render_run_report(RunDir(Path(out)), Console(stderr=False))
    sys.exit(code)


def out_given(ctx: click.Context, name: str = "out") -> bool:
    """Whether --out came from the command line or a config file (not the default)."""
    return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)


@click.pass_context
def _run_callback(ctx: click.Context, **params) -> None:
    """Measure params, GMACs, latency, throughput and peak memory for each model x resolution."""
    _run(cfgmod.run_config(params), out_given(ctx), out_given(ctx, "batches"))


@click.pass_context
def _profile_callback(ctx: click.Context, **params) -> None:
    """`bench run --profile` (inference cells unless --modes says otherwise): one torch.profiler
    trace per cell under RUN_DIR/traces/<cell>/rank<N>.*.pt.trace.json, and each record's
    op-category breakdown. View: tensorboard --logdir RUN_DIR/traces (torch-tb-profiler plugin)."""
    params["profile"] = True  # profile_params() defaults it on and --modes to infer
    _run(cfgmod.run_config(params), out_given(ctx), out_given(ctx, "batches"))


run_command = click.Command("run", params=cfgmod.run_params(), callback=_run_callback, help=_run_callback.__doc__)
profile_command = click.Command("profile", params=cfgmod.profile_params(), callback=_profile_callback,
                                help=_profile_callback.__doc__)
