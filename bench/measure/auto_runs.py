"""How many fresh processes ``bench run --repeats auto`` measures: as many as this machine's noise
between runs says a change of ``--change`` needs (``stats.runs_needed``), one repeat each, since
the noise that one run cannot average away lives between processes (docs/comparisons.md).

- **Calibrated** (``bench calibrate`` wrote one for this machine): N is the price ``bench
  compare`` states for the change, ``runs_needed(calibration, change, threshold)``. The machine
  key is read from the records of the run's first process, as ``bench compare`` reads it from a
  run's records (``calibration.key_of``), and the file is looked for where compare looks
  (``calibration.default_places``): the two agree by construction, with no guess at the threads,
  the CPU or GPU name or the torch version a rank will report.
- **Not calibrated**: a two-stage design in the manner of Stein (1945). The first ``STAGE_ONE``
  processes estimate the variance between processes (Kalibera & Jones's components,
  ``calibration.components_by_cell``, pooled over the cells), from those processes' repeats only,
  so a resumed run decides the same N; that estimate alone sets N, with t quantiles that pay for
  its few degrees of freedom (``runs_needed(..., df=)``).
- **A ceiling**: never more than ``MAX_RUNS`` processes. A change the noise prices higher is
  said, and the run stops at the ceiling.

Never peek. N is decided from variances only, never from a measured figure's level or from its
ratio against a base run. Measuring until a comparison looks settled (or more because it looks
close) is optional stopping: every look is one more chance for the noise to cross the threshold,
so the false alarms grow past the rate the verdict states. A variance says how precise the answer
will be, not which answer it will be, so sizing the run by it leaves ``bench compare``'s error
rates as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench import stats
from bench.measure import calibration
from bench.record import AUTO_CHANGE as DEFAULT_CHANGE  # noqa: F401 (--change's default, named here too)
from bench.record import MAX_AUTO_RUNS as MAX_RUNS

STAGE_ONE = 3            # processes that estimate the noise of an uncalibrated machine


@dataclass(frozen=True)
class Decision:
    """The processes a run measures in all (``runs``, the ceiling applied), what the noise asked
    for (``wanted``; None: more than ``stats.runs_needed`` counts), and the one line that says why."""

    runs: int
    wanted: int | None
    line: str

    @property
    def capped(self) -> bool:
        return self.wanted is None or self.wanted > self.runs


def _what(change: float, threshold: float) -> str:
    return f"a {100 * change:g}% change" if change > threshold else f"'same' within +-{100 * threshold:g}%"


def _runs(n: int | None) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def _decision(wanted: int | None, floor: int, change: float, threshold: float, source: str, advice: str) -> Decision:
    """``wanted`` processes (at least ``floor``, at most ``MAX_RUNS``) and the line saying it."""
    what = _what(change, threshold)
    if wanted is not None and wanted <= MAX_RUNS:
        runs = max(wanted, floor)
        return Decision(runs, wanted, f"auto: {_runs(runs)} ({source}: {what} needs {_runs(wanted)} per side at "
                                      f"the +-{100 * threshold:g}% threshold)")
    asked = _runs(wanted) if wanted is not None else "more runs than anyone makes"
    return Decision(MAX_RUNS, wanted, f"auto: {what} needs {asked} per side ({source}); stopped at {MAX_RUNS}: "
                                      f"the answer will be inconclusive, {advice}")


def from_calibration(cal: calibration.Calibration, where: Path | str, change: float, threshold: float) -> Decision:
    """N from a calibration: the price ``bench compare`` states for ``change``."""
    wanted = stats.runs_needed(cal.noise(), change, threshold)
    return _decision(wanted, 1, change, threshold, f"calibration {where}",
                     "measure at --threads 1 (far less noise between processes on a small CPU) or ask for a "
                     "larger --change")


def stage_one_noise(measured: calibration.Measured, first: int = STAGE_ONE,
                    metric: str = "latency") -> tuple[stats.RunNoise, int] | None:
    """The variance between processes that the repeats ``0 .. first - 1`` of a run directory show
    (each cell's components, pooled over the cells by degrees of freedom), and how many cells
    gave it; None when no cell was measured in two or more of those processes."""
    keep = [i for i, r in enumerate(measured.records) if (k := stats.repeat_index(r)) is not None and k < first]
    stage = calibration.Measured(measured.run_dir, [measured.records[i] for i in keep],
                                 [measured.keys[i] for i in keep])
    cells = calibration.components_by_cell([stage], metric)
    if not cells:
        return None
    pooled = stats.pooled_components(list(cells.values()))
    process, df = pooled.variances[1], int(pooled.df[1])
    if df < 1 or not math.isfinite(process):
        return None
    return stats.RunNoise(process, df, None, 0, f"the first {first} runs of {measured.run_dir}"), len(cells)


def from_stage_one(measured: calibration.Measured, change: float, threshold: float) -> Decision:
    """N from the first ``STAGE_ONE`` processes of an uncalibrated machine (Stein's two stages)."""
    found = stage_one_noise(measured)
    if found is None:
        return Decision(STAGE_ONE, None, f"auto: no calibration of this machine, and no cell's first {STAGE_ONE} "
                                         "repeats came from 2 or more processes (its cells failed, or an earlier "
                                         "run measured them in one), so nothing to estimate its noise from; "
                                         f"stopped at {STAGE_ONE} runs")
    noise, cells = found
    wanted = stats.runs_needed(noise, change, threshold, df=noise.df_process)
    source = (f"no calibration of this machine; {STAGE_ONE} runs estimate sd {100 * math.sqrt(noise.process):.1f}% "
              f"between runs ({noise.df_process} df over {cells} cell{'s' if cells != 1 else ''})")
    return _decision(wanted, STAGE_ONE, change, threshold, source,
                     "run at --threads 1 or calibrate this machine (bench calibrate)")


class AutoRuns:
    """The process count of one ``bench run --repeats auto`` into ``run_dir``, decided once,
    between processes, from the run directory's records (never from a comparison: see the
    module's docstring). ``say`` takes the lines it states; ``places``: where a calibration is
    looked for (default: where ``bench compare`` looks for this run's)."""

    def __init__(self, run_dir: str | Path, change: float, say: Callable[[str], None],
                 places: list[Path] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.change = change
        self.say = say
        self.places = calibration.default_places(self.run_dir) if places is None else places
        self.decision: Decision | None = None
        self._looked_up = False

    def total(self, done: int) -> int:
        """The processes the run measures in all, once ``done`` have ended (0: before the first)."""
        if self.decision is not None:
            return self.decision.runs
        if done == 0:
            return 1  # the first process's records name the machine its calibration is found by
        measured = calibration.read_run(self.run_dir)
        threshold = stats.records_threshold(measured.records)
        if not self._looked_up:
            self._looked_up = True
            key = calibration.key_of(measured)
            found = calibration.find_file(key, self.places) if key is not None else None
            if found is not None:
                return self._decide(from_calibration(*found, self.change, threshold))
            named = key.slug if key is not None else "no finished cell names it"
            self.say(f"auto: no calibration of this machine ({named}); {STAGE_ONE} runs first, to estimate its "
                     "noise between runs")
        if done < STAGE_ONE:
            return STAGE_ONE
        return self._decide(from_stage_one(measured, self.change, threshold))

    def _decide(self, decision: Decision) -> int:
        self.decision = decision
        self.say(decision.line)
        return decision.runs
