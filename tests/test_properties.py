"""Property-based: malformed canonical files never give a traceback, and every ingest reconciles."""

from __future__ import annotations

import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyal.errors import LoyalError
from loyal.ingest import ingest_file

COLUMNS = ["customer_id", "item_id", "timestamp", "quantity", "unit_price", "order_id", "channel"]
cell = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["", "NaN", "inf", "-1", "0", "1e400", "2024-02-30", "2024-01-01T10:00:00Z", "1.5", "true",
                     '"', ",", "\n", "9" * 30]),
    st.integers(-10**20, 10**20).map(str),
    st.datetimes().map(lambda d: d.isoformat()),
)
header = st.lists(st.sampled_from(COLUMNS + ["junk", "", "Customer ID"]), min_size=0, max_size=9)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def attempt(path, home):
    """Either a summary that reconciles, or a LoyalError with a one-line message naming the file."""
    try:
        summary = ingest_file("canonical", path, home)
    except LoyalError as error:
        message = str(error)
        assert message and "\n" not in message
        assert str(path) in message
        return None
    assert summary["rows_read"] == summary["rows_kept"] + summary["rows_quarantined"]
    assert sum(summary["reasons"].values()) == summary["rows_quarantined"]
    return summary


@SETTINGS
@given(columns=header, rows=st.lists(st.lists(cell, min_size=0, max_size=9), max_size=8))
def test_random_csv_tables(tmp_path, columns, rows):
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    path = tmp_path / "random.csv"
    path.write_text(buffer.getvalue())
    home = tmp_path / "home"
    attempt(path, home)
    shutil.rmtree(home, ignore_errors=True)


@SETTINGS
@given(data=st.binary(max_size=600))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "bytes.csv"
    path.write_bytes(data)
    attempt(path, tmp_path / "home")
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


@SETTINGS
@given(text=st.text(max_size=400))
def test_random_text_under_a_valid_header(tmp_path, text):
    path = tmp_path / "text.csv"
    path.write_text("customer_id,item_id,timestamp,quantity,unit_price\n" + text)
    attempt(path, tmp_path / "home")
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
