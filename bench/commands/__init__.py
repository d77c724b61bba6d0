"""The commands: what each ``bench`` subcommand does once its options are parsed. The top of the
layer stack (only bench.cli sits above): a command may import any layer below it, and nothing
below imports a command (the [tool.importlinter] contracts in pyproject.toml say so and
tests/unit/test_architecture.py checks it). ``bench report`` lives with the report (bench.report.command).
"""
