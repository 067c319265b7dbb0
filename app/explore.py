"""What a shop's data is, as tables for the customers notebook (notebooks/01_customers.py) and anyone curious:
the quarantine's reasons, orders over time, RFM segments, cohort retention and the channel mix. Each reads the
canonical tables, the quarantine or the feature store's offline data; RFM reads the features (recency, orders,
spend) rather than computing them a second time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from loyal.errors import LoyalError
from loyal.features.repo import customer_features_at_last_snapshot, latest_build
from loyal.home import Home
from loyal.schema import CHANNEL, CUSTOMER_ID, ORDER_ID, QUANTITY, TIMESTAMP, UNIT_PRICE
from loyal.store import read_table


def _purchases(home: Path) -> pd.DataFrame:
    """Purchase lines (returns left out) with their value."""
    transactions = read_table(home, "transactions")
    if transactions is None or transactions.empty:
        raise LoyalError(f"no transactions under {home}: run `loyal run` (or `loyal ingest`) first")
    bought = transactions[transactions[QUANTITY] > 0]
    return bought.assign(value=bought[QUANTITY] * bought[UNIT_PRICE])


def quarantine_reasons(home: Path) -> pd.DataFrame:
    """Rows set aside by ingest, per reason (most first): `reason`, `rows`."""
    files = sorted(Home(home).quarantine.glob("*.csv"))
    reasons = [pd.read_csv(path, usecols=["reason"], dtype=str)["reason"] for path in files]
    if not reasons:
        return pd.DataFrame({"reason": pd.Series(dtype=str), "rows": pd.Series(dtype="int64")})
    counts = pd.concat(reasons).value_counts()
    return pd.DataFrame({"reason": counts.index, "rows": counts.to_numpy()})


def orders_over_time(home: Path, every: str = "W") -> pd.DataFrame:
    """Per period (`every`: a pandas frequency, weeks by default): orders, distinct customers and revenue."""
    bought = _purchases(home)
    # An order is an order id where there is one, else a customer's purchases of one day.
    order = (bought[ORDER_ID] if ORDER_ID in bought and bought[ORDER_ID].notna().all()
             else bought[CUSTOMER_ID] + "@" + bought[TIMESTAMP].dt.strftime("%Y-%m-%d"))
    period = bought[TIMESTAMP].dt.tz_localize(None).dt.to_period(every).dt.start_time
    frame = bought.assign(order=order, period=period).groupby("period")
    return pd.DataFrame({"orders": frame["order"].nunique(), "customers": frame[CUSTOMER_ID].nunique(),
                         "revenue": frame["value"].sum().round(2)})


# Segments from recency and frequency quintile scores (5 = most recent, most orders), the usual RFM grid: the first
# rule a customer meets names them.
SEGMENTS = (
    ("champions", lambda r, f: (r >= 4) & (f >= 4)),
    ("loyal", lambda r, f: (r >= 3) & (f >= 3)),
    ("new", lambda r, f: (r >= 4) & (f <= 1)),
    ("promising", lambda r, f: r >= 4),
    ("at risk", lambda r, f: (r <= 2) & (f >= 3)),
    ("hibernating", lambda r, f: r <= 2),
)
OTHER_SEGMENT = "needs attention"


def _quintile(values: pd.Series, higher_is_better: bool) -> np.ndarray:
    """Scores 1..5 by rank (ties share the lower score), 5 the best."""
    ranks = values.rank(method="min", pct=True, ascending=higher_is_better)
    return np.clip(np.ceil(ranks * 5), 1, 5).astype(int)


def rfm_segments(home: Path, at=None) -> pd.DataFrame:
    """Every customer with a purchase before `at` (default: the latest snapshot the features were built for):
    recency_days, orders_total, spend_total (the features of that snapshot), their R, F and M scores (1-5) and the
    segment they fall in."""
    at = at if at is not None else pd.Timestamp(latest_build(home)["snapshots"]["end"])
    features = customer_features_at_last_snapshot(home, at)
    if features is None:
        raise LoyalError(f"RFM segments are read at the latest snapshot the features were built for, not {at}")
    customers = features.loc[features["orders_total"] > 0,
                             [CUSTOMER_ID, "recency_days", "orders_total", "spend_total"]].reset_index(drop=True)
    r = _quintile(customers["recency_days"], higher_is_better=False)
    f = _quintile(customers["orders_total"], higher_is_better=True)
    m = _quintile(customers["spend_total"], higher_is_better=True)
    segment = np.full(len(customers), OTHER_SEGMENT, dtype=object)
    for name, rule in reversed(SEGMENTS):  # the first rule that holds wins, so apply the last first
        segment[rule(r, f)] = name
    return customers.assign(r=r, f=f, m=m, segment=segment)


def cohort_retention(home: Path) -> pd.DataFrame:
    """Share of each cohort (customers by the month of their first purchase) who bought again in each month after
    it: rows are cohorts, columns months since the first (0 is always 1.0); NaN where the data end first."""
    bought = _purchases(home)
    month = bought[TIMESTAMP].dt.tz_localize(None).dt.to_period("M")
    first = month.groupby(bought[CUSTOMER_ID]).transform("min")
    since = (month - first).map(lambda offset: offset.n)
    active = pd.DataFrame({"cohort": first, "since": since, CUSTOMER_ID: bought[CUSTOMER_ID]}).drop_duplicates()
    counts = active.pivot_table(index="cohort", columns="since", values=CUSTOMER_ID, aggfunc="count")
    shares = counts.div(counts[0], axis=0)
    last = month.max()
    for cohort in shares.index:  # months the data do not reach yet are unknown, not zero
        shares.loc[cohort, shares.columns > (last - cohort).n] = np.nan
        shares.loc[cohort, (shares.columns <= (last - cohort).n) & shares.loc[cohort].isna()] = 0.0
    shares.index = shares.index.astype(str)
    return shares


def channel_mix(home: Path, every: str = "M") -> pd.DataFrame:
    """Per period, each channel's share of revenue (rows sum to 1)."""
    bought = _purchases(home)
    period = bought[TIMESTAMP].dt.tz_localize(None).dt.to_period(every).dt.start_time
    revenue = bought.assign(period=period).pivot_table(index="period", columns=CHANNEL, values="value",
                                                      aggfunc="sum", fill_value=0.0)
    return revenue.div(revenue.sum(axis=1), axis=0)
