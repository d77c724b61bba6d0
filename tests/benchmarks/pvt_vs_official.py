"""Benchmark (not a test): our PVT against the official implementation on the same weights.

The official code is not part of this project; point ``--official`` at its ``pvt.py``
(classification/pvt.py of the official PVT repository, or any file defining ``pvt_small`` etc.
with the same parameter names). Both models get the same state dict; outputs are compared, then
forward (inference) and training steps are timed interleaved (ours, theirs, ours, ...) so machine
load hits both alike. Prints medians and our speed-up.

    .venv/bin/python tests/benchmarks/pvt_vs_official.py --official /path/to/pvt.py --models pvt_small --res 224,512
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys

import torch
import torch.nn.functional as F

import models
from bench.measure.timing import measure


def load_official(path: str):
    spec = importlib.util.spec_from_file_location("official_pvt", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["official_pvt"] = module  # timm's @register_model looks its module up there
    spec.loader.exec_module(module)
    return module


def step_fn(model, x, mode):
    if mode == "infer":
        model.eval()

        @torch.inference_mode()
        def step():
            return model(x)

        return step
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.zeros(x.shape[0], dtype=torch.long)

    def step():
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True)
    ap.add_argument("--models", default="pvt_small")
    ap.add_argument("--res", default="224,512")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--modes", default="infer,train")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds per model per round")
    args = ap.parse_args()
    official = load_official(args.official)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in args.models.split(","):
        for res in [int(r) for r in args.res.split(",")]:
            x = torch.randn(args.batch, 3, res, res)
            ours = models.create_model(name)
            theirs = getattr(official, name)()
            theirs.load_state_dict(ours.state_dict(), strict=True)
            with torch.no_grad():
                ours.eval(), theirs.eval()
                diff = (ours(x) - theirs(x)).abs().max().item()
            for mode in args.modes.split(","):
                steps = {"ours": step_fn(ours, x, mode), "official": step_fn(theirs, x, mode)}
                medians = {k: [] for k in steps}
                for _ in range(args.rounds):
                    for k, step in steps.items():
                        medians[k].append(measure(step, torch.device("cpu"), args.budget).median_ms)
                o, t = statistics.median(medians["ours"]), statistics.median(medians["official"])
                print(f"{name} {res} {mode} b{args.batch}: ours {o:.1f} ms, official {t:.1f} ms, "
                      f"speed-up x{t / o:.3f} (max |diff| of logits {diff:.2e})")


if __name__ == "__main__":
    main()
