"""The canonical adapter, and the merge rules every ingest shares: idempotent, later files add only new rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loyal.ingest import ingest_file
from loyal.store import read_table

from conftest import tree_digest, write

REQUIRED_ONLY = """
customer_id,item_id,timestamp,quantity,unit_price
c1,i1,2024-01-01T10:00:00,2,3.5
c1,i2,2024-01-02 11:00:00+01:00,1,1.0
c2,i1,2024-01-03,-1,3.5
"""


def test_required_columns_alone_are_enough(tmp_path, home):
    summary = ingest_file("canonical", write(tmp_path / "t.csv", REQUIRED_ONLY), home)
    assert (summary["rows_read"], summary["rows_kept"], summary["rows_quarantined"]) == (3, 3, 0)
    table = read_table(home, "transactions")
    assert table["channel"].tolist() == ["web"] * 3  # the contract's default
    assert table["order_id"].isna().all()
    # Naive timestamps are UTC; zoned ones are converted to UTC.
    assert table["timestamp"].tolist() == [
        pd.Timestamp("2024-01-01 10:00", tz="UTC"),
        pd.Timestamp("2024-01-02 10:00", tz="UTC"),
        pd.Timestamp("2024-01-03 00:00", tz="UTC"),
    ]
    assert table["quantity"].tolist() == [2, 1, -1]  # negative = a return


def test_rows_breaking_the_contract_are_quarantined_with_reasons(tmp_path, home):
    text = REQUIRED_ONLY + (
        ",i1,2024-01-01,1,1.0\n"            # missing customer
        "c3,i1,2024-01-01,1.5,1.0\n"        # quantity not whole
        "c3,i1,2024-01-01,1,-2\n"           # negative price
        "c3,i1,2024-01-01,x,1.0\n"          # quantity not a number
        "c1,i1,2024-01-01T10:00:00,2,3.5\n"  # an exact copy of the first row
        # enough good rows that the bad ones are a few, not a wrong format
        + "".join(f"c{n},i9,2024-02-01,1,1.0\n" for n in range(20))
    )
    summary = ingest_file("canonical", write(tmp_path / "t.csv", text), home)
    assert summary["reasons"] == {
        "bad_quantity": 2, "duplicate_row": 1, "missing_customer_id": 1, "negative_unit_price": 1,
    }
    assert summary["rows_read"] == summary["rows_kept"] + summary["rows_quarantined"] == 3 + 5 + 20
    quarantine = pd.read_csv(summary["quarantine_files"][0], dtype=str)
    assert len(quarantine) == summary["rows_quarantined"]


def test_a_folder_holds_one_file_per_table(tmp_path, home):
    folder = tmp_path / "export"
    folder.mkdir()
    write(folder / "transactions.csv", REQUIRED_ONLY)
    write(folder / "customers.csv", "customer_id,country,email_opt_in,loyalty_tier\nc1,UK,yes,Gold\nc2,FR,0,\n")
    write(folder / "items.csv", "item_id,description,category,price\ni1,Mug,mugs,3.5\ni2,Tag,bags,1\n")
    write(folder / "events.csv", "customer_id,item_id,timestamp,event_type,channel\n"
          "c1,i1,2024-01-01,view,app\nc1,i1,2024-01-01,purchase,app\n")
    summary = ingest_file("canonical", folder, home)
    assert summary["rows_read"] == 3 + 2 + 2 + 2
    assert summary["reasons"] == {"unknown_event_type": 1}
    customers = read_table(home, "customers").set_index("customer_id")
    assert customers.loc["c1", "email_opt_in"] == True  # noqa: E712
    assert customers.loc["c2", "email_opt_in"] == False  # noqa: E712
    assert customers.loc["c1", "loyalty_tier"] == "gold"
    assert read_table(home, "events")["channel"].tolist() == ["app"]


def test_ingesting_the_same_file_twice_changes_nothing(tmp_path, home):
    path = write(tmp_path / "t.csv", REQUIRED_ONLY + ",i1,2024-01-01,1,1.0\n")
    first = ingest_file("canonical", path, home)
    before = tree_digest(home)
    second = ingest_file("canonical", path, home)
    assert tree_digest(home) == before
    assert second["tables"]["transactions"]["rows_added"] == 0
    assert second["tables"]["transactions"]["rows_total"] == first["tables"]["transactions"]["rows_total"] == 3


def test_a_later_file_adds_only_its_new_rows(tmp_path, home):
    ingest_file("canonical", write(tmp_path / "january.csv", REQUIRED_ONLY), home)
    later = REQUIRED_ONLY + "c3,i3,2024-02-01,1,9.0\n"  # overlaps January and adds one row
    summary = ingest_file("canonical", write(tmp_path / "february.csv", later), home)
    assert summary["tables"]["transactions"]["rows_added"] == 1
    assert len(read_table(home, "transactions")) == 4


def test_a_later_customers_file_updates_and_keeps_what_it_does_not_say(tmp_path, home):
    folder = tmp_path / "a"
    folder.mkdir()
    write(folder / "transactions.csv", REQUIRED_ONLY)
    write(folder / "customers.csv", "customer_id,country,email_opt_in\nc1,UK,yes\n")
    ingest_file("canonical", folder, home)
    write(folder / "customers.csv", "customer_id,email_opt_in\nc1,no\nc2,yes\n")
    summary = ingest_file("canonical", folder, home)
    assert summary["tables"]["customers"]["rows_added"] == 1
    customers = read_table(home, "customers").set_index("customer_id")
    assert customers.loc["c1", "email_opt_in"] == False  # noqa: E712  (the newer word)
    assert customers.loc["c1", "country"] == "UK"  # kept: the later file did not say
    # A customers file alone (a consent export) updates the customers and nothing else.
    transactions = read_table(home, "transactions")
    summary = ingest_file("canonical", write(tmp_path / "customers.csv", "customer_id,email_opt_in\nc2,no\n"), home)
    assert set(summary["tables"]) == {"customers"}
    assert read_table(home, "customers").set_index("customer_id").loc["c2", "email_opt_in"] == False  # noqa: E712
    pd.testing.assert_frame_equal(read_table(home, "transactions"), transactions)


def test_parquet_input(tmp_path, home):
    frame = pd.read_csv(write(tmp_path / "t.csv", REQUIRED_ONLY))
    frame.to_parquet(tmp_path / "t.parquet")
    summary = ingest_file("canonical", tmp_path / "t.parquet", home)
    assert summary["rows_kept"] == 3


def test_a_forgotten_customer_leaves_tables_and_quarantine_and_stays_out_of_later_ingests(tmp_path, home):
    from loyal.app.forget import forget

    text = REQUIRED_ONLY + "c3,i1,2024-01-01,1,-2\nc1,i1,2024-01-01,1,-2\n" + "".join(
        f"c{n},i9,2024-02-01,1,1.0\n" for n in range(20))
    source = write(tmp_path / "t.csv", text)
    quarantined = Path(ingest_file("canonical", source, home)["quarantine_files"][0])
    assert "c1" in set(pd.read_csv(quarantined, dtype=str)["customer_id"])

    summary = forget(home, ["c1"])
    assert summary["canonical_rows"]["transactions"] == 3 and summary["quarantine_rows"] == 1
    assert "c1" not in set(read_table(home, "transactions")["customer_id"])
    assert set(pd.read_csv(quarantined, dtype=str)["customer_id"]) == {"c3"}
    # The same file again: c1's rows are neither kept nor set aside; everyone else's are as they were.
    again = ingest_file("canonical", source, home)
    assert again["rows_of_erased_customers_dropped"] == 3
    assert "c1" not in set(read_table(home, "transactions")["customer_id"])
    assert set(pd.read_csv(quarantined, dtype=str)["customer_id"]) == {"c3"}
    assert "c1" not in (home / "erasures.jsonl").read_text()
