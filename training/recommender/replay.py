"""A window's orders replayed in time order, each with its customer's state just before it: the purchase history and
the session (the latest views and add-to-carts) a live rail would have read. What `loyal evaluate realtime`
measures with, and what training chooses the session's weight on (in the validation window)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from loyal.dates import midnight
from loyal.features.compute import DAY_US, SESSION_EVENTS
from loyal.features.engines import session
from loyal.schema import CUSTOMER_ID, EVENT_TYPE, ITEM_ID, ORDER_ID, QUANTITY, TIMESTAMP
from loyal.training.recommender.evaluate import Interactions


@dataclass
class Orders:
    """The window's orders, one row each, in time order: whose, when (µs), the items bought (model positions; an
    item the model never saw gets a position past its catalogue), and each customer's lines before it."""
    customers: np.ndarray
    times: np.ndarray
    items: list[np.ndarray]
    before: Interactions  # row i: the history (and session, `with_sessions`) of order i's customer just before it

    def rows(self, positions) -> Orders:
        positions = np.asarray(positions, dtype=np.int64)
        return Orders(self.customers[positions], self.times[positions], [self.items[i] for i in positions],
                      self.before.rows(positions))


def window_orders(transactions: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, customers: set[str] | None,
                  exclude: set[str] = frozenset()) -> pd.DataFrame:
    """The orders placed in [start, end): (order, customer, time) rows, in time order, of `customers` (None: all)
    and not of `exclude`. An order is an order id, or a customer's basket at one instant where there is none."""
    bought = transactions[(transactions[QUANTITY] > 0) & (transactions[TIMESTAMP] >= start)
                          & (transactions[TIMESTAMP] < end)]
    ids = bought[CUSTOMER_ID].astype(str)
    keep = ~ids.isin(exclude) & (ids.isin(customers) if customers is not None else True)
    bought = bought[keep]
    key = bought[ORDER_ID].astype("string").fillna(bought[CUSTOMER_ID].astype(str) + "@"
                                                      + bought[TIMESTAMP].astype(str))
    return pd.DataFrame({"order": key.to_numpy(), CUSTOMER_ID: bought[CUSTOMER_ID].astype(str).to_numpy(),
                         TIMESTAMP: bought[TIMESTAMP].to_numpy(), ITEM_ID: bought[ITEM_ID].astype(str).to_numpy()})


def replay(lines: pd.DataFrame, history: pd.DataFrame, items: pd.Index, frozen_at: pd.Timestamp | None) -> Orders:
    """Orders from their lines (window_orders), each with its customer's history (compute.HISTORY rows) just before
    it, or, with `frozen_at`, as it was at that moment."""
    orders = (lines.groupby("order", sort=False).agg(customer=(CUSTOMER_ID, "first"), time=(TIMESTAMP, "min"))
              .sort_values("time", kind="stable").reset_index())
    times = orders["time"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    catalogue, unknown = len(items), {}
    bought = []
    grouped = lines.groupby("order", sort=False)[ITEM_ID].agg(lambda s: sorted(set(s)))
    for order in orders["order"]:
        positions = items.get_indexer(grouped[order])
        for i in np.flatnonzero(positions < 0):  # unreachable, but bought: counted as missed
            positions[i] = catalogue + unknown.setdefault(grouped[order][i], len(unknown))
        bought.append(np.sort(positions))
    # Each order's customer's lines before its moment (or the frozen moment), aged at that moment.
    joined = _before(orders["customer"].to_numpy(), times, frozen_at, history[[CUSTOMER_ID, ITEM_ID, TIMESTAMP]])
    position = items.get_indexer(joined[ITEM_ID])
    joined = joined[position >= 0].assign(item=position[position >= 0])
    purchases = pd.DataFrame({"customer": joined["row"].to_numpy(), "item": joined["item"].to_numpy(),
                              "age_days": (joined["at"] - joined[TIMESTAMP]).to_numpy() / DAY_US})
    before = Interactions.of(pd.Index(orders["order"].astype(str)), items, purchases,
                             frozen_at if frozen_at is not None else midnight(pd.Timestamp(times.max(), unit="us")))
    return Orders(orders["customer"].to_numpy(), times, bought, before)


def with_sessions(orders: Orders, events: pd.DataFrame | None, frozen_at: pd.Timestamp | None = None) -> Orders:
    """The orders with each customer's session just before the order (or as it was at `frozen_at`): their latest
    SESSION_EVENTS views and add-to-carts, as features.sql defines a session, weighted as the service weighs
    them (Interactions.with_session)."""
    if events is None or events.empty:
        return replace(orders, before=orders.before.with_session(session(None)))
    mine = events[events[CUSTOMER_ID].astype(str).isin(set(orders.customers))]
    mine = session(mine, None, keep=max(len(mine), 1))  # all of their browses, as sessions hold them
    joined = _before(orders.customers, orders.times, frozen_at, mine)
    joined = joined.sort_values(["row", TIMESTAMP], kind="stable").groupby("row", sort=False).tail(SESSION_EVENTS)
    frame = pd.DataFrame({CUSTOMER_ID: orders.before.customers[joined["row"].to_numpy()],
                          ITEM_ID: joined[ITEM_ID].to_numpy(), TIMESTAMP: joined[TIMESTAMP].to_numpy(),
                          EVENT_TYPE: joined[EVENT_TYPE].to_numpy()})
    return replace(orders, before=orders.before.with_session(frame, at_us=joined["at"].to_numpy()))


def _before(customers: np.ndarray, times: np.ndarray, frozen_at: pd.Timestamp | None, lines: pd.DataFrame
            ) -> pd.DataFrame:
    """Per order (`row`, its moment `at`), its customer's lines from before that moment."""
    row = pd.DataFrame({CUSTOMER_ID: customers, "row": np.arange(len(customers)),
                        "at": times if frozen_at is None else np.full(len(customers), frozen_at.value // 1000)})
    joined = row.merge(lines, on=CUSTOMER_ID, how="inner")
    return joined[joined[TIMESTAMP] < joined["at"]]
