"""The feature catalogue: every feature Loyal uses, by entity, with its kind; the snapshot dates features are
computed at; and the customer state the rails read at request time.

The features themselves are defined once, in SQL (`features.sql`), and run on DuckDB or Spark (`engines.py`).
A snapshot date T is a midnight UTC; the row stamped T holds values computed from events strictly before T, so a
point-in-time join that takes the latest row at or before a time never sees anything from at or after it.
Training reads these rows through Feast's historical retrieval, serving reads the latest of them from the online
store: one computation, two readers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from loyal.dates import midnight
from loyal.schema import (COUNTRY, CUSTOMER_ID, EMAIL_OPT_IN, EVENT_TYPE, ITEM_ID, LOYALTY_TIER, ORDER_ID, QUANTITY,
                          TIMESTAMP)

EVENT_TIMESTAMP = "event_timestamp"  # the snapshot time of a feature row, as Feast calls it
DAY_US = 86_400_000_000
MONEY_SCALE = 10_000  # money is summed as integers of 1/10,000 of the currency unit
LOG_SCALE = 10_000  # logs too, so their sums do not depend on the order of addition either

# Every feature, by entity, with its kind ("int", "float", "str", "bool"). The Feast definitions build their
# schemas from these, so a name exists once.
CUSTOMER_BEHAVIOUR = {
    "recency_days": "int",  # whole days from the last purchase to T
    "tenure_days": "int",  # whole days from the first purchase to T
    "orders_30d": "int",
    "orders_90d": "int",
    "orders_365d": "int",
    "orders_total": "int",
    "spend_30d": "float",
    "spend_90d": "float",
    "spend_365d": "float",
    "spend_total": "float",
    "returns_365d": "float",  # value returned (positive)
    "avg_order_value_365d": "float",  # 0 without orders in the window
    "mean_days_between_orders": "float",  # NaN before the second order
    "purchase_days_total": "int",  # distinct days with a purchase
    "purchase_days_180d": "int",
    "gap_std_days": "float",  # spread (population std) of the whole days between purchase days; NaN before the 2nd
    "lines_per_order_365d": "float",  # purchase lines (rows) per order; 0 without orders in the window
    "typical_quantity_per_line_365d": "float",  # exp(mean log(1 + quantity)) - 1 over purchase lines; 0 without
    "typical_unit_price_365d": "float",  # the same for the unit price: a wholesaler's basket against a gift shopper's
    "spend_trend": "float",  # (last 90 d - the 90 d before) / (their sum), in [-1, 1]; 0 when both are 0
    "web_share_365d": "float",  # share of the window's orders by channel; 0 without orders
    "app_share_365d": "float",
    "store_share_365d": "float",
    "views_30d": "int",
    "add_to_carts_30d": "int",
    "cart_conversion_30d": "float",  # share of add-to-carts whose item was bought the same day
}
CUSTOMER_PROFILE = {
    COUNTRY: "str",
    LOYALTY_TIER: "str",
    EMAIL_OPT_IN: "bool",  # null where consent is unknown, which campaigns treat as no
}
ITEM_STATISTICS = {
    "item_buyers_7d": "int",  # distinct customers who bought the item in the window
    "item_buyers_30d": "int",
    "item_buyers_90d": "int",
    "item_buyers_365d": "int",
    "item_revenue_30d": "float",
    "item_revenue_365d": "float",
    "item_avg_price_365d": "float",  # revenue / units sold; NaN without a sale in the window
    "item_repeat_rate_365d": "float",  # share of the window's buyers who bought it on two or more days
    "item_trend_30d": "float",  # purchases (lines) of the last 30 d against the 30 before, in [-1, 1]
}


@dataclass(frozen=True)
class Snapshots:
    """Snapshot dates (midnight UTC) from `start` to `end`, every `every` days; `end` is always one of them."""

    start: pd.Timestamp
    end: pd.Timestamp
    every: int = 1

    def dates(self) -> pd.DatetimeIndex:
        dates = pd.date_range(self.end, self.start, freq=f"-{self.every}D", tz="UTC")
        return dates[::-1]

    @classmethod
    def covering(
        cls,
        first_event: pd.Timestamp,
        last_event: pd.Timestamp,
        every: int = 1,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> Snapshots:
        """Daily by default from the day after the first event to the day after the last, which is the snapshot
        that sees all the data."""
        start = midnight(start) if start is not None else midnight(first_event) + pd.Timedelta(days=1)
        end = midnight(end) if end is not None else midnight(last_event) + pd.Timedelta(days=1)
        return cls(start=start, end=max(start, end), every=every)


# -------------------------------------------------------------------------------------------------- customer state
# A customer's state, which the rails read at request time (features/state.py keeps it online): their purchase
# history and their session. A line of history is a distinct (time, item, order, quantity) of a purchase (quantity
# > 0: an item twice on one order, in two quantities, is two lines); the latest are kept, in that order, the same
# order the online stores keep them in. `features.sql` defines both; engines.purchase_history and engines.session
# compute them in this process.
HISTORY_LINES = 10_000  # no customer of the UCI file reaches it (the most, a wholesaler: 6,200 lines in a year)
SESSION_EVENTS = 20  # the latest views and add-to-carts
HISTORY = (CUSTOMER_ID, ITEM_ID, TIMESTAMP, ORDER_ID, QUANTITY)  # TIMESTAMP: microseconds since 1970, UTC
SESSION = (CUSTOMER_ID, ITEM_ID, TIMESTAMP, EVENT_TYPE)
