"""bench report given a directory without records: one line, exit 2 (moved from
tests/e2e/test_report.py: in process, no run needed)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.report import report_command


@pytest.mark.parametrize("make", [lambda tmp: tmp / "absent", lambda tmp: tmp], ids=["missing", "no-records"])
def test_a_directory_without_records_is_bad_input(make, tmp_path):
    result = CliRunner().invoke(report_command, [str(make(tmp_path))])
    assert result.exit_code == 2
    message = result.output.strip().splitlines()
    assert len(message) == 1 and "bench run --out" in message[0]
