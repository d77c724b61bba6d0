"""The engine registry: each engine owns its options, refusals, label and record fields; FSDP2's
wrapping and its memory breakdown at world size 1 (two real ranks: tests/e2e/test_distributed.py)."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

import models
from bench.config import identity, identity_id, parse_command
from bench.engines import (
    Trainer,
    TrainSpec,
    base_record_fields,
    build_trainer,
    engine_label,
    engine_names,
    get_engine,
)
from bench.engines.fsdp2 import even_shard_placement, shard_units
from bench.errors import BadInput
from bench.launch.context import DistContext
from bench.measure.memory import memory_breakdown

CPU = DistContext(0, 1, 0, 1, torch.device("cpu"), None)


def _refused(argv: list[str]) -> str:
    with pytest.raises(BadInput) as err:
        parse_command(argv)
    return str(err.value)


# ---------------------------------------------------------------------------- registry and rules

def test_every_engine_is_registered_and_an_unknown_one_is_bad_input():
    assert {"none", "ddp", "deepspeed", "fsdp2"} <= set(engine_names())
    assert get_engine("fsdp2").distributed and not get_engine("none").distributed
    with pytest.raises(BadInput, match="unknown engine 'horovod'"):
        get_engine("horovod")


@pytest.mark.parametrize("argv,needle", [
    (["run", "--models", "resnet18", "--engine", "ddp", "--zero", "2"], "--zero 2 needs --engine deepspeed"),
    (["run", "--models", "resnet18", "--engine", "fsdp2", "--zero", "1"], "--zero 1 needs --engine deepspeed"),
    (["finetune", "--task", "seg", "--engine", "fsdp2", "--bn-mode", "sync"], "--bn-mode sync needs --engine ddp"),
    (["finetune", "--task", "seg", "--zero", "2"], "--zero 2 needs --engine deepspeed"),
])
def test_an_engine_owned_option_under_another_engine_is_refused(argv, needle):
    assert needle in _refused(argv)


def test_a_ds_config_is_checked_as_a_file_first_then_refused_without_deepspeed(tmp_path):
    assert "DeepSpeed config not found" in _refused(["run", "--models", "resnet18", "--ds-config", "/nonexistent.json"])
    cfg = tmp_path / "ds.json"
    cfg.write_text("{}")
    assert "--ds-config" in _refused(["run", "--models", "resnet18", "--engine", "ddp", "--ds-config", str(cfg)])


def test_several_training_ranks_need_an_engine_that_syncs_gradients():
    text = _refused(["run", "--models", "resnet18", "--engine", "none", "--nproc", "2", "--modes", "train"])
    # The way out names every distributed engine the registry holds, FSDP2 included.
    assert "--engine ddp" in text and "--engine fsdp2" in text and "--modes infer" in text
    assert "--engine fsdp2" in _refused(["finetune", "--task", "seg", "--engine", "none", "--nproc", "2"])
    parse_command(["run", "--models", "resnet18", "--engine", "none", "--nproc", "2", "--modes", "infer"])
    parse_command(["run", "--models", "resnet18", "--engine", "fsdp2", "--nproc", "2", "--modes", "train"])


def test_labels_come_from_each_engine():
    assert engine_label({"engine": "deepspeed", "zero": 2}) == "deepspeed ZeRO-2"
    assert engine_label({"engine": "deepspeed", "zero": 1.0}) == "deepspeed ZeRO-1"  # a float column in pandas
    assert engine_label({"engine": "deepspeed", "zero": float("nan")}) == "deepspeed"
    assert engine_label({"engine": "fsdp2", "zero": None}) == "fsdp2"
    assert engine_label({"engine": "ddp"}) == "ddp"
    assert engine_label({"engine": "an_engine_of_old"}) == "an_engine_of_old"


def test_record_fields_have_one_shape_and_belong_to_their_engine():
    _, ds, _ = parse_command(["run", "--models", "resnet18", "--engine", "deepspeed", "--zero", "2",
                              "--modes", "infer"])
    assert base_record_fields(ds, train=True) == {"zero": 2, "ds_config": None}
    assert base_record_fields(ds, train=False) == {"zero": None, "ds_config": None}  # inference: no engine
    _, fsdp, _ = parse_command(["run", "--models", "resnet18", "--engine", "fsdp2"])
    assert base_record_fields(fsdp, train=True) == {"zero": None, "ds_config": None}


def test_fsdp2_and_ddp_are_different_configurations_for_resume():
    ids = {}
    for engine in ("ddp", "fsdp2"):
        _, cfg, _ = parse_command(["run", "--models", "resnet18", "--engine", engine])
        ids[engine] = identity_id(identity(cfg, True, {}))
        assert identity(cfg, True, {})["engine"] == engine
        # An inference cell runs no engine: the same configuration whatever --engine says.
        ids[engine, "infer"] = identity_id(identity(cfg, False, {}))
    assert ids["ddp"] != ids["fsdp2"]
    assert ids["ddp", "infer"] == ids["fsdp2", "infer"]


def test_only_an_engine_that_autocasts_itself_skips_the_trainers_autocast():
    model = torch.nn.Linear(4, 4)
    plain = Trainer(model, model, "none", "bf16", torch.device("cpu"), lambda loss: None)
    assert isinstance(plain.autocast(), torch.autocast)
    assert get_engine("deepspeed").self_autocast and not get_engine("fsdp2").self_autocast
    own = Trainer(model, model, "deepspeed", "bf16", torch.device("cpu"), lambda loss: None, self_autocast=True)
    assert isinstance(own.autocast(), contextlib.nullcontext)


# ---------------------------------------------------------------------------- FSDP2

@pytest.mark.parametrize("name,block", [("resnet18", "BasicBlock"), ("pvt_tiny", "Block"), ("vit_s", "Block")])
def test_fsdp2_shards_each_block_and_leaves_the_rest_to_the_root(name, block):
    model = models.create_model(name)
    units = shard_units(model)
    assert units and {type(u).__name__ for u in units} == {block}
    ids = {id(u) for u in units}
    for unit in units:  # outermost only: no block inside another
        assert not any(id(m) in ids for m in list(unit.modules())[1:])
    in_blocks = sum(p.numel() for u in units for p in u.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert 0.5 * total < in_blocks < total  # the stem / embeddings / head stay with the root


@pytest.fixture
def private_group():
    """single_process_group sets rank variables and a process group: undo both after the test,
    so later tests' subprocesses do not believe they run under torchrun."""
    saved = dict(os.environ)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


