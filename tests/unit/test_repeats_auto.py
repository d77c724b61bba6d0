"""``bench run --repeats auto`` (issue 29, item 3): how many fresh processes a run measures, from a
calibration or from the first 3 processes (Stein's two stages), the ceiling, the refusals, and the
loop itself with the child processes stubbed (each stub writes the records of its repeat)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from bench import stats
from bench.commands import run as run_mod
from bench.config import parse_command
from bench.errors import BadInput
from bench.launch import local
from bench.measure import auto_runs as A
from bench.measure import calibration as C

KEY = C.MachineKey("Test CPU", 2, 1, "2.6.0", 2)  # what the stub records below say
CELLS = ("resnet18", "vit_t")


def _calibration(process: float, block: float | None = None) -> C.Calibration:
    return C.Calibration(KEY, process, 40, block, 20 if block else 0, 4, [], "test", "2026-12-06")


def _by_hand(variance: float, change: float, threshold: float = 0.03, df: float | None = None) -> int:
    """runs_needed written out again: the normal formula, or (df) the smallest n >= 2 whose t
    quantiles at min(df, 2 (n - 1)) degrees of freedom satisfy it."""
    margin = math.log(1 + change) - math.log(1 + threshold)
    if df is None:
        z = sps.norm.ppf(0.975) + sps.norm.ppf(0.9)
        return max(1, math.ceil(2 * variance * z * z / margin ** 2))
    n = 2
    while n < 10_000:
        d = min(df, 2 * (n - 1))
        t = sps.t.ppf(0.975, d) + sps.t.ppf(0.9, d)
        if n >= 2 * variance * t * t / margin ** 2:
            return n
        n += 1
    raise AssertionError("no n")


# --------------------------------------------------------------------------- the count, calibrated
@pytest.mark.parametrize("process, block, change", [(0.0004, None, 0.10), (0.0036, 0.0049, 0.20),
                                                    (0.0002, None, 0.50), (0.0036, None, 0.30)])
def test_the_count_from_a_calibration_is_compare_s_price(process, block, change):
    want = _by_hand(process + (block or 0.0), change)
    assert want <= A.MAX_RUNS
    d = A.from_calibration(_calibration(process, block), "results/calibration/x.json", change, 0.03)
    assert d.runs == want == d.wanted and not d.capped
    assert d.line.startswith(f"auto: {want} run") and "calibration results/calibration/x.json" in d.line
    assert f"a {100 * change:g}% change needs {want} run" in d.line and "\n" not in d.line


def test_more_noise_or_a_smaller_change_asks_for_more_runs():
    quiet, noisy = _calibration(0.0016), _calibration(0.0064)
    runs = [A.from_calibration(c, "f", x, 0.03).runs for c in (quiet, noisy) for x in (0.3, 0.15)]
    assert runs[0] < runs[1] and runs[0] < runs[2] < runs[3], runs


def test_the_ceiling_says_it_was_hit():
    d = A.from_calibration(_calibration(0.0036, 0.0049), "results/calibration/x.json", 0.10, 0.03)
    assert d.wanted == _by_hand(0.0085, 0.10) > A.MAX_RUNS and d.runs == A.MAX_RUNS == 20 and d.capped
    assert f"needs {d.wanted} runs per side" in d.line and "stopped at 20" in d.line
    assert "inconclusive" in d.line and "--threads 1" in d.line
    uncal = A._decision(None, A.STAGE_ONE, 0.1, 0.03, "no calibration", "run at --threads 1 or calibrate")
    assert uncal.runs == 20 and uncal.capped and "stopped at 20" in uncal.line


# --------------------------------------------------------------------------- runs_needed with a first stage
def test_a_first_stage_estimate_prices_with_t_quantiles():
    noise = stats.RunNoise(0.0025, 2)
    normal = stats.runs_needed(noise, 0.2, 0.03)
    # an estimate on ever more df still pays for the Welch test's own 2 (n - 1) df
    assert stats.runs_needed(noise, 0.2, 0.03, df=math.inf) == _by_hand(0.0025, 0.2, df=math.inf) > normal
    few, many = stats.runs_needed(noise, 0.2, 0.03, df=2), stats.runs_needed(noise, 0.2, 0.03, df=40)
    assert few > many >= normal
    assert few == _by_hand(0.0025, 0.2, df=2) and many == _by_hand(0.0025, 0.2, df=40)
    assert stats.runs_needed(stats.RunNoise(0.0, 2), 0.2, 0.03, df=2) == 2  # the Welch test's fewest
    assert stats.runs_needed(noise, 0.2, 0.03, df=0) is None


# --------------------------------------------------------------------------- the loop, children stubbed
def _record(model: str, ms: float, repeat: int, invocation: str) -> dict:
    return {"schema_version": 2, "kind": "run", "status": "ok", "task": "cls", "model": model, "res": "64",
            "height": 64, "width": 64, "mode": "infer", "batch": 1, "global_batch": 1, "world_size": 1,
            "engine": "none", "dtype": "fp32", "precision": "fp32", "device": "cpu", "device_name": KEY.device_name,
            "threads": 1, "cell_key": f"cls|{model}|64|infer|1", "config_id": f"cfg-{model}", "settings_id": "s1",
            "latency_ms": ms, "iters": 20, "latency_samples_ms": [ms] * 20,
            "timestamp": f"2026-12-06T10:{repeat:02d}:00.000000+0000", "repeat": repeat, "repeats": repeat + 1,
            "invocation": invocation}


class _Child:
    """A stub ``bench run --repeats k`` process: on wait() it appends the records of repeat k - 1
    (each cell's figure from ``figures``) and its invocation, as the real process would."""

    def __init__(self, cmd: list[str], figures: dict[str, list[float]], code: int):
        self.cmd, self.figures, self.code = cmd, figures, code

    def wait(self) -> int:
        out = Path(self.cmd[self.cmd.index("--out") + 1])
        k = int(self.cmd[self.cmd.index("--repeats") + 1])
        out.mkdir(parents=True, exist_ok=True)
        inv = f"inv-{k}"
        with open(out / "invocations.jsonl", "a") as fh:
            fh.write(json.dumps({"invocation": inv, "torch": KEY.torch, "nproc": KEY.cpus}) + "\n")
        with open(out / "records.jsonl", "a") as fh:
            for model, series in self.figures.items():
                fh.write(json.dumps(_record(model, series[k - 1], k - 1, inv)) + "\n")
        return self.code

    def send_signal(self, sig) -> None:
        pass


def _auto(monkeypatch, tmp_path: Path, figures: dict[str, list[float]], change: float = 0.2,
          codes: dict[int, int] | None = None) -> tuple[int, list[list[str]], Path]:
    """``bench run --repeats auto`` with its children stubbed; (exit code, the child commands, out)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)  # results/calibration of this checkout is not looked into
    started: list[list[str]] = []

    def popen(cmd, env=None, **kw):
        started.append(cmd)
        return _Child(cmd, figures, (codes or {}).get(len(started), 0))

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    out = tmp_path / "runs" / "auto"
    argv = ["run", "--models", ",".join(figures), "--res", "64", "--modes", "infer", "--repeats", "auto",
            "--change", str(change), "--out", str(out), "--no-report"]
    _, cfg, _ = parse_command(argv)
    with pytest.raises(SystemExit) as info:
        run_mod.repeats_auto(cfg, argv)
    return info.value.code, started, out


def _noisy(sd: float, n: int = A.MAX_RUNS + 5, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return {m: [float(50 * math.exp(rng.normal(0, sd))) for _ in range(n)] for m in CELLS}


def _stage_one_by_hand(figures: dict[str, list[float]], change: float) -> int:
    """N from the first 3 figures of each cell: their log variance pooled (2 df a cell)."""
    variances = [np.var(np.log(f[:A.STAGE_ONE]), ddof=1) for f in figures.values()]
    n = _by_hand(float(np.mean(variances)), change, df=2 * len(variances))
    return min(max(n, A.STAGE_ONE), A.MAX_RUNS)


SIZES = [(0.005, 1), (0.05, 4), (0.08, 3)]  # 3 (the floor), 5, 20 (the ceiling) runs


@pytest.mark.parametrize("sd, seed", SIZES)
def test_uncalibrated_three_runs_set_the_count(monkeypatch, tmp_path, capsys, sd, seed):
    figures = _noisy(sd, seed=seed)
    want = _stage_one_by_hand(figures, 0.2)
    code, started, out = _auto(monkeypatch, tmp_path, figures)
    assert code == 0 and len(started) == want
    # each child: the same command, one more repeat, the same run directory, no report of its own
    for k, cmd in enumerate(started, 1):
        assert cmd[3:4] == ["run"] and cmd[cmd.index("--repeats") + 1] == str(k) and cmd.count("--repeats") == 1
        assert cmd[cmd.index("--out") + 1] == str(out) and "--no-report" in cmd and "auto" not in cmd
    err = capsys.readouterr().err
    assert "auto: no calibration of this machine (test-cpu_2cpu_1threads_torch2.6.0_schema2); 3 runs first" in err
    said = next(line for line in err.splitlines() if "runs estimate sd" in line)
    assert said.startswith(f"auto: {want} runs (no calibration of this machine; 3 runs estimate sd" if want < 20
                           else "auto: a 20% change needs ")


def test_the_sizes_differ_so_the_count_is_not_a_constant():
    wants = [_stage_one_by_hand(_noisy(sd, seed=seed), 0.2) for sd, seed in SIZES]
    assert wants == [3, 5, 20], wants


def test_figures_after_the_first_stage_never_change_the_count(monkeypatch, tmp_path):
    """No peeking: the count is set by the first 3 runs; wild later figures change nothing."""
    calm = _noisy(0.05, seed=2)
    wild = {m: f[:A.STAGE_ONE] + [x * (5.0 if i % 2 else 0.2) for i, x in enumerate(f[A.STAGE_ONE:])]
            for m, f in calm.items()}
    _, a, _ = _auto(monkeypatch, tmp_path / "a", calm)
    _, b, _ = _auto(monkeypatch, tmp_path / "b", wild)
    assert len(a) == len(b) == _stage_one_by_hand(calm, 0.2) > A.STAGE_ONE


def test_a_calibration_beside_the_run_sets_the_count_after_one_run(monkeypatch, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    cal = _calibration(0.0016)
    C.save(cal, tmp_path / "a" / "runs" / "calibration")  # calibration/ beside --out, as compare looks
    want = _by_hand(0.0016, 0.2)
    assert want == 2  # neither the first run alone nor the uncalibrated first stage
    code, started, out = _auto(monkeypatch, tmp_path / "a", _noisy(0.3, seed=5))  # its figures: ignored
    assert code == 0 and len(started) == want
    err = capsys.readouterr().err
    assert f"auto: {want} runs (calibration {out.resolve().parent / 'calibration' / (KEY.slug + '.json')}" in err
    assert "no calibration" not in err
    # the run directory holds one repeat per process
    recs = C.read_run(out).records
    assert sorted({r["invocation"] for r in recs}) == [f"inv-{k}" for k in range(1, want + 1)]


def test_the_loop_stops_at_the_ceiling(monkeypatch, tmp_path, capsys):
    code, started, _ = _auto(monkeypatch, tmp_path, _noisy(0.3, seed=6), change=0.1)
    assert code == 0 and len(started) == A.MAX_RUNS
    assert "stopped at 20: the answer will be inconclusive" in capsys.readouterr().err


@pytest.mark.parametrize("codes, ran, code", [({2: 1}, 2, 1), ({1: 99}, 1, 99), ({3: 130}, 3, 130)])
def test_the_first_failing_process_ends_the_run_with_its_code(monkeypatch, tmp_path, codes, ran, code):
    got, started, _ = _auto(monkeypatch, tmp_path, _noisy(0.04, seed=7), codes=codes)
    assert got == code and len(started) == ran


def test_a_stop_signal_between_processes_starts_no_further_one(monkeypatch, tmp_path):
    import signal

    class Stopped(_Child):
        def wait(self) -> int:
            code = super().wait()
            signal.raise_signal(signal.SIGTERM)  # forwarded to it and remembered by the loop
            return code

    started: list[list[str]] = []
    monkeypatch.setattr(local.subprocess, "Popen", lambda cmd, env=None, **kw: started.append(cmd) or
                        Stopped(cmd, _noisy(0.04), 0))
    assert local.run_in_turn(lambda done: ["x", "--out", str(tmp_path), "--repeats", str(done + 1)], 20) == 99
    assert len(started) == 1


# --------------------------------------------------------------------------- refusals
def _refused(argv: list[str]) -> str:
    with pytest.raises(BadInput) as info:
        parse_command(argv)
    assert "\n" not in info.value.message
    return info.value.message


def test_auto_with_a_scaling_study_is_refused():
    message = _refused(["run", "--models", "resnet18", "--repeats", "auto", "--nproc", "1,2"])
    assert "--repeats auto" in message and "--nproc 1,2" in message


@pytest.mark.parametrize("bad", ["Auto", "0", "auto,2", "1.5", "1001"])
def test_a_bad_repeats_names_auto_too(bad):
    assert "or auto" in _refused(["run", "--models", "resnet18", "--repeats", bad])


def test_auto_from_a_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("models: resnet18\nrepeats: auto\nchange: 0.25\n")
    cfg = parse_command(["run", "--config", str(path)])[1]
    assert cfg.repeats == "auto" and cfg.change == 0.25
    assert parse_command(["run", "--config", str(path), "--repeats", "2"])[1].repeats == 2  # the line wins


def test_first_three_repeats_of_one_process_cannot_size_the_run(tmp_path):
    """A directory whose repeats 0-2 one earlier process measured: no process-level estimate, said."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "records.jsonl").write_text("".join(json.dumps(_record("resnet18", 50 + k, k, "inv-1")) + "\n"
                                               for k in range(3)))
    d = A.from_stage_one(C.read_run(out), 0.1, 0.03)
    assert d.runs == A.STAGE_ONE and d.wanted is None and "2 or more processes" in d.line


def test_change_is_a_bounded_fraction():
    assert parse_command(["run", "--models", "resnet18"])[1].change == A.DEFAULT_CHANGE == 0.1
    assert "bad --change" in _refused(["run", "--models", "resnet18", "--change", "0"])
    assert "bad --change" in _refused(["run", "--models", "resnet18", "--change", "11"])


def test_auto_under_a_launcher_is_one_line_and_creates_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(local, "run_in_turn", lambda *a, **k: pytest.fail("started a process"))
    out = tmp_path / "run"
    result = CliRunner().invoke(run_mod.run_command, ["--models", "resnet18", "--res", "64", "--modes", "infer",
                                                      "--repeats", "auto", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "--repeats auto" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_slurm_submit_refuses_auto_for_a_job_of_ranks(tmp_path):
    from bench.commands.slurm import slurm_group

    out = tmp_path / "r"
    result = CliRunner().invoke(slurm_group, ["submit", "--tasks-per-node", "2", "--", "run", "--models", "resnet18",
                                              "--repeats", "auto", "--out", str(out)], env={"PATH": str(tmp_path)})
    assert result.exit_code == 2 and "--repeats auto" in result.output and "sbatch" not in result.output
    assert not out.exists()
