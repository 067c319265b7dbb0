"""Every feature Loyal uses, computed once, from the canonical tables, as of snapshot dates.

A snapshot date T is a midnight UTC; the row stamped T holds values computed from events strictly before T, so a
point-in-time join that takes the latest row at or before a time never sees anything from at or after it.
Training reads these rows through Feast's historical retrieval, serving reads the latest of them from the online
store: one computation, two readers.

How it stays fast: events are summed per entity into the spans between the few days any window reads (`Cuts`),
one block of customers at a time, and cumulative sums over those spans turn every "last N days" window into one
subtraction per snapshot. Distinct
counts (buyers of an item) come from intervals: a buyer counts for an item from the day after a purchase until
that purchase leaves the window or the next one takes over.

Definitions that the numbers depend on:
- a purchase is a transaction row with quantity > 0, a return one with quantity < 0;
- an order is an `order_id` (a basket at one instant where the retailer gives none); an order is counted once per
  day on which it has purchase rows (orders that straddle midnight are, in practice, absent);
- money is summed in whole ten-thousandths of the currency, so a window's sum does not depend on the order of
  addition: `spend_90d` equals an independent `round(sum(quantity * unit_price), 4)` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loyal.dates import midnight, utc
from loyal.schema import (
    CHANNEL,
    CHANNELS,
    COUNTRY,
    CUSTOMER_ID,
    DEFAULT_CHANNEL,
    EMAIL_OPT_IN,
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_ID,
    LOYALTY_TIER,
    ORDER_ID,
    QUANTITY,
    SIGNUP_DATE,
    TIMESTAMP,
    UNIT_PRICE,
)

# String columns worth reading dictionary-encoded: a million customers' ids then cost an index each, not a string.
READ_AS_DICTIONARY = (CUSTOMER_ID, ITEM_ID, ORDER_ID, CHANNEL, EVENT_TYPE)
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


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def _codes(column: pa.ChunkedArray, index: pd.Index) -> np.ndarray:
    """Positions of the column's strings in `index`; -1 for strings not in it (or null).

    Columns read dictionary-encoded (see READ_AS_DICTIONARY) are looked up once per distinct string."""
    column = column.combine_chunks()  # unifies the chunks' dictionaries
    encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    positions = index.get_indexer(encoded.dictionary.to_pandas()).astype(np.int64)
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    if len(positions) == 0:
        return np.full(len(indices), -1, dtype=np.int64)
    return np.where(indices >= 0, positions[indices], -1)


def _distinct(columns: list[pa.ChunkedArray]) -> pd.Index:
    """The sorted distinct strings of some columns, plain or dictionary-encoded."""
    parts = [pc.unique(column.combine_chunks()).cast(pa.string()) for column in columns]
    return pd.Index(pc.unique(pa.concat_arrays(parts)).to_pandas()).sort_values()


def first_seen(transactions: pa.Table, events: pa.Table | None) -> pd.Series:
    """Each customer's earliest transaction or event (any kind, returns included), by customer id."""
    tables = [transactions] + ([events] if events is not None else [])
    ids = _distinct([table[CUSTOMER_ID] for table in tables])
    earliest = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
    for table in tables:
        codes = _codes(table[CUSTOMER_ID], ids)
        known = codes >= 0
        np.minimum.at(earliest, codes[known], _micros(table[TIMESTAMP])[known])
    return pd.Series(pd.to_datetime(earliest, unit="us", utc=True), index=ids, name="first_seen")


def _money(quantity: np.ndarray, unit_price: np.ndarray) -> np.ndarray:
    return np.rint(quantity * unit_price * MONEY_SCALE).astype(np.int64)


WINDOW_DAYS = (7, 30, 60, 90, 180, 365)  # every window any feature reads, including "the N days before the last N"


