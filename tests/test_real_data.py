"""The real UCI Online Retail file (shared/data): every row accounted for, and a second ingest changes nothing."""

from __future__ import annotations

import pytest

from loyal.ingest import ingest_file
from loyal.store import read_table

from conftest import tree_digest

pytestmark = pytest.mark.integration


def test_real_file_reconciles_with_every_reason_counted(real_data, home):
    summary = ingest_file("online-retail", real_data, home)
    assert summary["rows_read"] == 541_909
    assert summary["rows_read"] == summary["rows_kept"] + summary["rows_quarantined"]
    assert sum(summary["reasons"].values()) == summary["rows_quarantined"]
    # Figures published with the file (shared/data/README.md): every row without a customer is set aside.
    assert summary["reasons"]["missing_customer_id"] == 135_080
    assert set(summary["reasons"]) == {
        "missing_customer_id", "duplicate_row", "non_product_code", "non_positive_price", "extreme_quantity",
    }
    transactions = read_table(home, "transactions")
    assert len(transactions) == summary["rows_kept"]
    assert transactions["customer_id"].nunique() > 4_300
    assert not transactions["item_id"].isin(["POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE"]).any()
    assert (transactions["unit_price"] > 0).all()
    returns = transactions[transactions["quantity"] < 0]
    assert len(returns) > 8_000 and returns["order_id"].str.startswith("C").all()

    before = tree_digest(home)
    again = ingest_file("online-retail", real_data, home)
    assert tree_digest(home) == before
    assert again["tables"]["transactions"]["rows_added"] == 0
