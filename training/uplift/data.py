"""Uplift training sets: the campaigns Loyal already ran, each a randomised experiment, as rows to learn from.

A row is a customer on a measured campaign's list: the campaign, their group (treatment or control: the draw was
random), the incentive offered (or drawn and withheld, for the control group), their features as of the campaign's
day through Feast's point-in-time join (only what happened strictly before it), and what they bought in the
`window_days` after it. A campaign whose window passes the end of the data is not measured yet and gives no rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loyal.contacts import contact_history, outcomes, window
from loyal.errors import LoyalError
from loyal.features.compute import EVENT_TIMESTAMP
from loyal.features.repo import historical_features
from loyal.schema import CUSTOMER_ID, ORDER_ID, QUANTITY, TIMESTAMP, UNIT_PRICE
from loyal.store import read_table

FEATURE_SERVICE = "churn_v1"  # the behaviour and profile a customer's response depends on, as churn reads them
WINDOW_DAYS = 30


def measured_campaigns(history: pd.DataFrame, data_end: pd.Timestamp, window_days: int = WINDOW_DAYS) -> list[str]:
    """The campaigns whose whole outcome window lies in the data, oldest first."""
    days = history.groupby("campaign", sort=False)["contacted_on"].min().sort_values()
    return [name for name, day in days.items()
            if window(history[history["campaign"] == name], window_days)[1] <= data_end]


def training_set(home: Path, campaigns: list[str] | None = None, window_days: int = WINDOW_DAYS) -> pd.DataFrame:
    """The rows of `campaigns` (default: every measured one): campaign, customer_id, group, treated, incentive,
    event_timestamp (the campaign's day), orders, revenue, bought, and the FEATURE_SERVICE features."""
    history = contact_history(home)
    transactions = read_table(home, "transactions", columns=[CUSTOMER_ID, TIMESTAMP, QUANTITY, UNIT_PRICE, ORDER_ID])
    if transactions is None or history.empty:
        raise LoyalError("no campaign to learn from: the contact history is empty (run `loyal campaign`, or ingest a "
                         "synthetic shop with --campaigns K)")
    data_end = transactions[TIMESTAMP].max().normalize() + pd.Timedelta(days=1)
    measured = measured_campaigns(history, data_end, window_days)
    chosen = measured if campaigns is None else campaigns
    unmeasured = sorted(set(chosen) - set(measured))
    if unmeasured:
        raise LoyalError(f"campaign(s) {', '.join(map(repr, unmeasured))} have no complete {window_days}-day outcome "
                         f"window in the data (which end on {(data_end - pd.Timedelta(days=1)).date()})")
    if not chosen:
        raise LoyalError(f"no campaign's {window_days}-day outcome window ends by the data's end")
    contacts = history[history["campaign"].isin(chosen)]
    rows = outcomes(contacts, transactions, window_days).reset_index(drop=True)
    rows.insert(3, "treated", rows["group"] == "treatment")
    rows[EVENT_TIMESTAMP] = pd.to_datetime(rows["contacted_on"]).dt.tz_localize("UTC")
    features = historical_features(home, rows[[CUSTOMER_ID, EVENT_TIMESTAMP]], service=FEATURE_SERVICE)
    return pd.concat([rows, features.drop(columns=[CUSTOMER_ID, EVENT_TIMESTAMP])], axis=1)
