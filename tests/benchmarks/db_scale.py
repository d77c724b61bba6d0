"""Scale of bench.db: N records over M run directories (default 100,000 over 2,000), copies of the
real records under results/ with varied model, res, device_name, timestamp, run_id and git commit
and 200 samples each. Times and peak memory (GNU time's maximum RSS of each fresh process) of:
one query without an index, building the index, a query with it, a report filtered by --where to
about ``--select`` records with the index, and the same report without it.

    python tests/benchmarks/db_scale.py --out /tmp/dbscale [--records 100000 --dirs 2000]

Writes scale.json and scale.md into --out (the run directories go to --out/runs)."""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["20261128-main-cpu-a", "20261128-main-cpu-b", "20261128-repeats-cpu-a", "20261128-121315-vm-461a27"]
BATCHES = [1, 2, 4, 8]
DEVICES = ["AMD EPYC", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "Intel Xeon"]


def generate(root: Path, n_records: int, n_dirs: int, seed: int = 0) -> None:
    """``n_dirs`` run directories of ``n_records / n_dirs`` distinct cells each, as a real sweep
    writes them: each (model, res, mode, batch) once per run, copied from a real record of that
    model, res and mode, with its own device, commit, timestamps and 200 samples."""
    rng = random.Random(seed)
    base: dict[tuple[str, str, str], list[dict]] = {}
    for s in SOURCES:
        for line in (REPO / "results" / s / "records.jsonl").open():
            rec = json.loads(line)
            if rec.get("status") == "ok" and rec.get("latency_samples_ms"):
                base.setdefault((rec["model"], rec["res"], rec["mode"]), []).append(rec)
    cells = [(key, batch) for key in sorted(base) for batch in BATCHES]
    per_dir = n_records // n_dirs
    if per_dir > len(cells):
        raise SystemExit(f"at most {len(cells)} distinct cells per run directory; give more --dirs")
    for d in range(n_dirs):
        run = root / f"run-{d:05d}"
        run.mkdir(parents=True, exist_ok=True)
        device, commit = rng.choice(DEVICES), f"{rng.getrandbits(160):040x}"
        lines = []
        for i, ((model, res, mode), batch) in enumerate(rng.sample(cells, per_dir)):
            rec = dict(rng.choice(base[(model, res, mode)]))
            scale = batch * rng.uniform(0.8, 1.25)
            samples = [rec["latency_ms"] * scale * rng.uniform(0.95, 1.05) for _ in range(200)]
            rec.update(batch=batch, global_batch=batch, device_name=device, run_id=run.name,
                       latency_ms=sorted(samples)[100], latency_samples_ms=samples,
                       throughput=1000.0 * batch / sorted(samples)[100],
                       timestamp=f"2026-{1 + d % 12:02d}-{1 + d % 28:02d}T00:{i // 60:02d}:{i % 60:02d}.0+0000",
                       cell_key=f"{rec.get('task', 'cls')}|{model}|{res}|{mode}|{batch}")
            lines.append(json.dumps(rec))
        (run / "records.jsonl").write_text("\n".join(lines) + "\n")
        (run / "invocations.jsonl").write_text(json.dumps({"command": "bench run", "git_commit": commit}) + "\n")


def measure(args: list[str]) -> dict:
    """Wall time and peak RSS of one fresh `python -m bench.cli` process, under GNU time -v (its
    "Maximum resident set size": this process alone, unlike RUSAGE_CHILDREN, which keeps the
    largest child so far)."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "bench.cli", *args],
                          capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args[:3])}: {proc.stderr[-2000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak_kb / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--dirs", type=int, default=2_000)
    ap.add_argument("--select", type=int, default=500)
    a = ap.parse_args()
    runs = a.out / "runs"
    if not runs.exists():
        generate(runs, a.records, a.dirs)
    dirs = str(runs / "run-*")  # bench expands the glob itself (2,000 paths)
    index = a.out / "index.duckdb"
    index.unlink(missing_ok=True)
    n_sel_dirs = max(1, a.select // max(1, a.records // a.dirs))
    last = f"run-{n_sel_dirs - 1:05d}"
    where = f"run_id <= '{last}' AND device_name <> ''"
    query = "SELECT model, res, mode, median(latency_ms) FROM records GROUP BY ALL"
    steps = {
        "report --where, index": ["report", dirs, "--where", where, "--index", str(index),
                                  "--out", str(a.out / "r1.html")],
    }
    results = {"query (no index)": measure(["query", query, dirs, "--format", "csv"]),
               "build index": measure(["query", "SELECT count(*) FROM records", dirs, "--index", str(index)]),
               "query (index)": measure(["query", query, dirs, "--index", str(index), "--format", "csv"]),
               **{k: measure(v) for k, v in steps.items()},
               "report --where, no index": measure(["report", dirs, "--where", where,
                                                    "--out", str(a.out / "r2.html")])}
    meta = {"records": a.records, "dirs": a.dirs, "selected_dirs": n_sel_dirs, "where": where}
    (a.out / "scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [f"{a.records} records over {a.dirs} run directories; --where selects {n_sel_dirs} directories", "",
             "| step | time (s) | peak RSS (MB) |", "|---|---|---|"]
    lines += [f"| {k} | {v['wall_s']} | {v['peak_rss_mb']} |" for k, v in results.items()]
    (a.out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
