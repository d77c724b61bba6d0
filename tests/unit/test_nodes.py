"""The node count of a cell (issue 19, part D): DistContext.nodes, the resume identity, the record
field ``nodes`` and how older records read."""
from __future__ import annotations

import pytest
import torch

from bench.config import identity_id
from bench.launch.context import DistContext
from bench.record import check_record, upgrade, valid
from bench.sweep import runtime_identity

SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_NODES", "SLURM_NNODES")


def ctx(world: int, local: int) -> DistContext:
    return DistContext(0, world, 0, local, torch.device("cpu"), "gloo" if world > 1 else None)


@pytest.fixture
def no_slurm(monkeypatch):
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("world, local, nodes", [(1, 1, 1), (2, 1, 2), (2, 2, 1), (8, 4, 2), (4, 4, 1)])
def test_nodes_from_torchrun_world_and_local_world(no_slurm, world, local, nodes):
    assert ctx(world, local).nodes == nodes


def test_nodes_of_srun_tasks_come_from_the_step(no_slurm):
    no_slurm.setenv("SLURM_PROCID", "0")
    no_slurm.setenv("SLURM_NTASKS", "4")
    no_slurm.setenv("SLURM_STEP_NUM_NODES", "2")
    assert ctx(4, 1).nodes == 2  # LOCAL_WORLD_SIZE defaulted to 1 without --ntasks-per-node: the step knows
    no_slurm.setenv("SLURM_STEP_NUM_NODES", "1")
    assert ctx(4, 1).nodes == 1
    # A single process in an allocation of several nodes ran on one.
    no_slurm.setenv("SLURM_STEP_NUM_NODES", "2")
    assert ctx(1, 1).nodes == 1


def test_two_nodes_by_one_rank_and_one_node_by_two_are_different_cells(no_slurm):
    spread, packed = runtime_identity(ctx(2, 1)), runtime_identity(ctx(2, 2))
    assert spread["nodes"] == 2 and "nodes" not in packed
    assert identity_id(spread) != identity_id(packed)


def test_single_node_runtime_hashes_as_before(no_slurm):
    """No `nodes` key on one node: config_ids of existing run directories (resume, bench compare) stay."""
    assert set(runtime_identity(ctx(1, 1))) == {"world_size", "device_name", "device_count", "threads"}


def test_record_field_nodes_and_old_records():
    assert check_record({"nodes": 2, "world_size": 2})["nodes"] == 2
    assert not valid({"nodes": -1})
    assert upgrade({"schema_version": 3, "world_size": 1})["nodes"] == 1  # one rank: one node, surely
    assert "nodes" not in upgrade({"schema_version": 3, "world_size": 2})  # 2x1 or 1x2: unknown, not guessed
    assert upgrade({"schema_version": 3, "world_size": 2, "nodes": 2})["nodes"] == 2
    assert upgrade({"world_size": 1})["nodes"] == 1  # schema v1 too


def test_base_record_carries_nodes(no_slurm):
    from types import SimpleNamespace

    from bench.plan import make_cells
    from bench.scenarios.common import base_record

    (cell,) = make_cells(["resnet18"], [(64, 64)], ["train"], [2])
    settings = SimpleNamespace(dtype="fp32", engine="ddp", grad_clip=None, zero=0, ds_config=None)
    rec = base_record(cell, ctx(2, 1), settings, kind="run", train=True)
    assert (rec["world_size"], rec["nodes"]) == (2, 2)