def _step(trainer, x, y):
    def step():
        with trainer.autocast():
            loss = torch.nn.functional.cross_entropy(trainer.model(x), y)
        trainer.step(loss)

    return step


def test_fsdp2_at_world_size_one_trains_with_dtensor_state_and_the_plain_breakdown(private_group):
    from torch.distributed.tensor import DTensor

    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 1000, (2,))
    parts = {}
    for engine in ("none", "fsdp2"):
        torch.manual_seed(0)
        trainer = build_trainer(models.create_model("resnet18"), CPU, TrainSpec(engine=engine, grad_clip=1.0))
        step = _step(trainer, x, y)
        step()  # AdamW creates its state on the first step
        parts[engine] = memory_breakdown(trainer, step)
        if engine == "fsdp2":
            assert all(isinstance(p, DTensor) for p in trainer.module.parameters())
            state = [v for s in trainer.optimizer.state.values() for v in s.values() if v.dim() > 0]
            assert state and all(isinstance(v, DTensor) for v in state)
            assert trainer.optimizer_impl == "torch.AdamW(foreach)"
            with trainer.whole_weights():  # evaluation: whole weights, no collective per forward
                assert not any(isinstance(p, DTensor) for p in trainer.module.parameters())
                with torch.no_grad():
                    trainer.module.eval()(x)
            trainer.module.train()
            assert all(isinstance(p, DTensor) for p in trainer.module.parameters())
            step()  # and it trains on, sharded
    plain, fsdp = parts["none"], parts["fsdp2"]
    for part in ("params", "grads", "optimizer"):
        assert fsdp[part] == pytest.approx(plain[part], rel=1e-3), (part, plain, fsdp)
    assert fsdp["master_weights"] == 0
    # The blocks' all-gathered weights that autograd saves are parameters, not activations.
    assert fsdp["activations"] == pytest.approx(plain["activations"], rel=0.02), (plain, fsdp)


def test_fsdp2_shards_a_short_dim_0_along_a_dimension_that_divides():
    """A (1, tokens, C) position embedding would sit whole on rank 0 under dim-0 sharding."""
    place = even_shard_placement(2)
    assert place(nn.Parameter(torch.zeros(64, 3))) is None  # FSDP2's own Shard(0)
    assert place(nn.Parameter(torch.zeros(1, 257, 64))).dim == 2  # 64 divides; 257 does not
    assert place(nn.Parameter(torch.zeros(1, 16, 3))).dim == 1
    assert place(nn.Parameter(torch.zeros(1, 3, 5))).dim == 2  # none divides: the longest
    assert place(nn.Parameter(torch.zeros(5))).dim == 0


def test_fsdp2_is_compiled_with_static_shapes(private_group, monkeypatch):
    """Issue 27 group 6: FSDP2 breaks the graph at each block, so a block's forward recompiles per
    block width, and dynamo's automatic dynamic shapes then made inductor fail on the backward of
    a ResNet block on CPU ("InductorError: TypeError: Cannot convert expression to float", a
    140-line traceback and an error record after minutes). The cell compiles what the engine asks."""
    from bench.config import run_config
    from bench.plan import make_cells
    from bench.scenarios import step as step_scenario
    from bench.tasks import task_for

    compiled: list[dict] = []
    monkeypatch.setattr(torch, "compile", lambda model, **options: compiled.append(options) or model)
    cfg = run_config({"models": "resnet18", "res": "64", "modes": "train", "engine": "fsdp2", "compile": True})
    (cell,) = make_cells(cfg.models, cfg.res, cfg.modes, [1], cfg.task)
    step_scenario._make_step(task_for(cell.task), cell, 1, models.create_model("resnet18"), CPU, cfg)
    assert compiled == [{"dynamic": False}]
    plain = build_trainer(models.create_model("resnet18"), CPU, TrainSpec(engine="none"))
    assert plain.compile_options == {}  # every other engine: torch.compile's defaults
