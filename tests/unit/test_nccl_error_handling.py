"""NCCL's async error handling is set so that a rank stuck in a collective raises after --timeout
instead of being aborted by the watchdog (issue 26, item 11): checked with CUDA and the process
group faked out (no GPU here)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from bench.launch import context


@pytest.fixture
def fake_cuda_world(monkeypatch):
    """Two ranks on CUDA, with init_process_group recording the environment it would read."""
    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, env=dict(os.environ), **kw))
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "")  # recorded, so the test's own setting is undone
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING")
    for name in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_nccl_ranks_clean_up_and_raise_instead_of_being_aborted(fake_cuda_world):
    ctx = context.init_distributed("cuda", timeout_s=30)
    assert ctx.backend == "nccl" and fake_cuda_world["backend"] == "nccl"
    assert fake_cuda_world["env"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "2"  # CleanUpOnly, set before the group


def test_a_users_own_choice_is_kept(fake_cuda_world, monkeypatch):
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    context.init_distributed("cuda", timeout_s=30)
    assert fake_cuda_world["env"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_gloo_is_left_alone(fake_cuda_world):
    context.init_distributed("cpu", timeout_s=30)
    assert fake_cuda_world["backend"] == "gloo"
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in fake_cuda_world["env"]
