"""A user's mistake gets one line naming the file and the problem, exit code 2, no traceback, nothing changed."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from loyal.app.cli import app

from conftest import REPO, tree_digest, write

GOOD = "customer_id,item_id,timestamp,quantity,unit_price\nc1,i1,2024-01-01,1,1.0\n"


@pytest.fixture
def seeded_home(tmp_path, home):
    """A LOYAL_HOME that already holds tables, so that we can see they stay untouched."""
    result = CliRunner().invoke(app, ["ingest", "canonical", str(write(tmp_path / "good.csv", GOOD))])
    assert result.exit_code == 0, result.output
    return home


def bad_inputs(tmp_path):
    random_bytes = tmp_path / "random.csv"
    random_bytes.write_bytes(os.urandom(4096))
    (tmp_path / "empty.csv").write_bytes(b"")
    gz = tmp_path / "broken.csv.gz"
    gz.write_bytes(gzip.compress(GOOD.encode())[:20])
    return {
        "missing file": (["canonical", str(tmp_path / "nope.csv")], "no such file"),
        "unknown format": (["shopify", str(tmp_path / "nope.csv")], "unknown format"),
        "missing columns": (["canonical", str(write(tmp_path / "cols.csv", "customer_id,item_id\nc1,i1\n"))],
                            "missing required columns"),
        "empty file": (["canonical", str(tmp_path / "empty.csv")], "empty"),
        "header only": (["canonical", str(write(tmp_path / "header.csv", "customer_id,item_id,timestamp,quantity,unit_price\n"))],
                        "no data rows"),
        "random bytes": (["canonical", str(random_bytes)], "random.csv"),
        "truncated gzip": (["online-retail", str(gz)], "gzip"),
        "dates that do not parse": (["canonical", str(write(tmp_path / "dates.csv",
                                    "customer_id,item_id,timestamp,quantity,unit_price\nc1,i1,31/31/2024,1,1\nc2,i1,yesterday,1,1\n"))],
                                    "dates that do not parse"),
        "not an online retail file": (["online-retail", str(write(tmp_path / "c.csv", GOOD))], "not an Online Retail file"),
        "synthetic with a path": (["synthetic", str(tmp_path / "x.csv")], "takes no PATH"),
    }


CASES = [
    "missing file", "unknown format", "missing columns", "empty file", "header only", "random bytes",
    "truncated gzip", "dates that do not parse", "not an online retail file", "synthetic with a path",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2_and_changes_nothing(tmp_path, seeded_home, case):
    args, words = bad_inputs(tmp_path)[case]
    before = tree_digest(seeded_home)
    result = CliRunner().invoke(app, ["ingest", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0]
    assert "Traceback" not in result.output
    assert tree_digest(seeded_home) == before


@pytest.mark.integration
def test_the_installed_command_prints_no_traceback(tmp_path, home):
    """The real `loyal` executable, as a user runs it."""
    loyal = os.path.join(os.path.dirname(sys.executable), "loyal")
    done = subprocess.run([loyal, "ingest", "online-retail", str(tmp_path / "nope.csv.gz")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"loyal: {tmp_path / 'nope.csv.gz'}: no such file"
    assert done.stdout == ""
