"""Where the variance lives (issue 29): Kalibera & Jones's nested A/A experiment, not a test.

Levels: iterations within a block, blocks within a process, processes within an invocation (one
call of this script), invocations (calls on different occasions, merged with --merge). Each
process is a fresh ``bench run ... --repeats B`` (``--entry bench``: what users run; blocks are
its repeats, iterations its timed steps) or this script's own worker (``--entry direct``: a plain
loop of I iterations per block, which lets the suspected sources be switched one by one).
Writes DIR/components.json and DIR/components.md: one variance component per level per cell,
on log latency (a component v is a relative spread of about sqrt(v)).

Switches for the suspected sources that are ours (measure each before/after on a quiet machine):
  --omp-wait-policy PASSIVE|ACTIVE, --kmp-blocktime MS, --pin (taskset to the first cores):
      OpenMP spin and thread placement;
  --denormals off (direct): FTZ/DAZ off;  --warmup N (direct): warm-up length;
  --warm-cell MODEL (direct): a throwaway cell before each measured one (allocator state);
  --order shuffled: cell order per process;  --cold-first (direct): no throwaway first cell,
      so the first cell also pays imports and page cache;
  --thp: torch's CPU allocator asks for transparent huge pages (THP_MEM_ALLOC_ENABLE=1), so a
      tensor's cache and TLB behaviour depends less on which physical 4 KiB pages a process got;
  --no-aslr: the address-space layout fixed (setarch -R), the same in every process.

    .venv/bin/python tests/benchmarks/variance_components.py --out /tmp/aa1 --processes 6 --blocks 3
    .venv/bin/python tests/benchmarks/variance_components.py --out /tmp/aa2 --merge /tmp/aa1   # later
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import stats  # noqa: E402

LEVELS = ("iteration", "block", "process", "invocation")
DEFAULT_CELLS = ",".join(f"{m}:{r}:{mode}" for m in ("resnet18", "pvt_tiny", "vit_t") for r in (64, 96)
                         for mode in ("infer", "train"))


def _cells(text: str) -> list[tuple[str, int, str]]:
    out = []
    for item in text.split(","):
        model, res, mode = item.split(":")
        out.append((model, int(res), mode))
    return out


def _env(a) -> dict:
    env = dict(os.environ)
    if a.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = a.omp_wait_policy
    if a.kmp_blocktime is not None:
        env["KMP_BLOCKTIME"] = str(a.kmp_blocktime)
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    if a.thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    return env


def _prefix(a) -> list[str]:
    pin = ["taskset", "-c", f"0-{(a.threads or os.cpu_count() or 1) - 1}"] if a.pin else []
    return pin + (["setarch", os.uname().machine, "-R"] if a.no_aslr else [])


# --------------------------------------------------------------------------- one process
def _worker(a) -> None:
    """Direct entry: every cell, warm-up then --blocks blocks of --iters timed iterations."""
    import torch

    from bench.build import build_model

    if a.denormals == "on":
        torch.set_flush_denormal(True)
    if a.threads:
        torch.set_num_threads(a.threads)
    cells = _cells(a.cells)
    if a.order == "shuffled":
        random.Random(a.seed).shuffle(cells)

    def step_of(model_name: str, res: int, mode: str):
        model = build_model(model_name)
        x = torch.randn(1, 3, res, res)
        if mode == "train":
            model.train()
            opt = torch.optim.AdamW(model.parameters())

            def step():
                opt.zero_grad(set_to_none=True)
                model(x).float().mean().backward()
                opt.step()
            return step
        model.eval()

        def infer():
            with torch.inference_mode():
                model(x)
        return infer

    if not a.cold_first:  # imports, page cache and first-use costs paid before the first measured cell
        step_of(*cells[0])()
    out = {}
    for model_name, res, mode in cells:
        if a.warm_cell:
            warm = step_of(a.warm_cell, res, mode)
            for _ in range(3):
                warm()
        step = step_of(model_name, res, mode)
        for _ in range(a.warmup):
            step()
        blocks = []
        for _ in range(a.blocks):
            times = []
            for _ in range(a.iters):
                t0 = time.perf_counter_ns()
                step()
                times.append((time.perf_counter_ns() - t0) / 1e6)
            blocks.append(times)
        out[f"{model_name}:{res}:{mode}"] = blocks
    Path(a.worker_out).write_text(json.dumps(out))


def _process(a, k: int, inv: Path) -> None:
    if a.entry == "direct":
        target = inv / f"proc-{k}.json"
        cmd = [sys.executable, __file__, "--worker-out", str(target), "--seed", str(k), *_passed(a)]
    else:
        cells = _cells(a.cells)
        models = sorted({c[0] for c in cells})
        res = sorted({c[1] for c in cells})
        modes = sorted({c[2] for c in cells})
        cmd = [sys.executable, "-m", "bench.cli", "run", "--models", ",".join(models),
               "--res", ",".join(map(str, res)), "--modes", ",".join(modes), "--repeats", str(a.blocks),
               "--budget", str(a.budget), "--numerics", "off", "--no-report", "--out", str(inv / f"proc-{k}"),
               "--order-seed", str(k if a.order == "shuffled" else 0),
               *(["--threads", str(a.threads)] if a.threads else [])]
    print(f"process {k + 1}/{a.processes}: {' '.join(cmd[1:])}", file=sys.stderr)
    subprocess.run(_prefix(a) + cmd, env=_env(a), check=True)


def _passed(a) -> list[str]:
    out = ["--cells", a.cells, "--blocks", str(a.blocks), "--iters", str(a.iters), "--warmup", str(a.warmup),
           "--denormals", a.denormals, "--order", a.order]
    out += ["--threads", str(a.threads)] if a.threads else []
    out += ["--warm-cell", a.warm_cell] if a.warm_cell else []
    return out + (["--cold-first"] if a.cold_first else [])


# --------------------------------------------------------------------------- reading and the decomposition
def read_invocation(inv: Path) -> dict[str, list[list[list[float]]]]:
    """cell -> [process][block][iteration] latencies (ms) of one invocation folder."""
    cells: dict[str, list] = {}
    for proc in sorted(inv.glob("proc-*")):
        if proc.suffix == ".json":
            for cell, blocks in json.loads(proc.read_text()).items():
                cells.setdefault(cell, []).append(blocks)
            continue
        from bench.record import RunDir

        by_cell: dict[str, dict[int, list[float]]] = {}
        for r in RunDir(proc).records():
            if isinstance(r, dict) and r.get("status") == "ok" and r.get("latency_samples_ms"):
                name = f"{r['model']}:{r.get('height') or r.get('res')}:{r['mode']}"
                by_cell.setdefault(name, {})[int(r.get("repeat") or 0)] = r["latency_samples_ms"]
        for cell, reps in by_cell.items():
            cells.setdefault(cell, []).append([reps[k] for k in sorted(reps)])
    return cells


def decompose(invocations: list[dict]) -> dict[str, stats.VarianceComponents]:
    names = sorted({c for inv in invocations for c in inv})
    out = {}
    for cell in names:
        tree = [[[[math.log(x) for x in block if x > 0] for block in proc] for proc in inv[cell]]
                for inv in invocations if cell in inv]
        out[cell] = stats.nested_variance_components(tree, LEVELS)
    return out


def markdown(result: dict[str, stats.VarianceComponents]) -> str:
    head = "| cell | " + " | ".join(f"{lv} sd (df)" for lv in LEVELS) + " |"
    lines = [head, "|" + "---|" * (len(LEVELS) + 1)]
    for cell, vc in result.items():
        parts = [f"{100 * math.sqrt(v):.2f}% ({d})" if math.isfinite(v) and d else "-"
                 for v, d in zip(vc.variances, vc.df)]
        lines.append(f"| {cell} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="This invocation's folder (created).")
    p.add_argument("--merge", nargs="*", default=[], help="Earlier invocations' folders to decompose with this one.")
    p.add_argument("--cells", default=DEFAULT_CELLS, help="model:res:mode,... (bench entry: their cross product)")
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--iters", type=int, default=20, help="Iterations per block (direct entry).")
    p.add_argument("--budget", type=float, default=0.5, help="bench entry: --budget per visit.")
    p.add_argument("--entry", choices=("bench", "direct"), default="bench")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE"), default=None)
    p.add_argument("--kmp-blocktime", type=int, default=None)
    p.add_argument("--pin", action="store_true")
    p.add_argument("--thp", action="store_true", help="THP_MEM_ALLOC_ENABLE=1: torch's allocations on huge pages.")
    p.add_argument("--no-aslr", action="store_true", help="Run each process under setarch -R (no ASLR).")
    p.add_argument("--denormals", choices=("on", "off"), default="on")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--warm-cell", default=None)
    p.add_argument("--order", choices=("fixed", "shuffled"), default="fixed")
    p.add_argument("--cold-first", action="store_true")
    p.add_argument("--analyse-only", action="store_true", help="Decompose --out and --merge; measure nothing.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker_out:
        return _worker(a)
    if not a.out:
        p.error("--out is required")
    inv = Path(a.out)
    if not a.analyse_only:
        inv.mkdir(parents=True, exist_ok=False)
        (inv / "design.json").write_text(json.dumps(vars(a), indent=2))
        for k in range(a.processes):
            _process(a, k, inv)
    result = decompose([read_invocation(Path(d)) for d in [a.out, *a.merge]])
    (inv / "components.json").write_text(json.dumps({c: vc.to_dict() for c, vc in result.items()}, indent=2))
    (inv / "components.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
