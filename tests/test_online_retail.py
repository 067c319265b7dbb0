"""Each cleaning rule of the online-retail adapter on a tiny hand-written file."""

from __future__ import annotations

import pandas as pd
import pytest

from loyal.ingest import ingest_file
from loyal.store import read_table

from conftest import write

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def ingest(tmp_path, home, body: str) -> dict:
    return ingest_file("online-retail", write(tmp_path / "retail.csv", HEADER + body), home)


def test_a_clean_line_is_kept_with_canonical_types(tmp_path, home):
    summary = ingest(tmp_path, home, "536365,85123A,WHITE HANGING HEART ,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n")
    assert (summary["rows_read"], summary["rows_kept"], summary["rows_quarantined"]) == (1, 1, 0)
    row = read_table(home, "transactions").iloc[0]
    assert row["customer_id"] == "17850"  # the float-written id loses its ".0"
    assert row["item_id"] == "85123A"
    assert row["timestamp"] == pd.Timestamp("2010-12-01 08:26:00", tz="UTC")
    assert (row["quantity"], row["unit_price"], row["order_id"], row["channel"]) == (6, 2.55, "536365", "web")
    items = read_table(home, "items")
    assert items.loc[0, "description"] == "WHITE HANGING HEART"  # trailing space stripped
    assert read_table(home, "customers").loc[0, "country"] == "United Kingdom"


@pytest.mark.parametrize(
    "line, reason",
    [
        ("536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,,United Kingdom", "missing_customer_id"),
        ("536370,POST,POSTAGE,3,2010-12-01 08:45:00,18.0,12583.0,France", "non_product_code"),
        ("536370,DOT,DOTCOM POSTAGE,1,2010-12-01 08:45:00,18.0,12583.0,France", "non_product_code"),
        ("C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom", "non_product_code"),
        ("536370,m,Manual,1,2010-12-01 08:45:00,1.0,12583.0,France", "non_product_code"),
        ("536370,BANK CHARGES,Bank Charges,1,2010-12-01 08:45:00,15.0,12583.0,France", "non_product_code"),
        ("536370,gift_0001_20,Dotcomgiftshop Gift Voucher,1,2010-12-01 08:45:00,17.0,12583.0,France", "non_product_code"),
        ("536370,22423,CAKESTAND,1,2010-12-01 08:45:00,0.0,12583.0,France", "non_positive_price"),
        ("536370,22423,CAKESTAND,1,2010-12-01 08:45:00,-11062.06,12583.0,France", "non_positive_price"),
        ("581483,23843,PAPER CRAFT,80995,2011-12-09 09:15:00,2.08,16446.0,United Kingdom", "extreme_quantity"),
        ("C581484,23843,PAPER CRAFT,-80995,2011-12-09 09:27:00,2.08,16446.0,United Kingdom", "extreme_quantity"),
        ("C536391,22556,PLASTERS,12,2010-12-01 10:24:00,1.65,17548.0,United Kingdom", "cancellation_with_positive_quantity"),
        ("536370,22423,CAKESTAND,0,2010-12-01 08:45:00,1.0,12583.0,France", "zero_quantity"),
        ("536370,,CAKESTAND,1,2010-12-01 08:45:00,1.0,12583.0,France", "missing_stock_code"),
    ],
)
def test_each_rule_sets_its_row_aside_with_its_reason(tmp_path, home, line, reason):
    good = "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom\n" * 1
    summary = ingest(tmp_path, home, good + line + "\n")
    assert summary["rows_read"] == 2
    assert summary["rows_kept"] == 1
    assert summary["reasons"] == {reason: 1}
    quarantine = pd.read_csv(summary["quarantine_files"][0], dtype=str)
    assert quarantine["reason"].tolist() == [reason]
    assert quarantine["row"].tolist() == ["2"]  # the data row number in the file


def test_exact_duplicates_keep_the_first_copy(tmp_path, home):
    line = "536409,21866,UNION JACK FLAG LUGGAGE TAG,1,2010-12-01 11:45:00,1.25,17908.0,United Kingdom\n"
    summary = ingest(tmp_path, home, line * 3)
    assert (summary["rows_kept"], summary["reasons"]) == (1, {"duplicate_row": 2})


def test_cancellation_becomes_a_return_of_its_customer(tmp_path, home):
    summary = ingest(tmp_path, home, (
        "536365,22633,HAND WARMER UNION JACK,6,2010-12-01 08:26:00,1.85,17850.0,United Kingdom\n"
        "C536383,22633,HAND WARMER UNION JACK,-2,2010-12-01 09:49:00,1.85,17850.0,United Kingdom\n"
    ))
    assert summary["rows_kept"] == 2
    returned = read_table(home, "transactions").set_index("order_id").loc["C536383"]
    assert (returned["customer_id"], returned["quantity"]) == ("17850", -2)


def test_stock_codes_in_two_cases_are_one_item(tmp_path, home):
    ingest(tmp_path, home, (
        "536365,47566b,TEA TIME PARTY BUNTING,1,2010-12-01 08:26:00,4.95,17850.0,United Kingdom\n"
        "536366,47566B,TEA TIME PARTY BUNTING,1,2010-12-02 08:26:00,4.95,17851.0,United Kingdom\n"
    ))
    assert read_table(home, "items")["item_id"].tolist() == ["47566B"]


def test_the_original_uci_date_format_is_read(tmp_path, home):
    ingest(tmp_path, home, "536365,85123A,HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom\n")
    assert read_table(home, "transactions").loc[0, "timestamp"] == pd.Timestamp("2010-12-01 08:26", tz="UTC")


def test_online_retail_ii_headers_are_read(tmp_path, home):
    path = write(tmp_path / "ii.csv", "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
                 "489434,85048,15CM CHRISTMAS GLASS BALL,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom\n")
    assert ingest_file("online-retail", path, home)["rows_kept"] == 1


def test_excel_workbook_is_read(tmp_path, home):
    frame = pd.DataFrame({
        "InvoiceNo": ["536365"], "StockCode": ["85123A"], "Description": ["HEART"], "Quantity": [6],
        "InvoiceDate": [pd.Timestamp("2010-12-01 08:26")], "UnitPrice": [2.55], "CustomerID": [17850.0],
        "Country": ["United Kingdom"],
    })
    frame.to_excel(tmp_path / "Online Retail.xlsx", index=False)
    summary = ingest_file("online-retail", tmp_path / "Online Retail.xlsx", home)
    assert summary["rows_kept"] == 1
    assert read_table(home, "transactions").loc[0, "customer_id"] == "17850"


def test_item_description_is_the_most_frequent_one(tmp_path, home):
    ingest(tmp_path, home, (
        "1,84997D,CHILDRENS CUTLERY POLKADOT PINK,1,2010-12-01 08:26:00,4.25,1,United Kingdom\n"
        "2,84997D,CHILDRENS CUTLERY POLKADOT PINK,1,2010-12-02 08:26:00,4.15,2,United Kingdom\n"
        "3,84997D,PINK 3 PIECE POLKADOT CUTLERY SET,1,2010-12-03 08:26:00,3.75,3,United Kingdom\n"
    ))
    items = read_table(home, "items")
    assert items.loc[0, "description"] == "CHILDRENS CUTLERY POLKADOT PINK"
    assert items.loc[0, "price"] == pytest.approx(4.15)  # median selling price