class Cuts:
    """The days at which a feature ever reads "the sum of everything before": each snapshot day, and each snapshot
    day minus a window length. Rows are summed into the spans between cuts rather than into every day, so a few
    snapshots of a million customers stay cheap; with daily snapshots the cuts are simply every day."""

    def __init__(self, snapshot_days: np.ndarray):
        candidates = [np.zeros(1, np.int64), snapshot_days] + [snapshot_days - n for n in WINDOW_DAYS]
        self.days = np.unique(np.maximum(np.concatenate(candidates), 0))

    def __len__(self) -> int:
        return len(self.days)

    def span(self, day: np.ndarray) -> np.ndarray:
        """The span of each day: a day counts towards every cut at or after its span (cut index), the days < cut."""
        return np.searchsorted(self.days, day, side="right")

    def at(self, day: np.ndarray) -> np.ndarray:
        """The index of each (cut) day."""
        return np.searchsorted(self.days, np.maximum(day, 0))


def _window(cumulative: np.ndarray, cuts: Cuts, t: np.ndarray, days: int) -> np.ndarray:
    """Sums over the days [t - days, t) from a cumulative array (see _cumulative)."""
    return cumulative[:, cuts.at(t)] - cumulative[:, cuts.at(t - days)]


def _cumulative(flat_span: np.ndarray, weights: np.ndarray | None, rows: int, cuts: Cuts) -> np.ndarray:
    """Sums before each cut, (rows, cuts): column c sums the entries whose day is before cut c.

    `flat_span` is row * (len(cuts) + 1) + span; the last span (days at or after the last cut) counts nowhere.
    """
    width = len(cuts) + 1
    # bincount sums weights in float64: exact for integers below 2**53, i.e. sums under 9e11 currency units.
    spans = np.bincount(flat_span, weights=weights, minlength=rows * width).reshape(rows, width)[:, :-1]
    return np.cumsum(spans.astype(np.int64), axis=1)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.divide(part, whole, out=np.zeros(part.shape, dtype=np.float64), where=whole > 0)


def _trend(recent: np.ndarray, before: np.ndarray) -> np.ndarray:
    return _share((recent - before).astype(np.float64), (recent + before).astype(np.float64))


@dataclass
class _Purchases:
    """The transaction table reduced to arrays: one entry per row, customer and item as index positions."""

    customer: np.ndarray
    item: np.ndarray
    micros: np.ndarray
    day: np.ndarray  # days since the origin
    span: np.ndarray  # the day's span between cuts (see Cuts)
    quantity: np.ndarray
    money: np.ndarray
    order: np.ndarray
    channel: np.ndarray  # position in CHANNELS, -1 for any other channel


