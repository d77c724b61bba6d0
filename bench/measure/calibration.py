"""A device's run-to-run noise as a stored, versioned figure (``bench calibrate``), and the key
that says which machines it holds for.

The figure is a pair of variance components on the log scale of a cell's figure (Kalibera &
Jones): between processes (fresh ``bench run`` invocations) and between repeats inside one
process, estimated from the repeats and invocations already in run directories
(``stats.nested_variance_components`` per cell identity, pooled over cells by degrees of
freedom). ``bench compare`` reads it to put between-run noise into a one-repeat interval.

The key is what makes two machines the same for this purpose: the CPU model or GPU name, the
host's CPU count and the threads a rank used, the torch version and the record schema. A
calibration is a JSON file ``<dir>/<key>.json`` that a user can commit beside the runs."""
from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import __version__, stats
from bench.errors import BadInput
from bench.record import ENV, RunDir, upgrade

FORMAT = 1                                # the calibration file's own version
DEFAULT_DIR = Path("results") / "calibration"
LEVELS = ("block", "process")             # repeats within a process, processes (runs)


@dataclass(frozen=True)
class MachineKey:
    """What makes two machines the same for their run-to-run noise."""

    device_name: str          # CPU model or GPU name, as records say it
    cpus: int | None          # the host's CPU count (env.json's nproc)
    threads: int | None       # threads per rank
    torch: str | None
    schema_version: int | None

    @property
    def slug(self) -> str:
        """A file name: 'amd-epyc_2cpu_2threads_torch2.14.1_schema2'."""
        name = re.sub(r"[^a-z0-9.]+", "-", self.device_name.lower()).strip("-") or "unknown"
        torch = re.sub(r"[^A-Za-z0-9.]+", "-", self.torch or "unknown")
        return f"{name}_{self.cpus or 'x'}cpu_{self.threads or 'x'}threads_torch{torch}_schema{self.schema_version}"


@dataclass(frozen=True)
class Calibration:
    key: MachineKey
    process: float            # variance of log figure between processes
    df_process: int
    block: float | None       # between repeats within a process (None: never more than one)
    df_block: int
    cells: int                # cell identities that contributed
    runs: list[str]           # the run directories it came from
    method: str               # how it was obtained, in words
    created: str              # ISO date
    bench_version: str = __version__
    format: int = FORMAT
    # Between sessions (days, machine instances), which a run's processes share: added when two
    # runs share no session (``sessions``). None: not measured (older files too).
    session: float | None = None
    df_session: int = 0
    session_source: str | None = None  # where it was measured, in words

    def noise(self) -> stats.RunNoise:
        sd = math.sqrt(self.process)
        day = (f"; sd {100 * math.sqrt(self.session):.1f}% between sessions, {self.df_session} df"
               if self.session is not None else "")
        return stats.RunNoise(self.process, self.df_process, self.block, self.df_block,
                              f"this device's calibration ({self.key.slug}: sd {100 * sd:.1f}% between runs, "
                              f"{self.df_process} df{day})", self.session, self.df_session)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "key": asdict(self.key), "slug": self.key.slug}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "Calibration":
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT:
                raise BadInput(f"calibration {where} has format {d.get('format')!r}; this bench reads {FORMAT}: "
                               "calibrate again (bench calibrate)")
            fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
            fields["key"] = MachineKey(**d["key"])
            cal = cls(**fields)
            if not (cal.process >= 0 and math.isfinite(cal.process)):
                raise ValueError("process variance")
            if cal.session is not None and not (cal.session >= 0 and math.isfinite(cal.session)
                                                and isinstance(cal.df_session, int) and cal.df_session >= 1):
                raise ValueError("session variance")
            return cal
        except BadInput:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise BadInput(f"calibration {where} is not a calibration file ({e}); "
                           "write one with bench calibrate") from None


# --------------------------------------------------------------------------- reading run directories
def _invocations(path: Path) -> dict[str, dict]:
    out = RunDir(path).invocation_entries()
    if not out and (path / ENV).is_file():
        try:
            d = json.loads((path / ENV).read_text())
            if isinstance(d, dict):
                out[str(d.get("invocation"))] = d
        except (OSError, ValueError):
            pass
    return out


