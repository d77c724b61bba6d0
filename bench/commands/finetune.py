"""``bench finetune``: RetinaNet / Semantic FPN fine-tunes through the shared sweep."""
from __future__ import annotations

import click

from bench import config as cfgmod
from bench.commands.run import out_given, start, sweep


@click.pass_context
def _finetune_callback(ctx: click.Context, **params) -> None:
    """Fine-tune each backbone under RetinaNet (det) or Semantic FPN (seg) and score it."""
    from bench.environment import flush_denormals
    from bench.launch.local import check_nproc, check_out_dir

    cfg = cfgmod.finetune_config(params)
    check_out_dir(cfg.out)
    flush_denormals()  # torch from here on, before any torch op starts the OpenMP worker threads
    from bench.scenarios.finetune import FinetuneScenario

    check_nproc([cfg.nproc], "auto")  # finetune runs on the device torch finds (sweep(..., "auto"))
    scenario = FinetuneScenario(cfg)
    scenario.check_inputs()
    cfg.out = start(cfg.nproc, None, cfg.out, new_out=not out_given(ctx, "out"))
    sweep(scenario, "auto")


finetune_command = click.Command("finetune", params=cfgmod.finetune_params(), callback=_finetune_callback,
                                 help=_finetune_callback.__doc__)
