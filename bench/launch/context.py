"""Who am I in the job: rank, world size and device, from whatever launched us.

Reads the standard environments so multi-node runs need no new code: torchrun / the DeepSpeed
launcher (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or plain ``srun`` tasks
(SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST; the rendezvous host is the first
node of the list, port from MASTER_PORT or derived from the job id). Backend: NCCL on CUDA, gloo
on CPU. Collectives time out after ``timeout_s`` so a dead rank ends the job instead of hanging it.
"""
from __future__ import annotations

import datetime
import os
import socket
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads when a process group forms: the engines name this type without it
    import torch


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def nodes(self) -> int:
        """How many nodes the job's ranks span, so 2 nodes x 1 rank and 1 node x 2 ranks are told
        apart. srun tasks: the step's node count (SLURM_STEP_NUM_NODES; under torchrun srun starts
        one task per node, so it holds there too); otherwise world / local world (torchrun and
        --nproc set LOCAL_WORLD_SIZE). Hostnames are not counted: emulated nodes share one host."""
        if self.world_size <= 1:
            return 1
        if started_by_srun():
            steps = os.environ.get("SLURM_STEP_NUM_NODES") or os.environ.get("SLURM_NNODES", "")
            if steps.isdigit() and int(steps) >= 1:
                return min(int(steps), self.world_size)
        return max(1, -(-self.world_size // max(1, self.local_world_size)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def started_by_srun() -> bool:
    """True in one of several tasks that srun started (SLURM_PROCID / SLURM_NTASKS >= 2)."""
    return "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def _slurm_env_to_torch() -> None:
    """Translate an srun task's SLURM_* variables into torch's, when no launcher set them."""
    if "RANK" in os.environ or not started_by_srun():
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = first_slurm_host_addr()
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def first_slurm_host_addr() -> str:
    """Address of the first node of SLURM_JOB_NODELIST (its NodeAddr, which may differ from the
    node name on emulated or multi-homed clusters)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
    try:
        first = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()[0]
        node = subprocess.run(["scontrol", "show", "node", first], capture_output=True, text=True, timeout=30).stdout
        for token in node.split():
            if token.startswith("NodeAddr="):
                return token.split("=", 1)[1]
        return first
    except (OSError, subprocess.SubprocessError, IndexError):
        return "127.0.0.1"


# TORCH_NCCL_ASYNC_ERROR_HANDLING=2 (CleanUpOnly): see nccl_error_handling.
NCCL_ERROR_HANDLING = ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")


def nccl_error_handling() -> None:
    """Let a rank whose collective timed out live to say so. torch's default (3, SkipCleanUp) has
    NCCL's watchdog abort the whole process after ``--timeout``: a rank waiting in a collective for
    a peer that ran out of memory would die with no record and never reach the outcome exchange
    (``exchange_outcomes``), so the job would end as "no answer from every rank". CleanUpOnly (2)
    aborts the communicators instead and raises in the rank (the next wait or collective throws
    ``DistBackendError``): the cell fails there, its outcome reaches the rendezvous store, and the
    ranks end the job together, each saying why. The job still ends (an aborted communicator cannot
    run the next cell), but with every rank's record. Blocking wait (TORCH_NCCL_BLOCKING_WAIT=1) is
    not used: it makes every wait block the CPU, which would change what the timing measures. A
    user's own setting is kept."""
    name, value = NCCL_ERROR_HANDLING
    os.environ.setdefault(name, value)


def init_distributed(device: str = "auto", timeout_s: float = 300.0) -> DistContext:
    """Initialise the process group when launched with several ranks; a world of 1 otherwise."""
    import torch
    import torch.distributed as dist

    _slurm_env_to_torch()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        # Under --gpus-per-task / --gpu-bind each task sees only its own GPUs: index the visible ones.
        index = local_rank % max(1, torch.cuda.device_count())
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    backend = None
    if world_size > 1:
        backend = "nccl" if use_cuda else "gloo"
        if backend == "nccl":
            nccl_error_handling()
        if not dist.is_initialized():
            dist.init_process_group(
                backend=backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=world_size
            )
    return DistContext(rank, world_size, local_rank, local_world, dev, backend)


def shutdown(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank (e.g. the run directory chosen by rank 0)."""
    import torch.distributed as dist

    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_max(value: float, ctx: DistContext) -> float:
    import torch
    import torch.distributed as dist

    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_gather_floats(value: float, ctx: DistContext) -> list[float]:
    import torch.distributed as dist

    if not ctx.distributed:
        return [value]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return [float(v) for v in out]


def all_gather(value, ctx: DistContext) -> list:
    """Every rank's picklable ``value``, in rank order."""
    import torch.distributed as dist

    if not ctx.distributed:
        return [value]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def elementwise_max(values: list[float], ctx: DistContext) -> list[float]:
    """The per-position maximum over ranks of equally long float lists (one all-reduce MAX)."""
    import torch
    import torch.distributed as dist

    if not ctx.distributed or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu().tolist()


def barrier(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.distributed:
        dist.barrier()


def exchange_outcomes(tag: str, outcome: str, ctx: DistContext, timeout_s: float) -> list[str] | None:
    """Every rank's ``outcome`` of one cell, in rank order; None when a rank did not answer within
    ``timeout_s`` (longer than the collectives' ``--timeout``, so that a rank stuck in a collective
    of the failed cell times out there and says so before its peers give up on it).

    Exchanged through the rendezvous store, not a collective: a rank still inside a collective of
    the failed cell never answers, and the others then give up here, where a collective would pair
    their next call with its stale one."""
    import torch.distributed as dist

    if not ctx.distributed:
        return [outcome]
    store = dist.distributed_c10d._get_default_store()
    keys = [f"bench-outcome/{tag}/{rank}" for rank in range(ctx.world_size)]
    try:
        store.set(keys[ctx.rank], outcome)
        store.wait(keys, datetime.timedelta(seconds=timeout_s))
        return [store.get(key).decode() for key in keys]
    except (RuntimeError, dist.DistError):  # DistStoreError: the wait timed out
        return None