def sessions(path: str | Path) -> set[str]:
    """The sessions a run directory's processes ran in: host name and UTC date of each invocation
    (another day, or a host of another name, is another session; machines that share a name, as
    this project's CI VMs all called ``vm`` do, count as one on one day). Empty when none is recorded."""
    out = set()
    for inv in _invocations(Path(path)).values():
        host, started = inv.get("hostname"), inv.get("started_at")
        if isinstance(host, str) and isinstance(started, str) and len(started) >= 10:
            out.add(f"{host} {started[:10]}")
    return out


def apart(base: str | Path, new: str | Path) -> bool:
    """Whether two runs share no session (both known): then their noise between sessions counts."""
    sb, sn = sessions(base), sessions(new)
    return bool(sb and sn) and sb.isdisjoint(sn)


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def machine_key(record: dict, invocation: dict | None) -> MachineKey:
    inv = invocation or {}
    torch = inv.get("torch") or (inv.get("packages") or {}).get("torch")
    return MachineKey(str(record.get("device_name") or "unknown"), _int(inv.get("nproc")), _int(record.get("threads")),
                      str(torch) if torch else None, _int(record.get("schema_version")))


@dataclass(frozen=True)
class Measured:
    """The ok records of a run directory, each with its machine key."""

    run_dir: str
    records: list[dict]
    keys: list[MachineKey]


def read_run(path: str | Path) -> Measured:
    run = Path(path)
    invs = _invocations(run)
    fallback = next(iter(invs.values()), None)
    records, keys = [], []
    for r in RunDir(run).records():
        if not isinstance(r, dict) or r.get("status") != "ok":
            continue
        r = upgrade(r)
        inv = invs.get(str(r.get("invocation")), fallback)
        records.append(r)
        keys.append(machine_key(r, inv))
    return Measured(str(run), records, keys)


def processes_of(measured: Measured, records: list[dict]) -> tuple[str, ...]:
    """The process of each repeat of one cell (``stats.repeat_processes``), named with its run
    directory: two copies of a run are not one process."""
    return tuple(f"{measured.run_dir}#{p}" for p in stats.repeat_processes(records))


def key_of(measured: Measured) -> MachineKey | None:
    """The run's machine key; None when its records disagree (a run across machines)."""
    keys = set(measured.keys)
    return next(iter(keys)) if len(keys) == 1 else None


# --------------------------------------------------------------------------- estimating
def components_by_cell(runs: list[Measured], metric: str = "latency") -> dict[tuple, stats.VarianceComponents]:
    """Per cell identity: the (block, process) components of its log figures over every process
    of every run that measured it."""
    trees: dict[tuple, dict[str, list[float]]] = {}
    for m in runs:
        groups = stats.cell_groups(m.records)
        for ident, recs in groups.items():
            t = stats.Timings.from_records(recs)
            if t is None:
                continue
            for proc, fig in zip(processes_of(m, recs), t.per_repeat(metric)):
                if fig > 0 and math.isfinite(fig):
                    trees.setdefault(ident, {}).setdefault(proc, []).append(math.log(fig))
    return {ident: stats.nested_variance_components(list(tree.values()), LEVELS)
            for ident, tree in trees.items() if len(tree) >= 2}


def calibrate_from_runs(paths: list[str], method: str, metric: str = "latency") -> list[Calibration]:
    """The calibration of the one machine key of ``paths`` (cells measured in two or more
    processes). Runs of several machines are refused: a calibration is one device's noise, and a
    mix is most often a wrong --from rather than a wish for several files."""
    runs = [read_run(p) for p in paths]
    for m in runs:
        if not m.records:
            raise BadInput(f"{m.run_dir} holds no finished (ok) record")
    keys = sorted({k.slug for m in runs for k in m.keys})
    if len(keys) > 1:
        raise BadInput(f"the runs were measured on {len(keys)} machines ({', '.join(keys)}); "
                       "calibrate each machine from its own runs")
    by_key: dict[MachineKey, list[Measured]] = {}
    for m in runs:
        for key in set(m.keys):
            idx = [i for i, k in enumerate(m.keys) if k == key]
            by_key.setdefault(key, []).append(Measured(m.run_dir, [m.records[i] for i in idx], [key] * len(idx)))
    out = []
    today = datetime.date.today().isoformat()
    for key, ms in by_key.items():
        cells = components_by_cell(ms, metric)
        if not cells:
            continue
        pooled = stats.pooled_components(list(cells.values()))
        block, df_block = pooled.variances[0], pooled.df[0]
        out.append(Calibration(key, float(pooled.variances[1]), int(pooled.df[1]),
                               float(block) if df_block > 0 else None, int(df_block), len(cells),
                               sorted({m.run_dir for m in ms}), method, today))
    if not out:
        raise BadInput("no cell was measured in two or more processes (runs or invocations) on one machine: "
                       "calibrating needs the same cells run at least twice")
    return out


