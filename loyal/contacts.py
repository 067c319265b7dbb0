"""The contact history: every customer each campaign listed, in which group, on which day, offered what.

Campaigns append their lists to it (`loyal campaign`), a synthetic shop's past campaigns start it (`loyal ingest
synthetic --campaigns K`), the frequency cap and `loyal campaign measure` read it, and forgetting a customer removes
their rows. It lives in one parquet file under LOYAL_HOME, rewritten whole and atomically.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loyal.home import Home
from loyal.schema import CUSTOMER_ID, ORDER_ID, QUANTITY, TIMESTAMP, UNIT_PRICE
from loyal.store import write_atomically

COLUMNS = {"campaign": "string", CUSTOMER_ID: "string", "group": "string", "contacted_on": "datetime64[us]",
           "incentive": "string"}  # the incentive offered (or, for the control group, the one drawn and withheld)


def contact_history(home: Path) -> pd.DataFrame:
    path = Home(home).contacts
    if not path.exists():
        return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in COLUMNS.items()})
    history = pd.read_parquet(path)
    if "incentive" not in history:  # a history from before incentives were recorded
        history["incentive"] = pd.Series(pd.NA, index=history.index, dtype="string")
    return history


def append_contacts(home: Path, rows: pd.DataFrame) -> None:
    """Add a campaign's rows (COLUMNS) to the history; a campaign already in it is replaced by them."""
    history = contact_history(home)
    kept = history[~history["campaign"].isin(set(rows["campaign"]))]
    rows = rows.astype({name: kind for name, kind in COLUMNS.items() if name in rows})
    write_atomically(pd.concat([kept, rows], ignore_index=True) if len(kept) else rows, Home(home).contacts)


def window(contacts: pd.DataFrame, days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of one campaign's outcome window: the `days` from the day its list was made (UTC)."""
    start = pd.Timestamp(contacts["contacted_on"].iloc[0]).tz_localize("UTC")
    return start, start + pd.Timedelta(days=days)


def outcomes(contacts: pd.DataFrame, transactions: pd.DataFrame, days: int) -> pd.DataFrame:
    """The contacts (of one campaign or several) with what each customer bought in the `days` from their campaign's
    day: `orders`, `revenue` (purchases only: a return is not an outcome of the offer) and `bought`."""
    parts = []
    purchases = transactions[transactions[QUANTITY] > 0]
    for _, listed in contacts.groupby("campaign", sort=False):
        start, end = window(listed, days)
        bought = purchases[(purchases[TIMESTAMP] >= start) & (purchases[TIMESTAMP] < end)]
        by_customer = bought.groupby(CUSTOMER_ID)
        revenue = (bought[QUANTITY] * bought[UNIT_PRICE]).groupby(bought[CUSTOMER_ID]).sum()
        parts.append(listed.assign(
            orders=listed[CUSTOMER_ID].map(by_customer[ORDER_ID].nunique()).fillna(0).astype("int64").to_numpy(),
            revenue=listed[CUSTOMER_ID].map(revenue).fillna(0.0).to_numpy()))
    frame = pd.concat(parts) if parts else contacts.assign(orders=pd.Series(dtype="int64"), revenue=0.0)
    return frame.assign(bought=frame["orders"] > 0)


def forget_contacts(home: Path, customer_ids: set[str]) -> int:
    """Remove these customers from the contact history; rows removed."""
    history = contact_history(home)
    theirs = history[CUSTOMER_ID].isin(customer_ids)
    if theirs.any():
        write_atomically(history[~theirs], Home(home).contacts)
    return int(theirs.sum())
