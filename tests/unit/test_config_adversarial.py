"""--config files and options as untrusted input (issue 18, items 2, 3, 4, 5 and 16c).

Each test reproduces one probe of the adversarial pass: a YAML bomb, a file that never ends, a
value of the wrong type, a thread count beyond a C int, and YAML 1.1's base-60 numbers. Each
must be one BadInput line (exit 2 at the command line), found before anything is allocated.
"""
from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from bench.config import (
    MAX_CONFIG_BYTES,
    MAX_THREADS,
    FinetuneConfig,
    RunConfig,
    options_of,
    parse_command,
)
from bench.errors import BadInput

MODELS = ["--models", "resnet18"]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(argv: list[str]) -> str:
    """The one-line message of the BadInput ``argv`` raises."""
    with pytest.raises(BadInput) as info:
        parse_command(argv)
    message = info.value.message
    assert "\n" not in message and len(message) < 1000, message
    return message


def bomb(depth: int, width: int = 9) -> str:
    """The issue's bomb: anchors nested ``depth`` deep as values of real keys (about 600 bytes at 8 deep)."""
    keys = ["res", "batch", "modes", "budget", "max-time", "repeats", "device", "dtype", "engine", "zero"]
    lines = ["models: &a [" + ",".join(["resnet18"] * width) + "]"]
    for level in range(depth):
        lines.append(f"{keys[level]}: &{chr(ord('b') + level)} [" + ",".join([f"*{chr(ord('a') + level)}"] * width)
                     + "]")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- 2. YAML bomb


@pytest.mark.parametrize("depth", [8, 9])
def test_yaml_bomb_is_refused_fast_without_expanding_it(tmp_path, depth):
    path = write(tmp_path, bomb(depth))
    assert len(Path(path).read_bytes()) < 700
    tracemalloc.start()
    started = time.perf_counter()
    message = refused(["run", "--config", path])
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "expands" in message and "aliases" in message, message
    assert elapsed < 0.5, elapsed  # the old code took 7.5 s and 1.2 GB at depth 8
    assert peak < 20 * 2**20, peak


def test_a_long_scalar_repeated_by_aliases_is_refused(tmp_path):
    """Not only nested lists: one 100 kB string named 1000 times in a list is 100 MB joined."""
    text = f"models: &a {'x' * 100_000}\nres: [{', '.join(['*a'] * 1000)}]\n"
    assert "expands" in refused(["run", "--config", write(tmp_path, text)])


def test_a_value_that_contains_itself_is_one_line(tmp_path):
    assert "contains itself" in refused(["run", *MODELS, "--config", write(tmp_path, "res: &a [224, *a]\n")])


def test_a_small_config_with_aliases_still_loads(tmp_path):
    text = "models: &m [resnet18]\nres: &r [64, 96]\nbatch: [1, 2]\n"
    _, cfg, _ = parse_command(["run", "--config", write(tmp_path, text)])
    assert cfg.models == ["resnet18"] and cfg.res == [(64, 64), (96, 96)] and cfg.batches == [1, 2]


# -------------------------------------------------------------------------------------------- 3. not a regular file


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_at_once():
    started = time.perf_counter()
    assert "not a regular file" in refused(["run", *MODELS, "--config", "/dev/zero"])
    assert time.perf_counter() - started < 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(["run", *MODELS, "--config", str(fifo)])


def test_a_file_over_the_cap_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"models": "resnet18", "out": "' + "x" * MAX_CONFIG_BYTES + '"}')
    assert "over 1 MiB" in refused(["run", "--config", str(path)])


def test_a_missing_or_binary_file_is_one_line(tmp_path):
    assert "cannot read config file" in refused(["run", *MODELS, "--config", str(tmp_path / "nope.yaml")])
    (tmp_path / "b.yaml").write_bytes(b"models: \xff\xfe\n")
    assert "not UTF-8" in refused(["run", *MODELS, "--config", str(tmp_path / "b.yaml")])


# -------------------------------------------------------------------------------------------- 4. wrong types

WRONG = [0, 1, 1.5, {"a": 1}, {}, [1, [2]], [{"a": 1}], None, [], "text", True, 10**30]


def _probe(cls: type, command: str) -> list[tuple[str, str, object]]:
    """Every option of ``cls`` given every wrong value: nothing but BadInput may come out."""
    escaped = []
    for _, opt in options_of(cls):
        key = opt.flags[0].lstrip("-")
        for value in WRONG:
            base = {"task": "seg"} if command == "finetune" and key != "task" else {}
            extra = MODELS if command == "run" and key != "models" else []
            argv = [command, *extra]
            path = Path(os.environ["PROBE_DIR"]) / "probe.json"
            path.write_text(json.dumps({**base, key: value}))
            try:
                parse_command([*argv, "--config", str(path)])
            except BadInput as exc:
                assert "\n" not in exc.message, (key, value, exc.message)
            except Exception as exc:  # noqa: BLE001 - the failure this test looks for
                escaped.append((key, repr(value), f"{type(exc).__name__}: {exc}"))
    return escaped


