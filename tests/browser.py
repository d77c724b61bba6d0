"""Headless Chromium for the report tests: what a reader's browser makes of the page.

Chromium comes from the Debian package. CI installs it beforehand; where it is missing and this
is a root shell with apt, the first test that needs it installs it, and only where that is
impossible (no apt, not root, registry unreachable) do the browser tests skip, saying why.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]
_INSTALL = "apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium"


def chromium() -> str:
    """Path of the chromium binary, installing the Debian package if needed and possible."""
    found = shutil.which("chromium")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("chromium is not installed and apt-get (as root) is not available to install it")
    proc = subprocess.run(["sh", "-c", _INSTALL], capture_output=True, text=True, timeout=900)
    found = shutil.which("chromium")
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"chromium is not installed and apt could not install it: {tail[0]}")
    return found


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2000) -> Path:
    """The page as a reader first sees it, as a PNG."""
    _run([f"--screenshot={png}", f"--window-size={width},{height}", Path(page).resolve().as_uri()])
    assert png.is_file(), f"chromium wrote no screenshot to {png}"
    return png


def dump_dom(page: Path) -> str:
    """The DOM after the page has loaded (and after any script on it had its chance to run)."""
    return _run(["--dump-dom", Path(page).resolve().as_uri()]).stdout


def scroll_widths(page: Path, width: int = 1400) -> tuple[int, int]:
    """(document.scrollingElement.scrollWidth, the widest table's own scroll width) of the page at a
    ``width``-px viewport: a copy of the page with a measuring script, its DOM dumped after load.
    The tables sit in overflow boxes, so the document alone would not show a table that scrolls."""
    import re

    html = Path(page).read_text()
    probe = ("<script>window.addEventListener('load', () => { const t = [...document.querySelectorAll('table')]"
             ".map(e => e.scrollWidth); document.body.setAttribute('data-widths', "
             "document.scrollingElement.scrollWidth + ',' + Math.max(0, ...t)); });</script>")
    with tempfile.TemporaryDirectory(prefix="scroll-width-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(html.replace("</body>", probe + "</body>"))
        dom = _run([f"--window-size={width},1000", "--virtual-time-budget=3000", "--dump-dom",
                    copy.resolve().as_uri()]).stdout
    found = re.search(r'data-widths="(\d+),(\d+)"', dom)
    assert found, "the measuring script did not run"
    return int(found.group(1)), int(found.group(2))
