"""The report's exports under hostile input (issue 18, items 1, 6, 16a, 17; the COCO symlink
borderline is in tests/unit/data/test_symlinks.py): what `--out` may name, how a wrong run
directory is named, and what a model, host or flag name holding terminal escapes, bidi
overrides or Markdown links does to the Markdown, CSV and HTML. The real command line in real
processes (tests/conftest.py::run_bench) where the user's view matters (one line, exit 2),
render_report in process for the matrices.
"""
from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import run_bench

from bench.errors import BadInput
from bench.report import render_report
from tests.e2e.test_reliability import copy_run, one_line_error

FORMATS = ("md", "csv", "html")


# --------------------------------------------------------------------------------------------
# Item 1: --out that is not a regular file or a new path is refused, and left as it was


def _special_outs(tmp_path: Path) -> dict[str, Path]:
    """A symlink to a file, a symlink to the terminal's stdout, a FIFO, a character device (a
    copy of /dev/null, root only) and a directory, each as it would be given to --out."""
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    outs = {"symlink": tmp_path / "link.md", "fd-link": tmp_path / "stdout.md", "fifo": tmp_path / "fifo.md",
            "directory": tmp_path / "dir.md"}
    outs["symlink"].symlink_to(target)
    outs["fd-link"].symlink_to("/proc/self/fd/1")
    os.mkfifo(outs["fifo"])
    outs["directory"].mkdir()
    try:
        os.mknod(tmp_path / "null.md", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        outs["device"] = tmp_path / "null.md"
    except (PermissionError, OSError):
        pass  # not root: the symlink, FIFO and directory cases still run
    return outs


def _kinds(outs: dict[str, Path]) -> dict[str, tuple[int, str | None]]:
    """What each path is (file type of lstat, and a symlink's target)."""
    return {k: (stat.S_IFMT(p.lstat().st_mode), os.readlink(p) if p.is_symlink() else None) for k, p in outs.items()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_report_out_that_is_not_a_regular_file_is_refused_and_untouched(measured, tmp_path, fmt):
    run = copy_run(measured, tmp_path)
    outs = _special_outs(tmp_path)
    before = _kinds(outs)
    for kind, out in outs.items():
        with pytest.raises(BadInput) as exc_info:
            render_report([run], out, fmt)
        assert "give a new path or a regular file" in str(exc_info.value.message), kind
    assert _kinds(outs) == before
    assert (tmp_path / "target.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_report_cli_refuses_a_fifo_and_a_symlink_in_one_line(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    outs = _special_outs(tmp_path)
    before = _kinds(outs)
    for kind in ("fifo", "symlink", *(("device",) if "device" in outs else ())):
        proc = run_bench("report", str(run), "--format", "md", "--out", str(outs[kind]))
        assert proc.returncode == 2, (kind, proc.stderr[-2000:])
        assert "is a" in one_line_error(proc), kind
        assert proc.stdout == ""
    assert _kinds(outs) == before


def test_report_into_a_regular_file_and_a_new_path_still_works(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    old = tmp_path / "old.csv"
    old.write_text("previous report")
    assert render_report([run], old, "csv") == old and old.read_text().startswith("table,")
    new = tmp_path / "new" / "deeper" / "r.md"
    assert render_report([run], new, "md") == new and new.read_text().startswith("# bench report")


# --------------------------------------------------------------------------------------------
# Item 6: --out in a place where nothing can be written is one line, exit 2, nothing created


@pytest.fixture
def read_only_tmpfs(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        yield None  # the other places still run
        return
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_report_out_where_nothing_can_be_written_is_one_line_exit_2(measured, tmp_path, read_only_tmpfs):
    run = copy_run(measured, tmp_path)
    a_file = tmp_path / "existing_file"
    a_file.write_text("x")
    cases = [(a_file / "r.md", "under a file"), (Path("/dev/null/r.html"), "under a file")]
    if os.geteuid() == 0:
        cases.append((Path("/proc/r.csv"), "not writable"))  # root may write anywhere else
    if read_only_tmpfs is not None:
        cases.append((read_only_tmpfs / "r.md", "not writable"))
    else:
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        if os.geteuid() != 0:
            cases.append((ro / "r.md", "not writable"))
    for out, words in cases:
        proc = run_bench("report", str(run), "--out", str(out))
        assert proc.returncode == 2, (out, proc.stderr[-2000:])
        assert words in one_line_error(proc), (out, proc.stderr)
        assert not out.exists(), out
    assert a_file.read_text() == "x"


# --------------------------------------------------------------------------------------------
# Item 16a: a records file given for its run directory is named as what it is


def test_report_of_a_records_file_says_it_is_a_file_and_names_its_directory(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    proc = run_bench("report", str(run / "records.jsonl"), "--out", str(tmp_path / "r.md"))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "is a file" in line and f"'{run}'" in line and "does not exist" not in line, line
    missing = run_bench("report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.md"))
    assert missing.returncode == 2 and "does not exist" in one_line_error(missing)
    assert not (tmp_path / "r.md").exists()


# --------------------------------------------------------------------------------------------
# Item 17: control characters, bidi overrides and Markdown links in names, in every export

ESC_CLEAR = "\x1b[2J\x1b]0;owned\x07"  # clear the screen, set the terminal's title
RLO = "\u202e"
HOSTILE = f"x{ESC_CLEAR}{RLO}gpj.exe\rX [click](javascript:alert(1)) ![](http://evil/x.png) <b>b</b> www.evil.com"
RAW = ("\x1b", "\x07", RLO, "\r")  # none of these may reach a file


def _hostile_copy(measured: Path, tmp_path: Path, name: str = HOSTILE) -> Path:
    """A finished run whose model, host, device and flag names, and run id, are ``name``."""
    run = copy_run(measured, tmp_path)
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if line.strip()]
    for r in records:
        r.update(model="m" + name, hostname="h" + name, device_name="d" + name, flags=["f" + name],
                 timing_flags=["f" + name])
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    env = json.loads((run / "env.json").read_text())
    env.update(hostname="h" + name, run_id="r" + name, cpu="c" + name)
    (run / "env.json").write_text(json.dumps(env))
    return run


def test_hostile_names_reach_no_export_raw(measured, tmp_path):
    run = _hostile_copy(measured, tmp_path)
    texts = {}
    for fmt in FORMATS:
        out = tmp_path / f"r.{fmt}"
        proc = run_bench("report", str(run), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        # No matplotlib glyph warnings (each printed the raw character) or any other noise.
        assert proc.stderr == "", proc.stderr[-3000:]
        assert not any(c in proc.stdout for c in RAW)
        texts[fmt] = out.read_bytes().decode("utf-8")
    for fmt, text in texts.items():
        assert not [c for c in RAW if c in text], fmt
        assert "\\x1b[2J" in text.replace("\\[", "[") and "\\u202e" in text, fmt  # shown, as escapes
    # The CSV: the escapes are in the model's cell.
    rows = list(csv.DictReader(io.StringIO(texts["csv"])))
    assert rows and rows[0]["model"].startswith("mx\\x1b[2J\\x1b]0;owned\\x07\\u202egpj.exe\\rX"), rows[0]["model"]


def test_markdown_export_has_no_link_image_or_html(measured, tmp_path):
    import markdown_it

    run = _hostile_copy(measured, tmp_path)
    out = tmp_path / "r.md"
    assert run_bench("report", str(run), "--out", str(out)).returncode == 0
    text = out.read_text()
    for renderer in (markdown_it.MarkdownIt("commonmark").enable("table"), markdown_it.MarkdownIt("gfm-like",
                                                                                                  {"linkify": False})):
        page = renderer.render(text)
        assert "<a " not in page and "<img" not in page and "<b>" not in page, page[:2000]
        assert "javascript:alert(1)" in page and "[click]" in page  # shown as text
    assert "<td" in markdown_it.MarkdownIt("commonmark").enable("table").render(text)  # still tables


def test_lone_surrogate_in_a_name_is_shown_not_a_crash(measured, tmp_path):
    """json.loads turns "\\ud800" into a lone surrogate, which UTF-8 cannot write: the old report
    died with a UnicodeEncodeError traceback."""
    run = _hostile_copy(measured, tmp_path, name="s\ud800")
    for fmt in FORMATS:
        proc = run_bench("report", str(run), "--out", str(tmp_path / f"r.{fmt}"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "ms\\ud800" in (tmp_path / f"r.{fmt}").read_text(), fmt


def test_html_page_is_autoescaped_and_shows_escapes(measured, tmp_path):
    run = _hostile_copy(measured, tmp_path)
    out = tmp_path / "r.html"
    render_report([run], out, "html")
    page = out.read_text()
    assert "<b>b</b>" not in page and "&lt;b&gt;b&lt;/b&gt;" in page
    assert 'href="javascript' not in page and 'src="http://evil' not in page
    assert "\\x1b[2J" in page and "\\u202e" in page
