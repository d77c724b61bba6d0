"""Command line: parse and validate, then hand over to the stage that does the work.

Every subcommand lives in the module of its concern and is registered here.
"""
from __future__ import annotations

import click

from bench import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bench")
def main() -> None:
    """Benchmark and profile vision backbones (PVT, ViT, ResNet) for dense prediction."""
    from bench.environment import flush_denormals

    flush_denormals()  # before any torch op starts the OpenMP worker threads


def _register() -> None:
    from bench.finetune import finetune_command
    from bench.flops import flops_command
    from bench.profile import profile_command
    from bench.report import report_command
    from bench.runner import run_command
    from bench.slurm import slurm_group

    main.add_command(run_command, "run")
    main.add_command(flops_command, "flops")
    main.add_command(profile_command, "profile")
    main.add_command(slurm_group, "slurm")
    main.add_command(report_command, "report")
    main.add_command(finetune_command, "finetune")


_register()


def entry() -> None:
    """Console-script entry: click's own usage errors (bad option, bad choice) also come out as
    one line and exit code 2, like our BadInput errors."""
    import sys

    try:
        main.main(standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    entry()
