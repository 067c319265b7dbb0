"""The tables behind the customers notebook, against hand-counted values on a tiny shop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loyal.app import explore
from loyal.ingest import ingest_file

from conftest import write

# a: Jan, Feb, Mar (web, app); b: Jan, Mar (store); c: Feb; a return in March and a row without a customer.
SHOP = """
customer_id,item_id,timestamp,quantity,unit_price,order_id,channel
a,i1,2024-01-05,2,5.0,o1,web
b,i2,2024-01-20,1,10.0,o2,store
a,i1,2024-02-03,1,5.0,o3,app
c,i2,2024-02-10,3,10.0,o4,web
a,i2,2024-03-01,1,10.0,o5,web
b,i1,2024-03-15,4,5.0,o6,store
c,i2,2024-03-16,-1,10.0,o7,web
,i1,2024-03-17,1,5.0,o8,web
"""


@pytest.fixture
def shop(tmp_path, home):
    ingest_file("canonical", write(tmp_path / "transactions.csv", SHOP), home)
    return home


def test_quarantine_reasons_count_the_rows_set_aside(shop):
    assert explore.quarantine_reasons(shop).to_dict(orient="list") == {"reason": ["missing_customer_id"],
                                                                      "rows": [1]}


def test_orders_over_time_leave_returns_out(shop):
    monthly = explore.orders_over_time(shop, every="M")
    assert monthly["orders"].tolist() == [2, 2, 2] and monthly["customers"].tolist() == [2, 2, 2]
    assert monthly["revenue"].tolist() == [20.0, 35.0, 30.0]


def test_cohort_retention_by_month_since_the_first_purchase(shop):
    shares = explore.cohort_retention(shop)
    # January's cohort (a, b): a in February; a and b in March. February's (c): nobody in March (a return only).
    assert shares.loc["2024-01"].tolist() == [1.0, 0.5, 1.0]
    assert shares.loc["2024-02", 0] == 1.0 and shares.loc["2024-02", 1] == 0.0
    assert np.isnan(shares.loc["2024-02", 2])  # beyond the data, not zero


def test_channel_mix_shares_revenue_per_month(shop):
    mix = explore.channel_mix(shop)
    np.testing.assert_allclose(mix.sum(axis=1), 1.0)
    assert mix.loc[pd.Timestamp("2024-01-01"), "store"] == pytest.approx(0.5)
    assert mix.loc[pd.Timestamp("2024-02-01"), "app"] == pytest.approx(5 / 35)


def test_rfm_segments_read_the_features_and_name_everyone(tmp_path, home):
    from loyal.features.repo import build
    from loyal.ingest import ingest_synthetic
    from loyal.synthetic import SyntheticConfig

    ingest_synthetic(SyntheticConfig(customers=200, days=200, seed=1), home)
    build(home)
    rfm = explore.rfm_segments(home)
    assert rfm["customer_id"].is_unique and (rfm["orders_total"] > 0).all()
    assert rfm[["r", "f", "m"]].isin([1, 2, 3, 4, 5]).all().all()
    assert set(rfm["segment"]) <= {name for name, _ in explore.SEGMENTS} | {explore.OTHER_SEGMENT}
    # The most recent and most frequent are champions; the most lapsed, infrequent ones are hibernating.
    assert (rfm.loc[(rfm["r"] == 5) & (rfm["f"] == 5), "segment"] == "champions").all()
    assert (rfm.loc[(rfm["r"] == 1) & (rfm["f"] <= 2), "segment"] == "hibernating").all()
    # Recency scores fall as the days since the last purchase grow.
    assert rfm.groupby("r")["recency_days"].median().is_monotonic_decreasing
