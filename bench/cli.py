"""The command line: the ``bench`` group and the console-script entry. The top of the layer stack
and thin on purpose: each command is in bench.commands (``bench report`` in bench.report.command);
nothing imports this module. The allowed import directions are in pyproject.toml
([tool.importlinter]) and tests/unit/test_architecture.py enforces them.

Commands load lazily (click's documented LazyGroup pattern): ``bench compare`` imports compare's
module only, not the run command's torch, timm and data sets (torch alone is 1.3 s of a 2.5 s
start on the 2-core VM), so the commands that read run directories (compare, report, query,
history, calibrate) start in under a second. ``bench --help`` still loads them all for their help.
"""
from __future__ import annotations

import importlib

import click

from bench import __version__

__all__ = ["entry", "main"]

#: Each command's name and where it lives ("module:attribute"), in --help order.
COMMANDS = {
    "run": "bench.commands.run:run_command",
    "profile": "bench.commands.run:profile_command",
    "finetune": "bench.commands.finetune:finetune_command",
    "flops": "bench.commands.flops:flops_command",
    "report": "bench.report.command:report_command",
    "compare": "bench.commands.compare:compare_command",
    "calibrate": "bench.commands.calibrate:calibrate_command",
    "slurm": "bench.commands.slurm:slurm_group",
    "query": "bench.commands.query:query_command",
    "history": "bench.commands.history:history_command",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when named (``COMMANDS``), not when bench starts."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, attribute = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


def version_message() -> str:
    """What `bench --version` prints: bench, and the torch, CUDA and Python it runs on, since a
    range of torch versions is allowed and a figure means little without them."""
    import platform

    try:
        import torch

        torch_version, cuda = torch.__version__, torch.version.cuda or "none"
    except ImportError:
        torch_version, cuda = "not installed", "none"
    return f"bench {__version__}, torch {torch_version}, CUDA {cuda}, Python {platform.python_version()}"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # click's version_option formats only %(prog)s/%(package)s/%(version)s: a callback adds torch's.
    if value and not ctx.resilient_parsing:
        click.echo(version_message())
        ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show bench's, torch's, CUDA's and Python's versions and exit.")
def main() -> None:
    """Benchmark and profile vision backbones (PVT, ViT, ResNet) for dense prediction."""
    # Each command that runs torch ops (run, profile, finetune, flops) flushes denormals itself
    # (bench.environment.flush_denormals) once its command line is checked and before its first
    # torch op: a refused command line costs no torch import.


def entry() -> None:
    """Console-script entry: click's own usage errors (bad option, bad choice) also come out as
    one line and exit code 2, like our BadInput errors; an unexpected exception is one line and
    exit 3 (never 1, compare's and history's "slower"), its traceback with BENCH_TRACEBACK=1; a
    reader that goes away (`| head`) ends the output quietly. The codes: docs/exit-codes.md. Every
    way out goes through bench.errors.leave: a Ctrl-C after the code is decided cannot change it."""
    from bench.errors import leave

    try:
        code, interrupted = _dispatch()
    except KeyboardInterrupt:  # between the command's own handlers and leave: still an interrupt
        code, interrupted = _interrupted(), True
    leave(code, interrupted=interrupted)


def _interrupted() -> int:
    """Says "Interrupted." and gives the exit code of a Ctrl-C: 130, or 0 for a rank of a job
    bench launched itself (its parent reports the interrupt)."""
    from bench.errors import INTERRUPTED_EXIT
    from bench.launch.local import report_stop_to_launcher

    code = report_stop_to_launcher(INTERRUPTED_EXIT)
    if code:
        click.echo("Interrupted.", err=True)
    return code


def _dispatch() -> tuple[int, bool]:
    """Runs the command line; returns its exit code, and whether Ctrl-C stopped it, instead of
    exiting (bench.errors.leave exits)."""
    import os

    from bench.errors import BAD_INPUT_EXIT, INTERNAL_ERROR_EXIT, TRACEBACK_ENV, first_line
    from bench.launch.local import JOB_STATUS_ENV

    # Kineto (torch.profiler: bench profile, --comm-steps) logs "ERROR ... gpuGetDeviceCount failed"
    # on every machine without a GPU; warnings and above only, unless the user set a level.
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    if JOB_STATUS_ENV in os.environ and "RANK" in os.environ:
        # A rank of a job `--nproc` started: the parent may forward SIGTERM at any moment, even
        # while this rank still imports torch; it must stop at a cell boundary, not die.
        from bench.launch.signals import StopFlag

        StopFlag.shared().install()
    try:
        main.main(standalone_mode=False)  # a command's return value is not an exit code
        return 0, False
    except SystemExit as exc:
        return _exit_code(exc.code), False
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        return BAD_INPUT_EXIT, False
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code, False
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        return _interrupted(), True
    except BrokenPipeError:
        from bench.outputs import quiet_stdout

        quiet_stdout()  # the reader has all it wanted; Python's flush at exit must not complain
        return 0, False
    except Exception as exc:  # noqa: BLE001 - any other exception is a bug of bench's: one line, its own code
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {os.path.basename(where.filename)}:{where.lineno}" if where else ""
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        from bench.sanitize import visible

        click.echo(f"bench: internal error{at}: {visible(first_line(exc, with_type=True), one_line=True)} "
                   f"(a bug of bench's; {TRACEBACK_ENV}=1 prints the traceback)", err=True)
        return INTERNAL_ERROR_EXIT, False


def _exit_code(code: object) -> int:
    """sys.exit's argument as the process would turn it into a status: None is 0, a message is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    click.echo(str(code), err=True)
    return 1


if __name__ == "__main__":
    entry()
