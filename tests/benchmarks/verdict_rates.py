"""False-alarm and detection rates of bench compare's verdict rules, by simulation (issue 29).

Not a timing: it draws synthetic runs from given variance components (log scale: between
processes, between repeats in a process, between iterations) and runs the real verdict code
(bench.stats.simulate_rates) at N = 1, 3, 5, 10 runs per side. Prints a Markdown table for
docs/comparisons.md. Default components: the calibration in results/calibration (the committed
AMD EPYC runs); give the measured ones with --process/--block/--iteration.

    .venv/bin/python tests/benchmarks/verdict_rates.py [--process V --block V --iteration V] [--day V] [--trials 40]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import stats  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    cal = next(iter(sorted((REPO / "results" / "calibration").glob("*.json"))), None)
    d = json.loads(cal.read_text()) if cal else {"process": 0.0037, "block": 0.0049}
    p.add_argument("--process", type=float, default=d["process"])
    p.add_argument("--block", type=float, default=d.get("block") or 0.0)
    p.add_argument("--iteration", type=float, default=0.0025)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--changes", default="0.5,0.1")
    p.add_argument("--day", type=float, default=0.0,
                   help="Variance between days (the invocation level): the two sides on different days, "
                        "which no calibration holds.")
    a = p.parse_args(argv)
    truth = (a.process, a.block, a.iteration)
    sd = ", ".join(f"{n} {100 * math.sqrt(v):.1f}%" for n, v in zip(("process", "block", "iteration"), truth))
    day = f"; the sides on different days, day sd {100 * math.sqrt(a.day):.1f}%" if a.day else ""
    print(f"Components (sd on log scale): {sd}{day}; 12 cells a comparison, half slowed; {a.trials} comparisons "
          "per row; threshold 3%.\n")
    print("| rule | runs per side | false alarms (per unchanged cell) | " +
          " | ".join(f"{100 * float(c):g}% slowdown found" for c in a.changes.split(",")) + " |")
    print("|---|---|---|" + "---|" * len(a.changes.split(",")))
    rules = [("calibrated", True), ("uncalibrated", True), ("within-run", True)]
    if a.day:  # the calibration with and without the day level
        rules.insert(1, ("calibrated", False))
    for rule, day_known in rules:
        name = rule if not a.day or rule != "calibrated" else \
            f"calibrated, {'with' if day_known else 'without'} the day level"
        for n in (1, 3, 5, 10):
            rates = [stats.simulate_rates(truth, n, float(c), rule, trials=a.trials, seed=n, day_var=a.day,
                                          day_known=day_known)
                     for c in a.changes.split(",")]
            fa = max(r.false_alarm for r in rates)
            found = " | ".join(f"{100 * r.detection:.0f}%" for r in rates)
            print(f"| {name} | {n} | {100 * fa:.1f}% | {found} |")


if __name__ == "__main__":
    main()
