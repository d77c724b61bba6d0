"""Run directories -> one DataFrame of records, with the labels and sort keys every table and
plot of the report uses, so that no view has to re-derive them."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

from bench.errors import BadInput
from bench.record import ENV, RECORDS, RunDir, latest_by_cell, not_a_run_dir, schema
from bench.stats import Timings, cell_groups, identity_key

if TYPE_CHECKING:
    from bench.db.limits import QueryLimits

# The modes of fine-tune cells; every other mode (infer, train) is a performance cell.
FINETUNE_MODES = ("det", "seg")


@dataclass
class Run:
    """One run directory: its environment and its records."""

    path: Path
    env: dict[str, Any]
    records: list[dict[str, Any]]
    run_id: str = ""  # unique among the runs of one report (see load_runs)
    # The samples of each cell identity (cell_key, settings_id or config_id) over all its repeats:
    # the statistics need every repeat, the tables one row per cell.
    timings: dict[tuple[str, str | None], Timings | None] = field(default_factory=dict)


def load_runs(paths: Iterable[Path]) -> list[Run]:
    """Load every run; a run id that two of them share (a copied directory) gets a "#2" suffix,
    so each run keeps its own column and line."""
    return _label_runs([load_run(Path(p)) for p in paths])


def load_where(paths: Iterable[Path], where: str, index: Path | None = None,
               limits: QueryLimits | None = None) -> list[Run]:
    """The runs of ``paths`` holding only the records the SQL condition ``where`` selects (over
    bench.db's ``records`` view; ``index``: a saved index, else a temporary one), under ``limits``
    (memory, spill, threads, time: bench.db.limits): DuckDB filters, so only the selected records
    become dicts. A run with none selected is left out."""
    from bench.db import ResultsDB
    from bench.rundirs import resolve_run_dirs

    dirs = resolve_run_dirs(paths)
    selected: dict[str, list[dict[str, Any]]] = {}
    with ResultsDB(dirs, index, limits=limits) as db:
        for line in db.warnings():
            print(line, file=sys.stderr)
        for key, rec in db.record_dicts(where):
            selected.setdefault(key, []).append(rec)
    if not selected:
        raise BadInput(f"--where selected no record in the {len(dirs)} run director{'y' if len(dirs) == 1 else 'ies'}")
    by_key = {str(p.resolve()): p for p in dirs}
    return _label_runs([run_from_records(by_key[key], recs) for key, recs in selected.items()])


def _label_runs(runs: list[Run]) -> list[Run]:
    seen: dict[str, int] = {}
    for run in runs:
        base = str(run.env.get("run_id") or _first(run.records, "run_id") or run.path.name)
        seen[base] = seen.get(base, 0) + 1
        run.run_id = base if seen[base] == 1 else f"{base} #{seen[base]}"
    return runs


def load_run(path: Path) -> Run:
    """Read a run directory; a missing directory or one with no records is bad input."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(not_a_run_dir(path))
    run_dir = RunDir(path)
    if not any(p.is_file() for p in run_dir.record_files()):
        raise BadInput(f"'{path}' has no {RECORDS}; pass a directory written by `bench run --out DIR`")
    return run_from_records(path, run_dir.records())


def run_from_records(path: Path, every: list[dict[str, Any]]) -> Run:
    """A Run of ``path`` from its records as RunDir reads them (all of them, or those a --where kept)."""
    # A retried cell counts once: its latest record (by timestamp), in every table and plot; a cell
    # visited several times (--repeats) shows the estimate over its repeats in that one row.
    timings = {key: Timings.from_records(group) for key, group in cell_groups(every).items()}
    records = [_with_estimate(r, timings) for r in latest_by_cell(every)]
    if not records:
        raise BadInput(f"'{path / RECORDS}' holds no finished cell; run `bench run --out {path}` to fill it")
    env: dict[str, Any] = {}
    env_path = path / ENV
    if env_path.is_file():
        try:
            loaded = json.loads(env_path.read_text())
            env = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            env = {}
    return Run(path=path, env=env, records=records, timings=timings)


def _with_estimate(record: dict[str, Any], timings: dict) -> dict[str, Any]:
    """The cell's row: its latest record, with latency and throughput over every repeat where
    there are several (the estimate bench.stats compares)."""
    t = timings.get(identity_key(record))
    if t is None or t.n_repeats < 2 or record.get("status") != "ok":
        return record
    return {**record, "latency_ms": t.estimate("latency"), "throughput": t.estimate("throughput")}


def _first(records: Iterable[dict], key: str) -> Any:
    return next((r.get(key) for r in records if r.get(key) is not None), None)


def is_missing(v: Any) -> bool:
    """None or NaN: what a record field that was not written looks like once in a frame."""
    return v is None or v != v


def records_frame(runs: list[Run]) -> pd.DataFrame:
    """All records of all runs in one frame, with the labels and sort keys the report needs.

    One column per field of the schema (``bench.record.schema()``: nothing a writer records is
    dropped), numbers where the schema declares a number (a list that stands for one number, the
    per-rank step times, becomes that number). ``engine_label`` names the engine as a reader
    knows it ("deepspeed ZeRO-2"); ``setup`` is "<device_name> · <engine_label> ×<world_size>",
    ``series`` adds the run id so two runs of the same set-up (two commits, say) stay apart.
    ``pixels`` is the size asked for, ``input_pixels`` the size fed to the model (``input_hw``),
    and ``label`` the model with its task where that is not classification.
    """
    spec = schema()
    names = list(spec.fields)
    rows = []
    for run_index, run in enumerate(runs):
        for r in run.records:
            row = {**{k: _scalar_or_json(spec.containers, k, r.get(k)) for k in names}, "run_id": run.run_id,
                   "run_index": run_index}
            row["device_name"] = row["device_name"] or run.env.get("device_name") or row["device"]
            rows.append(row)
    df = pd.DataFrame(rows, columns=[*names, "run_index"])
    df = df.astype({"model": "object", "res": "object", "mode": "object"})
    for name in spec.numeric:
        scalar = spec.fields[name].display and spec.fields[name].display.scalar
        df[name] = pd.to_numeric(df[name].map(scalar) if scalar else df[name], errors="coerce")
    df["model"] = df["model"].map(lambda m: "?" if is_missing(m) else str(m))
    df["mode"] = df["mode"].map(lambda m: "infer" if is_missing(m) else str(m))
    df["task"] = df["task"].map(lambda t: "?" if is_missing(t) else str(t))  # older records: record.upgrade
    df["engine"] = df["engine"].fillna("none").astype(str)
    df["world_size"] = df["world_size"].fillna(1).astype(int)
    df["device_name"] = df["device_name"].fillna("unknown device").astype(str)
    df["status"] = df["status"].fillna("ok").astype(str)
    df = df.copy()  # one block again after the per-column conversions of a wide frame
    df["res"] = [_res_label(r) for r in df[["res", "height", "width"]].to_dict("records")]
    df["pixels"] = [_pixels(r) for r in df[["res", "height", "width"]].to_dict("records")]
    # What the model was fed (det pads to a multiple of 32): the x of the scaling fits.
    df["input_pixels"] = [_input_pixels(hw, p) for hw, p in zip(df["input_hw"], df["pixels"])]
    # The one place the report names an engine (the frontier's strategy column reads it too).
    from bench.engines import engine_label  # each engine names itself (bench.engines.base)

    df["engine_label"] = [engine_label(r) for r in df[["engine", "zero"]].to_dict("records")]
    df["setup"] = df["device_name"] + " · " + df["engine_label"] + " ×" + df["world_size"].astype(str)
    df["series"] = df["setup"] + " · " + df["run_id"]
    # The name a plot line carries: the model, and its task where it is not classification (a
    # RetinaNet around pvt_small costs far more than pvt_small alone).
    df["label"] = [m if t == "cls" else f"{m} ({t})" for m, t in zip(df["model"], df["task"])]
    # Order of first appearance: the order the user asked for models and runs.
    df["model_order"] = df["model"].map({m: i for i, m in enumerate(dict.fromkeys(df["model"]))})
    df["series_order"] = df["series"].map({s: i for i, s in enumerate(dict.fromkeys(df["series"]))})
    return df


def series_names(df: pd.DataFrame) -> dict[str, str]:
    """A name for each series of ``df`` that tells it from the others: its run id where the run
    ids alone do (one set-up per run), else the whole series (set-up · run id)."""
    pairs = df[["series", "run_id"]].drop_duplicates()
    return dict(zip(pairs["series"], pairs["run_id"] if pairs["run_id"].is_unique else pairs["series"]))


def performance_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The infer/train cells: everything but the fine-tunes."""
    return df[~df["mode"].isin(FINETUNE_MODES)]


def finetune_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The fine-tune cells (detection, segmentation)."""
    return df[df["mode"].isin(FINETUNE_MODES)]


def _scalar_or_json(containers: set[str], name: str, value: Any) -> Any:
    """A field of the wrong shape (``batch: [1, 2]`` in a hand-edited file) must not break the
    report: containers stay only where the schema declares a container."""
    if isinstance(value, (list, dict)) and name not in containers:
        return json.dumps(value)[:80]
    return value


def _input_pixels(hw: Any, pixels: float) -> float:
    if isinstance(hw, (list, tuple)) and len(hw) == 2:
        try:
            return float(hw[0]) * float(hw[1])
        except (TypeError, ValueError):
            pass
    return pixels


def _res_label(r: dict) -> str:
    """"224", or "HxW" for a non-square cell recorded by height and width only."""
    if not is_missing(r.get("res")):
        return str(r["res"])
    h, w = r.get("height"), r.get("width")
    if is_missing(h):
        return "?"
    h, w = int(h), int(h if is_missing(w) else w)
    return str(h) if h == w else f"{h}x{w}"


def _pixels(r: dict) -> float:
    """Pixels per image: the x axis of the plots and the sort key of the tables."""
    h, w = r.get("height"), r.get("width")
    if not is_missing(h):
        return float(h) * float(h if is_missing(w) else w)
    try:
        sides = [float(s) for s in str(r.get("res")).lower().split("x")]
        return sides[0] * sides[-1]
    except ValueError:
        return float("nan")
