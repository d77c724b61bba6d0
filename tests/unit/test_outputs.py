"""bench.outputs: the one output-path rule and the atomic write (issue 27, groups 1 and 10), the
one sanitizer's terminal form (group 8), DuckDB messages (group 11) and cli.entry's exit codes
(group 6): pure, in-process checks."""
from __future__ import annotations

import errno
import os
import sys

import click
import duckdb
import pytest

from bench import outputs
from bench.db.index import duck_message
from bench.errors import INTERNAL_ERROR_EXIT, BadInput
from bench.sanitize import terminal


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "claims").mkdir(parents=True)
    for name in ("records.jsonl", "records.node1-7.jsonl", "invocations.jsonl", "env.json", "claims/a.claim"):
        (run / name).write_text("precious\n")
    return run


@pytest.mark.parametrize("name", ["records.jsonl", "records.node1-7.jsonl", "invocations.jsonl", "env.json",
                                  "claims/a.claim", "claims/new.html"])
def test_a_runs_own_files_are_refused(run_dir, name):
    with pytest.raises(BadInput, match="never writes over measured data"):
        outputs.check_output_file(run_dir / name)
    with pytest.raises(BadInput, match="never writes over measured data"):
        outputs.write_atomically(run_dir / name, "csv,text\n")
    assert all((run_dir / n).read_text() == "precious\n" for n in ("records.jsonl", "invocations.jsonl", "env.json"))


def test_a_report_beside_the_records_is_allowed(run_dir):
    outputs.write_atomically(run_dir / "report.html", "<p>ok</p>")
    assert (run_dir / "report.html").read_text() == "<p>ok</p>"


def test_symlink_fifo_and_long_names_are_one_line(tmp_path):
    (tmp_path / "link.svg").symlink_to("/dev/full")
    os.mkfifo(tmp_path / "fifo.html")
    cases = {tmp_path / "link.svg": "is a symlink", tmp_path / "fifo.html": "is a FIFO",
             tmp_path / ("a" * 300 + ".html"): "a name of 305 bytes",
             tmp_path.joinpath(*["b" * 200] * 22, "r.html"): "the path is"}
    for path, words in cases.items():
        with pytest.raises(BadInput) as info:
            outputs.check_output_file(path)
        assert words in info.value.message and "\n" not in info.value.message, path
        assert len(info.value.message) < 400
    assert os.readlink(tmp_path / "link.svg") == "/dev/full"


def test_a_database_is_not_ours_unless_the_caller_says(tmp_path):
    db = tmp_path / "other.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE theirs (a INT)")
    con.close()
    with pytest.raises(BadInput, match="DuckDB database"):
        outputs.check_output_file(db)
    with pytest.raises(BadInput, match="--index"):
        outputs.check_output_file(db, "--index", ours=lambda p: False)
    assert outputs.check_output_file(db, "--index", ours=lambda p: True) == db


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "r.html"
    out.write_text("old")

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BadInput, match="No space left on device; nothing was written"):
        outputs.write_atomically(out, "new" * 1000)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_terminal_text_is_never_markup_or_an_escape():
    from rich.console import Console

    console = Console(record=True, width=200, force_terminal=True)
    console.print(terminal("cls|m[/]\x1b]0;t\x07\x1b[31m[link=file:///etc/passwd]x[/link]"))
    text = console.export_text()
    assert "[/]" in text and "[link=file:///etc/passwd]" in text and "\x1b" not in text and "\\x1b" in text


def test_duckdb_messages_give_no_advice_bench_refuses():
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    with pytest.raises(duckdb.Error) as deep:
        con.execute("SELECT " + "(" * 1200 + "1" + ")" * 1200)
    with pytest.raises(duckdb.Error) as ext:
        con.execute("SELECT * FROM sqlite_scan('a', 'b')")
    assert "SET" not in duck_message(deep.value) and "fewer nested" in duck_message(deep.value)
    assert "'sqlite_scanner' extension" in duck_message(ext.value) and "INSTALL" not in duck_message(ext.value)


def test_an_unexpected_exception_is_one_line_and_exit_3(monkeypatch, capsys):
    from bench import cli

    @click.command("boom")
    def boom():
        raise RuntimeError("a bug\nwith a second line")

    cli.main.add_command(boom)
    monkeypatch.setattr(sys, "argv", ["bench", "boom"])
    try:
        with pytest.raises(SystemExit) as info:
            cli.entry()
    finally:
        cli.main.commands.pop("boom")
    assert info.value.code == INTERNAL_ERROR_EXIT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: a bug" in err[0] and "BENCH_TRACEBACK=1" in err[0]