@pytest.mark.parametrize("cls,command", [(RunConfig, "run"), (FinetuneConfig, "finetune")])
def test_every_option_given_a_wrong_type_is_one_line(tmp_path, monkeypatch, cls, command):
    """The old code: ``channels-last: 0`` (and every flag given a number or mapping) raised
    AttributeError; ``data: null`` in a fine-tune TypeError."""
    monkeypatch.setenv("PROBE_DIR", str(tmp_path))
    assert _probe(cls, command) == []


@pytest.mark.parametrize("text,words", [
    ("channels-last: 0\n", "give true or false"),
    ("channels-last: 1.5\n", "give true or false"),
    ("channels-last: {a: 1}\n", "give true or false"),
    ("zero: {a: 1}\n", "give a number or text"),
    ("res: [[64, 96]]\n", "give a number or text"),
    ("out: null\n", "leave the key out"),
    ("budget: true\n", "not true / false"),
    ("finetune checkpoint: [[a]]\n", "list of texts"),
    ("finetune checkpoint: {resnet18: [a]}\n", "list of texts"),
])
def test_wrong_types_name_the_key_and_what_it_takes(tmp_path, text, words):
    command, _, text = text.partition(" ") if text.startswith("finetune ") else ("run", "", text)
    extra = ["--task", "seg"] if command == "finetune" else []
    message = refused([command, *MODELS, *extra, "--config", write(tmp_path, text)])
    assert words in message and text.split(":")[0] in message, message


def test_right_types_still_load(tmp_path):
    text = ("channels-last: true\ncompile: false\ntf32: false\ncudnn-benchmark: true\nbatch: [1, 8]\n"
            "budget: 0.5\nzero: 0\nmodes: infer\n")
    _, cfg, _ = parse_command(["run", *MODELS, "--config", write(tmp_path, text)])
    assert cfg.channels_last and not cfg.compile and cfg.tf32 is False and cfg.cudnn_benchmark is True
    assert cfg.batches == [1, 8] and cfg.budget == 0.5 and cfg.modes == ["infer"]


# -------------------------------------------------------------------------------------------- 5. --threads


def test_threads_beyond_any_machine_is_one_line():
    """The old code handed 2**31 to torch.set_num_threads: ValueError traceback."""
    assert f"from 1 to {MAX_THREADS}" in refused(["run", *MODELS, "--threads", "2147483648"])
    assert f"from 1 to {MAX_THREADS}" in refused(["run", *MODELS, "--threads", str(MAX_THREADS + 1)])
    _, cfg, _ = parse_command(["run", *MODELS, "--threads", str(MAX_THREADS)])
    assert cfg.threads == MAX_THREADS


# -------------------------------------------------------------------------------------------- 16c. YAML 1.2 core schema


def test_sexagesimal_stays_text_and_is_read_as_a_range(tmp_path):
    """YAML 1.1 reads 32:32:32 as 117152 (base 60): "bad resolution '117152'"."""
    _, cfg, _ = parse_command(["run", *MODELS, "--config", write(tmp_path, "res: 32:32:32\n")])
    assert cfg.res == [(32, 32)]
    message = refused(["run", *MODELS, "--config", write(tmp_path, "res: 64:1:00\n")])
    assert "64:1:00" in message and "3660" not in message, message


@pytest.mark.parametrize("text,field,value", [
    ("tf32: off\n", "tf32", False),  # 1.1: off -> False -> "False is not one of on, off"
    ("numerics: on\n", "numerics", True),
    ("cudnn-benchmark: on\n", "cudnn_benchmark", True),
    ("out: 2024-01-01\n", "out", "2024-01-01"),  # 1.1: a date
    ("repeats: 010\n", "repeats", 10),  # 1.1: octal 8
    ("batch: 0x10\n", "batches", [16]),
])
def test_yaml_12_core_schema(tmp_path, text, field, value):
    _, cfg, _ = parse_command(["run", *MODELS, "--config", write(tmp_path, text)])
    assert getattr(cfg, field) == value


def test_yes_no_are_text_under_yaml_12(tmp_path):
    """1.1 reads ``compile: yes`` as true; under 1.2 it is the text 'yes', which a flag refuses."""
    assert "give true or false" in refused(["run", *MODELS, "--config", write(tmp_path, "compile: yes\n")])