class FeatureInputs:
    """The canonical tables, read once, as the arrays every feature is computed from."""

    def __init__(self, transactions: pa.Table, events: pa.Table | None, snapshots: Snapshots):
        self.snapshots = snapshots
        self.snapshot_micros = _micros(pa.chunked_array([pa.array(snapshots.dates())]))
        bought = pc.greater(transactions[QUANTITY], 0)
        # Customers enter the features with their first purchase; items with their first sale.
        self.customers = _distinct([pc.filter(transactions[CUSTOMER_ID], bought)])
        sold = [pc.filter(transactions[ITEM_ID], bought)]
        self.items = _distinct(sold + ([events[ITEM_ID]] if events is not None else []))

        micros = _micros(transactions[TIMESTAMP])
        self.origin = (int(micros.min()) // DAY_US * DAY_US) if len(micros) else int(self.snapshot_micros[0])
        self.days = max(int((self.snapshot_micros[-1] - self.origin) // DAY_US), 1)
        # A snapshot before the data sees nothing: day 0's cumulative sums are all zero.
        self.snapshot_days = np.maximum((self.snapshot_micros - self.origin) // DAY_US, 0).astype(np.int64)
        self.cuts = Cuts(self.snapshot_days)

        keep = (micros >= self.origin) & (micros < self.origin + self.days * DAY_US)
        customer = _codes(transactions[CUSTOMER_ID], self.customers)
        keep &= customer >= 0  # a customer who only ever returned has no purchase to anchor features to
        quantity = transactions[QUANTITY].to_numpy(zero_copy_only=False)
        unit_price = transactions[UNIT_PRICE].to_numpy(zero_copy_only=False)
        order_codes = _codes(transactions[ORDER_ID], _distinct([transactions[ORDER_ID]]))
        # Without an order id, the basket is everything the customer bought at that instant.
        order = np.where(order_codes >= 0, order_codes, -micros - 1)
        channel = _codes(pc.fill_null(transactions[CHANNEL], DEFAULT_CHANNEL), pd.Index(CHANNELS))
        rows = np.flatnonzero(keep)
        rows = rows[np.argsort(customer[rows], kind="stable")]
        day = ((micros[rows] - self.origin) // DAY_US).astype(np.int64)
        self.tx = _Purchases(
            customer=customer[rows],
            item=_codes(transactions[ITEM_ID], self.items)[rows],
            micros=micros[rows],
            day=day,
            span=self.cuts.span(day),
            quantity=quantity[rows],
            money=_money(quantity[rows], unit_price[rows]),
            order=order[rows],
            channel=channel[rows],
        )
        self.events = self._events(events) if events is not None else None

    def _events(self, events: pa.Table) -> dict[str, np.ndarray]:
        micros = _micros(events[TIMESTAMP])
        customer = _codes(events[CUSTOMER_ID], self.customers)
        keep = (customer >= 0) & (micros >= self.origin) & (micros < self.origin + self.days * DAY_US)
        rows = np.flatnonzero(keep)
        rows = rows[np.argsort(customer[rows], kind="stable")]
        kind = _codes(events[EVENT_TYPE], pd.Index(EVENT_TYPES))[rows]
        return {
            "customer": customer[rows],
            "item": _codes(events[ITEM_ID], self.items)[rows],
            "day": ((micros[rows] - self.origin) // DAY_US).astype(np.int64),
            "is_view": kind == EVENT_TYPES.index("view"),
            "is_cart": kind == EVENT_TYPES.index("add_to_cart"),
        }


def customer_behaviour(inputs: FeatureInputs, block_cells: int = 4_000_000) -> Iterator[pd.DataFrame]:
    """CUSTOMER_BEHAVIOUR at every snapshot date, one DataFrame per block of customers.

    A customer has a row at T from the first snapshot after their first purchase on.
    """
    t = inputs.snapshot_days
    per_block = max(1, block_cells // (len(inputs.cuts) + 1 + len(t)))
    n_customers = len(inputs.customers)
    starts = np.arange(0, n_customers + per_block, per_block)
    tx = inputs.tx
    tx_bounds = np.searchsorted(tx.customer, starts)
    ev = inputs.events
    ev_bounds = np.searchsorted(ev["customer"], starts) if ev is not None else None
    for block, first in enumerate(starts[:-1]):
        if first >= n_customers:
            break
        size = min(per_block, n_customers - first)
        rows = slice(tx_bounds[block], tx_bounds[block + 1])
        events = None
        if ev is not None:
            window = slice(ev_bounds[block], ev_bounds[block + 1])
            events = {name: values[window] for name, values in ev.items()}
        yield _behaviour_block(inputs, first, size, rows, events)


def _behaviour_block(inputs: FeatureInputs, first: int, size: int, rows: slice, events) -> pd.DataFrame:
    cuts, t, t_micros = inputs.cuts, inputs.snapshot_days, inputs.snapshot_micros
    width = len(cuts) + 1
    tx = inputs.tx
    local = tx.customer[rows] - first
    micros = tx.micros[rows]
    quantity = tx.quantity[rows]
    money = tx.money[rows]
    bought = quantity > 0
    flat = local * width + tx.span[rows]

    spend = _cumulative(flat[bought], money[bought], size, cuts)
    returned = _cumulative(flat[~bought], -money[~bought], size, cuts)

    # One count per (customer, day, order) with purchase rows; the order's channel is that of its first row.
    order_days = pd.DataFrame(
        {
            "day": local[bought] * (inputs.days + 1) + tx.day[rows][bought],
            "flat": flat[bought],
            "order": tx.order[rows][bought],
            "channel": tx.channel[rows][bought],
        }
    ).drop_duplicates(["day", "order"])
    order_flat = order_days["flat"].to_numpy()
    orders = _cumulative(order_flat, None, size, cuts)
    by_channel = {
        name: _cumulative(order_flat[order_days["channel"].to_numpy() == code], None, size, cuts)
        for code, name in enumerate(CHANNELS)
    }

    # Purchase days: the key is customer * (days + 1) + day, so sorting it sorts by customer, then day. The gap
    # before each purchase day counts from that day on.
    day_key = np.unique(order_days["day"].to_numpy())
    day_customer, day = np.divmod(day_key, inputs.days + 1)
    day_flat = day_customer * width + cuts.span(day)
    purchase_days = _cumulative(day_flat, None, size, cuts)
    follows = np.r_[False, day_customer[1:] == day_customer[:-1]]
    gap = np.diff(day, prepend=0)[follows]
    gap_sum = _cumulative(day_flat[follows], gap, size, cuts)
    gap_squares = _cumulative(day_flat[follows], gap * gap, size, cuts)

    lines = _cumulative(flat[bought], None, size, cuts)
    unit_price = money[bought] / np.maximum(quantity[bought], 1) / MONEY_SCALE
    log_quantity = _cumulative(flat[bought], np.rint(np.log1p(quantity[bought]) * LOG_SCALE), size, cuts)
    log_price = _cumulative(flat[bought], np.rint(np.log1p(np.maximum(unit_price, 0.0)) * LOG_SCALE), size, cuts)

    # The last purchase before each cut: the latest purchase per span, carried forward along the spans.
    last = np.full(size * width, -1, dtype=np.int64)
    np.maximum.at(last, flat[bought], micros[bought])
    last = np.maximum.accumulate(last.reshape(size, width)[:, :-1], axis=1)
    first_purchase = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_purchase, local[bought], micros[bought])

    present = first_purchase[:, None] < t_micros[None, :]  # (customers, snapshots)
    last_purchase = last[:, cuts.at(t)]
    whole_days = lambda since: (t_micros[None, :] - since) // DAY_US  # noqa: E731 (floor of a positive span)

    columns: dict[str, np.ndarray] = {
        "recency_days": whole_days(last_purchase),
        "tenure_days": whole_days(first_purchase[:, None]),
    }
    for n in (30, 90, 365):
        columns[f"orders_{n}d"] = _window(orders, cuts, t, n)
    columns["orders_total"] = orders[:, cuts.at(t)]
    money_windows = {n: _window(spend, cuts, t, n) for n in (30, 90, 365)}
    for n, value in money_windows.items():
        columns[f"spend_{n}d"] = value / MONEY_SCALE
    columns["spend_total"] = spend[:, cuts.at(t)] / MONEY_SCALE
    columns["returns_365d"] = _window(returned, cuts, t, 365) / MONEY_SCALE
    columns["avg_order_value_365d"] = _share(money_windows[365], columns["orders_365d"]) / MONEY_SCALE
    span_days = (last_purchase - first_purchase[:, None]) / DAY_US
    columns["mean_days_between_orders"] = np.where(
        columns["orders_total"] >= 2, span_days / np.maximum(columns["orders_total"] - 1, 1), np.nan
    )
    columns["purchase_days_total"] = purchase_days[:, cuts.at(t)]
    columns["purchase_days_180d"] = _window(purchase_days, cuts, t, 180)
    gaps = np.maximum(columns["purchase_days_total"] - 1, 0)
    mean_gap = _share(gap_sum[:, cuts.at(t)].astype(np.float64), gaps)
    variance = _share(gap_squares[:, cuts.at(t)].astype(np.float64), gaps) - mean_gap**2
    columns["gap_std_days"] = np.where(gaps >= 1, np.sqrt(np.maximum(variance, 0.0)), np.nan)
    lines_365 = _window(lines, cuts, t, 365)
    columns["lines_per_order_365d"] = _share(lines_365, columns["orders_365d"])
    for name, logs in (("typical_quantity_per_line_365d", log_quantity), ("typical_unit_price_365d", log_price)):
        columns[name] = np.expm1(_share(_window(logs, cuts, t, 365), lines_365) / LOG_SCALE)
    previous_90 = _window(spend, cuts, np.maximum(t - 90, 0), 90)
    columns["spend_trend"] = _trend(money_windows[90], previous_90)
    for name, counts in by_channel.items():
        columns[f"{name}_share_365d"] = _share(_window(counts, cuts, t, 365), columns["orders_365d"])

    views, carts, converted = _browse(inputs, events, first, size)
    columns["views_30d"] = _window(views, cuts, t, 30)
    columns["add_to_carts_30d"] = _window(carts, cuts, t, 30)
    columns["cart_conversion_30d"] = _share(_window(converted, cuts, t, 30), columns["add_to_carts_30d"])

    customer_idx, snapshot_idx = np.nonzero(present)
    frame = pd.DataFrame(
        {
            CUSTOMER_ID: np.asarray(inputs.customers)[first + customer_idx],
            EVENT_TIMESTAMP: pd.to_datetime(t_micros[snapshot_idx], unit="us", utc=True),
        }
    )
    for name, kind in CUSTOMER_BEHAVIOUR.items():
        values = columns[name][customer_idx, snapshot_idx]
        frame[name] = values.astype(np.int64 if kind == "int" else np.float64)
    return frame


def _browse(inputs: FeatureInputs, events, first: int, size: int):
    cuts, days = inputs.cuts, inputs.days + 1
    if events is None or len(events["day"]) == 0:
        empty = np.zeros((size, len(cuts)), dtype=np.int64)
        return empty, empty, empty
    local = events["customer"] - first
    flat = local * (len(cuts) + 1) + cuts.span(events["day"])
    views = _cumulative(flat[events["is_view"]], None, size, cuts)
    carts = _cumulative(flat[events["is_cart"]], None, size, cuts)
    # An add-to-cart converts when the customer bought that item the same day.
    tx = inputs.tx
    lo, hi = np.searchsorted(tx.customer, [first, first + size])
    bought = tx.quantity[lo:hi] > 0
    n_items = len(inputs.items)
    purchase_keys = np.sort(((tx.customer[lo:hi][bought] - first) * n_items + tx.item[lo:hi][bought]) * days
                            + tx.day[lo:hi][bought])
    cart = events["is_cart"]
    cart_keys = (local[cart] * n_items + events["item"][cart]) * days + events["day"][cart]
    found = np.minimum(np.searchsorted(purchase_keys, cart_keys), max(len(purchase_keys) - 1, 0))
    converted_carts = purchase_keys[found] == cart_keys if len(purchase_keys) else np.zeros(len(cart_keys), bool)
    converted = _cumulative(flat[cart][converted_carts], None, size, cuts)
    return views, carts, converted


def item_statistics(inputs: FeatureInputs) -> pd.DataFrame:
    """ITEM_STATISTICS at every snapshot date; an item has a row from the first snapshot after its first sale."""
    cuts, days, t, t_micros = inputs.cuts, inputs.days, inputs.snapshot_days, inputs.snapshot_micros
    tx = inputs.tx
    bought = tx.quantity > 0
    item, customer, day = tx.item[bought], tx.customer[bought], tx.day[bought]
    n_items = len(inputs.items)
    flat = item * (len(cuts) + 1) + tx.span[bought]
    revenue = _cumulative(flat, tx.money[bought], n_items, cuts)
    units = _cumulative(flat, tx.quantity[bought], n_items, cuts)
    lines = _cumulative(flat, None, n_items, cuts)

    # Buyer-days, sorted by (item, customer, day): each is one customer's purchase of the item on one day.
    buyer_days = np.unique((item * len(inputs.customers) + customer) * days + day)
    pair, d = np.divmod(buyer_days, days)
    item_of = pair // len(inputs.customers)
    same_pair_next = np.r_[pair[1:] == pair[:-1], False]
    next_day = np.where(same_pair_next, np.r_[d[1:], 0], np.iinfo(np.int64).max // 4)
    same_pair_previous = np.r_[False, pair[1:] == pair[:-1]]
    previous_day = np.r_[0, d[:-1]]

    def counted(start: np.ndarray, stop: np.ndarray, items: np.ndarray) -> np.ndarray:
        """How many intervals [start, stop] (days, inclusive) of each item hold each snapshot day: (items, snapshots).

        An interval counts from the first snapshot at or after its start to the last at or before its stop."""
        valid = start <= stop
        first_in = np.searchsorted(t, start[valid], side="left")
        first_out = np.searchsorted(t, stop[valid], side="right")
        delta = np.zeros((n_items, len(t) + 1), dtype=np.int64)
        np.add.at(delta, (items[valid], first_in), 1)
        np.add.at(delta, (items[valid], first_out), -1)
        return np.cumsum(delta, axis=1)[:, :-1]

    # A buyer counts at snapshot T for the window N from the day after a purchase until that purchase drops out
    # of the window or the buyer's next purchase of the item takes over.
    buyers = {n: counted(d + 1, np.minimum(next_day, d + n), item_of) for n in (7, 30, 90, 365)}
    # A repeat buyer: two purchase days inside the window; the latest such pair decides until the next one.
    has_previous = same_pair_previous
    repeat = counted(
        d[has_previous] + 1,
        np.minimum(next_day[has_previous], previous_day[has_previous] + 365),
        item_of[has_previous],
    )

    columns = {f"item_buyers_{n}d": counts for n, counts in buyers.items()}
    columns["item_revenue_30d"] = _window(revenue, cuts, t, 30) / MONEY_SCALE
    columns["item_revenue_365d"] = _window(revenue, cuts, t, 365) / MONEY_SCALE
    units_365 = _window(units, cuts, t, 365)
    columns["item_avg_price_365d"] = np.where(
        units_365 > 0, columns["item_revenue_365d"] / np.maximum(units_365, 1), np.nan
    )
    columns["item_repeat_rate_365d"] = _share(repeat, columns["item_buyers_365d"])
    columns["item_trend_30d"] = _trend(_window(lines, cuts, t, 30), _window(lines, cuts, np.maximum(t - 30, 0), 30))

    first_sale = np.full(n_items, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_sale, item, tx.micros[bought])
    item_idx, snapshot_idx = np.nonzero(first_sale[:, None] < t_micros[None, :])
    frame = pd.DataFrame(
        {
            ITEM_ID: np.asarray(inputs.items)[item_idx],
            EVENT_TIMESTAMP: pd.to_datetime(t_micros[snapshot_idx], unit="us", utc=True),
        }
    )
    for name, kind in ITEM_STATISTICS.items():
        values = columns[name][item_idx, snapshot_idx]
        frame[name] = values.astype(np.int64 if kind == "int" else np.float64)
    return frame


def customer_profile(
    customers: pd.DataFrame | None, first_seen: pd.Series, known_by: pd.Timestamp
) -> pd.DataFrame:
    """CUSTOMER_PROFILE, one row per customer, stamped with when the customer became known: the earliest of the
    signup date and their first transaction or event (`first_seen`), else `known_by` (the build's last snapshot).

    The customers table keeps only the latest attributes, so a profile is its current value at every time."""
    if customers is None or customers.empty:
        return pd.DataFrame(
            {CUSTOMER_ID: pd.Series(dtype=str), EVENT_TIMESTAMP: pd.Series(dtype="datetime64[us, UTC]")}
            | {name: pd.Series(dtype=_PANDAS_KINDS[kind]) for name, kind in CUSTOMER_PROFILE.items()}
        )
    seen = customers[CUSTOMER_ID].map(first_seen)
    known = pd.concat([pd.to_datetime(customers[SIGNUP_DATE], utc=True), pd.to_datetime(seen, utc=True)], axis=1)
    stamp = known.min(axis=1).fillna(known_by)
    frame = pd.DataFrame({CUSTOMER_ID: customers[CUSTOMER_ID].astype(str), EVENT_TIMESTAMP: stamp})
    for name, kind in CUSTOMER_PROFILE.items():
        frame[name] = customers[name].astype(_PANDAS_KINDS[kind])
    frame[EVENT_TIMESTAMP] = frame[EVENT_TIMESTAMP].astype("datetime64[us, UTC]")
    return frame.reset_index(drop=True)


_PANDAS_KINDS = {"int": "int64", "float": "float64", "str": "string", "bool": "boolean"}


# -------------------------------------------------------------------------------------------------- customer state
# A customer's state, which the rails read at request time (features/state.py keeps it online): their purchase
# history and their session. A line of history is a distinct (time, item, order, quantity) of a purchase (quantity
# > 0: an item twice on one order, in two quantities, is two lines); the latest are kept, in that order, the same
# order the online stores keep them in.
HISTORY_LINES = 10_000  # no customer of the UCI file reaches it (the most, a wholesaler: 6,200 lines in a year)
SESSION_EVENTS = 20  # the latest views and add-to-carts
HISTORY = (CUSTOMER_ID, ITEM_ID, TIMESTAMP, ORDER_ID, QUANTITY)  # TIMESTAMP: microseconds since 1970, UTC
SESSION = (CUSTOMER_ID, ITEM_ID, TIMESTAMP, EVENT_TYPE)


def purchase_history(transactions: pd.DataFrame, before=None) -> pd.DataFrame:
    """Every customer's history as of `before` (a time; None: all of it): their latest HISTORY_LINES purchase lines
    before it, oldest first. An order id is "" where the line has none."""
    return _latest(transactions[transactions[QUANTITY] > 0], before, (ORDER_ID, QUANTITY), HISTORY_LINES)


def session(events: pd.DataFrame | None, before=None, keep: int = SESSION_EVENTS) -> pd.DataFrame:
    """Every customer's session as of `before`: their latest `keep` views and add-to-carts, oldest first."""
    if events is None:
        return pd.DataFrame({column: pd.Series(dtype="int64" if column == TIMESTAMP else "object")
                             for column in SESSION})
    return _latest(events, before, (EVENT_TYPE,), keep)


def _latest(rows: pd.DataFrame, before, keys: tuple[str, ...], keep: int) -> pd.DataFrame:
    """The distinct (customer, item, time, *keys) of rows before `before`, each customer's latest `keep`, sorted by
    customer, time, item and keys."""
    if before is not None:
        rows = rows[rows[TIMESTAMP] < utc(before)]
    frame = pd.DataFrame({CUSTOMER_ID: rows[CUSTOMER_ID].astype(str).to_numpy(),
                          ITEM_ID: rows[ITEM_ID].astype(str).to_numpy(), TIMESTAMP: _to_micros(rows[TIMESTAMP])})
    for key in keys:
        if key == QUANTITY:
            frame[key] = rows[key].to_numpy(np.int64)
        else:  # an order id (absent from a file without one) or an event type
            frame[key] = (rows[key].astype("string").fillna("").astype(str).to_numpy() if key in rows
                          else np.full(len(rows), "", dtype=object))
    frame = frame.drop_duplicates().sort_values([CUSTOMER_ID, TIMESTAMP, ITEM_ID, *keys], kind="stable")
    return frame.groupby(CUSTOMER_ID, sort=False).tail(keep).reset_index(drop=True)


def _to_micros(times: pd.Series) -> np.ndarray:
    return pd.to_datetime(times, utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy()