def per_cell_table(paths: list[str], metric: str = "latency") -> list[tuple[str, float, float, int]]:
    """(cell key, block sd, process sd, processes) per cell: where the noise sits, for the reader."""
    runs = [read_run(p) for p in paths]
    rows = []
    for ident, vc in sorted(components_by_cell(runs, metric).items()):
        rows.append((ident[0], math.sqrt(vc.variances[0]) if vc.df[0] else math.nan,
                     math.sqrt(vc.variances[1]), vc.df[1] + 1))
    return rows


# --------------------------------------------------------------------------- finding one
def save(cal: Calibration, directory: Path) -> Path:
    """``<directory>/<slug>.json``, written whole or not at all (bench.outputs.write_atomically)."""
    from bench.outputs import write_atomically

    directory.mkdir(parents=True, exist_ok=True)
    return write_atomically(directory / f"{cal.key.slug}.json", cal.to_json(), "--out")


def find(key: MachineKey, places: list[Path]) -> Calibration | None:
    """The calibration for ``key`` in the first place that has one: a file is read as it is
    (and must be for this key), a folder is looked into for ``<slug>.json``."""
    found = find_file(key, places)
    return found[0] if found else None


def find_file(key: MachineKey, places: list[Path]) -> tuple[Calibration, Path] | None:
    """``find``'s calibration and the file it was read from."""
    for place in places:
        path = place if place.is_file() else place / f"{key.slug}.json"
        if path.is_file():
            cal = Calibration.from_json(path.read_text(errors="replace"), str(path))
            if cal.key != key:
                if place.is_file():
                    raise BadInput(f"calibration {path} is for {cal.key.slug}, not this machine ({key.slug})")
                continue
            return cal, path
    return None


def sd_percent(variance: float | None) -> str:
    return "-" if variance is None or not math.isfinite(variance) else f"{100 * math.sqrt(variance):.1f}%"



def check_given(given: str | None) -> None:
    """``--calibration PATH`` of compare and history: it must exist (a file or folder of bench calibrate's)."""
    if given is not None and not Path(given).exists():
        raise BadInput(f"--calibration {given} does not exist; pass a file or folder written by bench calibrate")


def default_places(run: str | Path) -> list[Path]:
    """Where a run's calibration is looked for when none is given: results/calibration (of the
    working directory), then calibration/ beside the run directory."""
    return [DEFAULT_DIR, Path(run).resolve().parent / "calibration"]


def for_pair(base: str | Path, new: str | Path, given: str | None) -> tuple[Calibration | None, str]:
    """The calibration of the machine both runs were measured on, or None; and a sentence saying
    which. Looked for in ``given`` (a file or folder), else in results/calibration and in
    calibration/ beside BASE: the one rule of bench compare and bench history."""
    check_given(given)
    kb, kn = key_of(read_run(base)), key_of(read_run(new))
    if kb is None or kb != kn:
        return None, "No calibration applies: the runs differ in machine (device, CPUs, threads, torch or schema)."
    places = [Path(given)] if given is not None else default_places(base)
    cal = find(kb, places)
    if cal is None:
        return None, (f"No calibration for this machine ({kb.slug}): one-process cells stay inconclusive; "
                      f"bench calibrate --from RUN_DIR... writes one.")
    return cal, f"Run-to-run noise: calibration {kb.slug} ({cal.method}, {cal.created})."
