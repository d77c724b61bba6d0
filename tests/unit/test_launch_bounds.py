"""Issue 27 groups 4, 5 and 6 (run --out), issue 26 item 7, without starting a job: the ranks of a
self-launched job are told their world size; --nproc is bounded by the cores (CPU) or the
visible GPUs (CUDA) of a local launch; an --out whose name or path the file system cannot take
is refused up front; a rank of our own job asks to die with torchrun."""
from __future__ import annotations

import os
import signal

import psutil
import pytest
import torch

from bench.errors import BadInput
from bench.launch import local


@pytest.fixture
def local_launch(monkeypatch):
    """No launcher around this process (the test runner may itself run under one)."""
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", local.LAUNCHER_PID_ENV):
        monkeypatch.delenv(name, raising=False)


# --- group 4: a --config study -------------------------------------------------------------


def test_a_rank_of_our_own_job_takes_its_world_size_for_nproc(local_launch, monkeypatch):
    """A rank re-reads a --config file's ``nproc: "1,2"``: the parent's study, not the rank's."""
    assert local.own_job_world_size() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert local.own_job_world_size() is None  # someone else's torchrun: the command line is theirs
    monkeypatch.setenv(local.LAUNCHER_PID_ENV, "12345")
    assert local.own_job_world_size() == 2
    assert local._rank_env(2, None, "/status")[local.LAUNCHER_PID_ENV] == str(os.getpid())


@pytest.mark.parametrize("argv", [
    ["run", "--nproc", "1,2", "--models", "resnet18"],
    ["run", "--nproc=1,2", "--models", "resnet18"],
], ids=["flag", "flag="])
def test_torchrun_is_not_given_nproc(argv):
    """torchrun's parser takes any --nproc for an ambiguous abbreviation of --nproc-per-node."""
    cmd = local.torchrun_command(argv, 2, ["--out", "/r"])
    assert not any(a.startswith("--nproc") for a in cmd[cmd.index("bench.cli"):])
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2" and cmd[-2:] == ["--out", "/r"]


# --- group 5 / issue 26 item 7: --nproc bounded by what the launch can place -----------------


def test_nproc_is_bounded_by_the_allotted_cores(local_launch, monkeypatch):
    monkeypatch.setattr(local, "allotted_cores", lambda: 2)
    local.check_nproc([2], "cpu")
    local.check_nproc([1, 2], "cpu")
    for sizes in ([3], [1, 2, 64], [10**18]):
        with pytest.raises(BadInput, match=r"on 2 allotted core\(s\); give at most --nproc 2"):
            local.check_nproc(sizes, "cpu")


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_nproc_is_bounded_by_the_visible_gpus(local_launch, monkeypatch, device):
    """Two ranks on cuda:0 (launch/context.py: local_rank % device_count) make NCCL abort."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(local, "allotted_cores", lambda: 64)  # cores are not the bound on CUDA
    local.check_nproc([2], device)
    with pytest.raises(BadInput, match="3 ranks need 3 GPUs and 2 are visible"):
        local.check_nproc([1, 3], device)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BadInput, match="give at most --nproc 1"):
        local.check_nproc([2], device)


def test_gpus_are_not_the_bound_on_cpu(local_launch, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(local, "allotted_cores", lambda: 4)
    local.check_nproc([4], "cpu")


def test_under_a_launcher_nproc_is_not_bounded_here(monkeypatch):
    """srun / torchrun placed the ranks (a GPU each under --gpus-per-task): not ours to bound."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(local, "allotted_cores", lambda: 1)
    local.check_nproc([8], "cpu")


def test_a_rank_of_our_job_asks_to_die_with_torchrun(local_launch, monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(local, "_prctl", lambda: lambda *args: calls.append(args))
    local.die_with_launcher()  # not a rank of ours: nothing
    monkeypatch.setenv("RANK", "0")
    local.die_with_launcher()  # a rank of someone else's launcher: nothing
    assert calls == []
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    grandparent = psutil.Process(os.getppid()).ppid()
    monkeypatch.setenv(local.LAUNCHER_PID_ENV, str(grandparent))  # parent = "torchrun", its parent = "the launcher"
    local.die_with_launcher()
    assert calls == [(local.PR_SET_PDEATHSIG, int(signal.SIGKILL))] and exits == []
    monkeypatch.setenv(local.LAUNCHER_PID_ENV, str(os.getppid()))  # the launcher is not torchrun's parent: orphaned
    local.die_with_launcher()
    assert exits == [128 + int(signal.SIGKILL)]


def test_torchrun_dies_with_the_parent(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(local, "_prctl", lambda: lambda *args: calls.append(args))
    local._die_with_parent_hook()()
    assert calls == [(local.PR_SET_PDEATHSIG, int(signal.SIGKILL))]


# --- group 6: an --out the file system cannot take ---------------------------------------------


@pytest.mark.parametrize("make, as_file", [
    (lambda tmp: tmp / ("a" * 300), True),
    (lambda tmp: tmp / "new" / ("a" * 256) / "run", True),
    (lambda tmp: tmp.joinpath(*["b" * 200] * 22), True),
    (lambda tmp: tmp.joinpath(*["c" * 20] * 190), False),  # under PATH_MAX, not with the run's own paths under it
], ids=["300-byte name", "long name under a new folder", "4,400-char path", "no room under it"])
def test_an_out_the_file_system_cannot_take_is_refused(tmp_path, make, as_file):
    out = make(tmp_path / "w")
    (tmp_path / "w").mkdir()
    with pytest.raises(BadInput) as refused:
        local.check_out_dir(str(out))
    message = str(refused.value)
    assert "\n" not in message and len(message) < 400 and "choose a shorter --out" in message
    assert list((tmp_path / "w").iterdir()) == []
    if as_file:  # a report's --out too
        with pytest.raises(BadInput, match="choose a shorter --out"):
            local.check_out_file(str(out / "report.html"))


def test_names_and_paths_within_the_limits_pass(tmp_path):
    local.check_out_dir(str(tmp_path / ("a" * 255)))
    local.check_out_dir(str(tmp_path.joinpath(*["d" * 100] * 20)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ['nproc: "1,2"', "nproc: [1, 2]"], ids=["text", "list"])
def test_a_config_file_nproc_is_a_study_as_the_flag_is(tmp_path, text):
    from bench.config import parse_command

    config = tmp_path / "study.yaml"
    config.write_text(text + "\n")
    argv = ["run", "--config", str(config), "--models", "resnet18", "--modes", "infer"]
    assert parse_command(argv)[1].nproc == [1, 2]
