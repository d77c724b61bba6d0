"""The outcome exchange holds when one rank fails outside a collective (an OOM) while its peer
waits in one (issue 26, item 11), on gloo: the waiting rank's collective times out and raises
after the process group's timeout, and both ranks still meet in ``exchange_outcomes`` (the
rendezvous store, not a collective) with each other's outcome. On NCCL the same needs
TORCH_NCCL_ASYNC_ERROR_HANDLING=2, which init_distributed sets (tests/unit/test_nccl_error_handling.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bench.launch.context import free_port

_RANK = textwrap.dedent("""
    import json, sys, torch
    from bench.launch import context
    ctx = context.init_distributed("cpu", timeout_s=3)
    if ctx.rank == 1:
        outcome = "oom"  # ran out of memory before the cell's next collective: never joins it
    else:
        try:
            context.all_reduce_max(1.0, ctx)  # waits for rank 1, which never comes
            outcome = "ok"
        except Exception as exc:  # gloo: the collective times out after timeout_s and raises
            outcome = "error"
    outcomes = context.exchange_outcomes("cell-0", outcome, ctx, timeout_s=20)
    print(json.dumps({"rank": ctx.rank, "outcomes": outcomes}), flush=True)
""")


@pytest.mark.multiproc
def test_a_rank_stuck_in_a_collective_still_answers_the_exchange(tmp_path):
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=tmp_path))
    answers = {}
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        line = json.loads(out.strip().splitlines()[-1])
        answers[line["rank"]] = line["outcomes"]
    assert answers == {0: ["error", "oom"], 1: ["error", "oom"]}
