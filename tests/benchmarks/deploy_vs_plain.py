"""bench's ONNX Runtime and OpenVINO latency against a plain loop of the runtime's own API, side by
side in one process, at the same threads and on the same input (issue 30: they must agree within
5%). Run it on a quiet machine only; it prints one line per (model, runtime) and exits 1 when any
median differs by more than 5%.

    .venv/bin/python tests/benchmarks/deploy_vs_plain.py --models resnet50,pvt_small,vit_s --res 224 --threads 4

bench's figure is ``bench.measure.timing.measure`` over the cell's own step (bench.deploy's
session / compiled model, as ``bench run --backend`` times it). The plain figure is the median of
``--iters`` back-to-back calls of the runtime's own API (``InferenceSession.run`` on a fresh
session with the same options; ``CompiledModel`` infer request on a fresh compile), after
``--warmup`` calls, timed with ``time.perf_counter``. The two alternate in ``--rounds`` rounds so a
drift of the machine hits both alike; the medians over rounds are compared.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.deploy import DeploySpec, backend_for
from bench.deploy.onnxruntime import session
from bench.measure.timing import measure
from bench.plan import Cell
from bench.tasks import task_for


def plain_ms(call, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def plain_call(backend: str, exported, x: torch.Tensor, spec: DeploySpec):
    """The runtime's own API, set up as a user following its docs would, with the same settings."""
    feed = x.numpy()
    if backend == "onnxruntime":
        sess = session(exported.artifact, spec)  # same SessionOptions: intra = threads, inter = 1
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: feed})
    import openvino as ov

    compiled = ov.Core().compile_model(ov.convert_model(exported.artifact), "CPU", {
        "INFERENCE_NUM_THREADS": spec.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda: request.infer({0: feed})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,pvt_small,vit_s")
    parser.add_argument("--res", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--budget", type=float, default=5.0)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    worst = 0.0
    for model_name in args.models.split(","):
        task = task_for("cls")
        for backend in ("onnxruntime", "openvino"):
            cell = Cell(model_name, args.res, args.res, "infer", args.batch, "cls", backend)
            model = task.build(cell).eval()
            x = task.input(cell, args.batch, torch.device("cpu"), torch.float32, False)
            with tempfile.TemporaryDirectory() as work:
                spec = DeploySpec(torch.device("cpu"), args.threads, Path(work))
                runtime = backend_for(backend)
                exported = runtime.export(model, x, spec)
                deployed = runtime.build(exported, x, spec)
                plain = plain_call(backend, exported, x, spec)
                ours, theirs = [], []
                for _ in range(args.rounds):  # alternate, so machine drift hits both
                    ours.append(measure(deployed.step, "cpu", args.budget, max_time_s=10 * args.budget).median_ms)
                    theirs.append(plain_ms(plain, args.iters, args.warmup))
            a, b = statistics.median(ours), statistics.median(theirs)
            diff = a / b - 1
            worst = max(worst, abs(diff))
            print(f"{model_name} {args.res} b{args.batch} {backend} threads {args.threads}: bench {a:.3f} ms, "
                  f"plain loop {b:.3f} ms, bench/plain {a / b:.4f} ({100 * diff:+.1f}%) "
                  f"rounds bench {np.round(ours, 3).tolist()} plain {np.round(theirs, 3).tolist()}", flush=True)
    print(f"largest difference {100 * worst:.1f}% ({'within' if worst <= 0.05 else 'OUTSIDE'} 5%)")
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
