"""The set-up deadline (bench.measure.setup) and which cell failures let a multi-rank sweep go on
(bench.sweep.cell_outcome / outcomes_agreed)."""
from __future__ import annotations

import signal
import time

import pytest

from bench.measure.setup import SetupClock, SetupTimeout
from bench.sweep import cell_outcome, outcomes_agreed


def test_the_deadline_interrupts_a_set_up_that_runs_past_it():
    t0 = time.perf_counter()
    with pytest.raises(SetupTimeout, match="--setup-timeout 0.2 s"):
        with SetupClock(0.2):
            time.sleep(5)
    assert time.perf_counter() - t0 < 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed on the way out


def test_done_disarms_and_measures_the_set_up():
    before = signal.getsignal(signal.SIGALRM)
    with SetupClock(0.3) as clock:
        time.sleep(0.05)
        clock.first_step_s = 0.01
        clock.done()
        time.sleep(0.5)  # past the limit, but set-up is over: no exception
    assert signal.getsignal(signal.SIGALRM) is before
    rec = clock.to_record()
    assert 0.05 <= rec["setup_s"] < 0.5 and rec["first_step_s"] == 0.01


def test_a_set_up_timeout_is_not_swallowed_by_except_exception():
    with pytest.raises(SetupTimeout):
        with SetupClock(0.1):
            try:
                time.sleep(3)
            except Exception:  # noqa: BLE001 - what the --batch auto search does around a trial
                pass


@pytest.mark.parametrize(("rec", "outcome"), [
    ({"status": "ok", "flags": ["time-cap"]}, "ok"),
    ({"status": "oom", "flags": []}, "oom"),
    ({"status": "error", "flags": ["setup-timeout"]}, "setup-timeout"),
    ({"status": "error", "flags": ["time-cap"]}, "time-cap"),
    ({"status": "error", "flags": ["flops-failed"]}, "flops-failed"),
    ({"status": "error", "flags": []}, "error"),
    ({"status": "error", "flags": None}, "error"),
])
def test_cell_outcome(rec, outcome):
    assert cell_outcome(rec) == outcome


@pytest.mark.parametrize(("outcomes", "agreed"), [
    (["ok", "ok"], True),
    (["oom", "oom"], True),
    (["setup-timeout", "setup-timeout", "time-cap"], True),
    (["ok", "oom"], False),        # one rank failed alone
    (["error", "error"], False),   # an error is never a decision the ranks agreed on
    (["oom", "error"], False),
    (None, False),                 # a rank did not answer
    ([], False),
])
def test_only_agreed_outcomes_let_the_sweep_go_on(outcomes, agreed):
    assert outcomes_agreed(outcomes) is agreed
