"""A synthetic multi-channel retailer with planted structure and the truth about it saved beside the data.

Planted so that models have something to find and tests know the right answer:
- taste groups: each customer belongs to one; a group buys mostly from its own few categories;
- staples: each customer rebuys a handful of items (the "buy it again" signal);
- churners: their purchase rate fades linearly to zero over `fade_days` before their churn day;
- browsing: before each order line, `views_per_line` views (on average) of items of the bought item's category in
  the half hour before, then the add-to-cart of the bought item a minute before (what a session says about the
  coming order); `ground_truth/browsing.parquet` names the order each event led to.
Purchases are a Poisson process per customer (rates vary between customers), thinned by the fade. Activity is
drawn in blocks of customers with array operations only, so a million customers fit in a few GB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loyal import schema as s
from loyal.home import Home

CHANNELS = np.array(["web", "app", "store"])
TIERS = np.array(["bronze", "silver", "gold"])
COUNTRIES = np.array(["United Kingdom", "Germany", "France", "Netherlands", "Spain", "Ireland"])
COUNTRY_WEIGHTS = np.array([0.7, 0.08, 0.08, 0.05, 0.05, 0.04])
CATEGORY_NAMES = np.array([
    "kitchen", "tableware", "candles", "lighting", "garden", "stationery", "toys", "party", "bags", "jewellery",
    "bathroom", "bedding", "storage", "christmas", "easter", "baking", "clocks", "frames", "wall art", "cushions",
    "mugs", "textiles", "crafts", "pets",
])
BLOCK_CUSTOMERS = 50_000  # part of the recipe: the same seed gives the same data only with the same block size
DAY_US = 86_400 * 1_000_000
MINUTE_US = 60_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    customers: int = 5_000
    days: int = 365
    seed: int = 0
    start: str = "2024-01-01"           # first day of the window, UTC
    items: int = 3_000                  # the UCI file has about 3,700 products
    categories: int = 24
    taste_groups: int = 8
    categories_per_group: int = 3
    in_group_share: float = 0.8         # of non-staple lines, the share from the group's own categories
    staples_per_customer: int = 4
    staple_share: float = 0.3           # of lines, the share that rebuys one of the customer's staples
    orders_per_year: float = 8.0        # mean over customers; rates are gamma-distributed around it
    rate_shape: float = 1.0             # gamma shape of the rates: 1 = exponential, many light buyers
    churner_share: float = 0.3
    fade_days: int = 120                # a churner's rate falls linearly to zero over this many days
    return_share: float = 0.03
    opt_in_share: float = 0.6
    views_per_line: float = 1.0


@dataclass(frozen=True)
class World:
    """Everything drawn per item and per customer; activity is drawn from it block by block."""

    config: SyntheticConfig
    start_us: int
    item_category: np.ndarray       # items sorted by category: a category is a contiguous range
    first_item: np.ndarray          # first item of each category (+ one past the last)
    cum_by_item: np.ndarray         # category + cumulative popularity share within it
    category_weights: np.ndarray
    item_price: np.ndarray
    group_categories: np.ndarray    # (groups, categories_per_group)
    group: np.ndarray               # per customer
    signup_day: np.ndarray
    rate: np.ndarray                # orders per day
    is_churner: np.ndarray
    churn_day: np.ndarray           # int64 max for non-churners
    staples: np.ndarray             # (customers, staples_per_customer) item indices
    channel_pref: np.ndarray        # (customers, 3) cumulative channel probabilities
    customer_ids: np.ndarray
    item_ids: np.ndarray


def pick_in_category(cum_by_item: np.ndarray, first_item: np.ndarray, categories: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """An item of each given category, drawn by popularity, with one searchsorted for all of them."""
    picked = np.searchsorted(cum_by_item, categories + rng.random(len(categories)), side="right")
    return np.clip(picked, first_item[categories], first_item[categories + 1] - 1)  # float rounding at the edges


def build_world(config: SyntheticConfig) -> World:
    rng = np.random.default_rng([config.seed, 0])
    n_c, n_i, n_k, n_g = config.customers, config.items, config.categories, config.taste_groups

    item_category = np.sort(rng.integers(0, n_k, n_i))
    first_item = np.searchsorted(item_category, np.arange(n_k + 1))
    popularity = rng.permutation(1.0 / np.arange(1, n_i + 1))  # Zipf
    category_total = np.bincount(item_category, popularity, minlength=n_k)
    cumulative = np.cumsum(popularity / category_total[item_category])
    before_category = np.concatenate([[0.0], cumulative])[first_item[:-1]]
    cum_by_item = item_category + cumulative - before_category[item_category]
    item_price = np.round(np.exp(rng.normal(1.0 + 0.05 * item_category, 0.6)), 2).clip(0.19, None)
    group_categories = np.stack([rng.choice(n_k, config.categories_per_group, replace=False) for _ in range(n_g)])

    group = rng.integers(0, n_g, n_c)
    signup_day = rng.integers(-365, config.days, n_c)
    rate = rng.gamma(config.rate_shape, config.orders_per_year / 365 / config.rate_shape, n_c)
    is_churner = rng.random(n_c) < config.churner_share
    # A churner stops some time after becoming active, possibly after the window ends.
    active_from = np.maximum(signup_day, 0)
    churn_day = np.where(is_churner, active_from + config.fade_days // 2 + rng.integers(0, config.days + 180, n_c),
                         np.iinfo(np.int64).max)
    staple_categories = group_categories[group[:, None],
                                         rng.integers(0, config.categories_per_group, (n_c, config.staples_per_customer))]
    staples = pick_in_category(cum_by_item, first_item, staple_categories.ravel(), rng).reshape(n_c, -1)
    return World(
        config=config,
        start_us=pd.Timestamp(config.start, tz="UTC").value // 1000,
        item_category=item_category, first_item=first_item, cum_by_item=cum_by_item,
        category_weights=category_total / category_total.sum(), item_price=item_price,
        group_categories=group_categories, group=group, signup_day=signup_day, rate=rate,
        is_churner=is_churner, churn_day=churn_day, staples=staples,
        channel_pref=rng.dirichlet([3.0, 1.5, 1.5], n_c).cumsum(axis=1),
        customer_ids=np.char.add("C", np.char.zfill(np.arange(n_c).astype(str), 7)),
        item_ids=np.char.add("SKU", np.char.zfill(np.arange(n_i).astype(str), 5)),
    )


def _strings(values: np.ndarray, codes: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(values)).cast(pa.string())


def activity(world: World, first: int, last: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Transactions, events and the browsing truth (each event's order) of customers first..last-1."""
    c = world.config
    rng = np.random.default_rng([c.seed, 1, first])
    customers = np.arange(first, last)

    # Orders: a Poisson process over each customer's active span, thinned by the churn fade.
    active_from = np.maximum(world.signup_day[customers], 0)
    span = np.clip(np.minimum(world.churn_day[customers], c.days) - active_from, 0, None)
    n_candidates = rng.poisson(world.rate[customers] * span)
    local = np.repeat(np.arange(len(customers)), n_candidates)
    order_day = active_from[local] + rng.random(len(local)) * span[local]
    keep = rng.random(len(local)) < np.clip((world.churn_day[first + local] - order_day) / c.fade_days, 0, 1)
    order_customer, order_day = first + local[keep], order_day[keep]
    order_us = world.start_us + (order_day * DAY_US).astype(np.int64)
    order_us -= order_us % MINUTE_US  # whole minutes, like a till receipt
    n_orders = len(order_customer)
    order_channel = (rng.random(n_orders)[:, None] > world.channel_pref[order_customer]).sum(axis=1)
    # Order ids are unique across blocks: the block's first customer number prefixes them.
    order_ids = np.char.add(f"O{first:07d}-", np.arange(n_orders).astype(str))

    # Order lines: one of the customer's staples, an item of the group's categories, or anything.
    line_order = np.repeat(np.arange(n_orders), 1 + rng.poisson(2.0, n_orders))
    line_customer = order_customer[line_order]
    kind = rng.random(len(line_order))
    is_staple = kind < c.staple_share
    in_group = ~is_staple & (kind < c.staple_share + (1 - c.staple_share) * c.in_group_share)
    category = np.where(
        in_group,
        world.group_categories[world.group[line_customer], rng.integers(0, c.categories_per_group, len(line_order))],
        rng.choice(c.categories, len(line_order), p=world.category_weights),
    )
    line_item = np.where(
        is_staple,
        world.staples[line_customer, rng.integers(0, c.staples_per_customer, len(line_order))],
        pick_in_category(world.cum_by_item, world.first_item, category, rng),
    )
    # One line per item in an order.
    _, unique = np.unique(line_order * c.items + line_item, return_index=True)
    line_order, line_customer, line_item = line_order[unique], line_customer[unique], line_item[unique]
    quantity = 1 + rng.poisson(1.0, len(line_order))
    line_us = order_us[line_order]

    # Returns: a share of lines comes back within three weeks, if that is still inside the window.
    return_us = line_us + rng.integers(1, 21, len(line_order)) * DAY_US
    returned = (rng.random(len(line_order)) < c.return_share) & (return_us < world.start_us + c.days * DAY_US)
    rows = np.concatenate([np.arange(len(line_order)), np.flatnonzero(returned)])
    transactions = pa.table({
        s.CUSTOMER_ID: _strings(world.customer_ids, line_customer[rows]),
        s.ITEM_ID: _strings(world.item_ids, line_item[rows]),
        s.TIMESTAMP: pa.array(np.concatenate([line_us, return_us[returned]]), s.TIMESTAMP_TYPE),
        s.QUANTITY: pa.array(np.concatenate([quantity, -quantity[returned]]), pa.int64()),
        s.UNIT_PRICE: pa.array(world.item_price[line_item[rows]], pa.float64()),
        s.ORDER_ID: _strings(order_ids, line_order[rows]),
        s.CHANNEL: _strings(CHANNELS, order_channel[line_order[rows]]),
    }, schema=s.TRANSACTIONS.schema)

    # Events: views of items of the bought item's category in the half hour before, then the add-to-cart.
    view_line = np.repeat(np.arange(len(line_order)), rng.poisson(c.views_per_line, len(line_order)))
    events = pd.DataFrame({
        "customer": np.concatenate([line_customer[view_line], line_customer]),
        "item": np.concatenate([pick_in_category(world.cum_by_item, world.first_item,
                                                  world.item_category[line_item[view_line]], rng), line_item]),
        "us": np.concatenate([line_us[view_line] - rng.integers(2, 30, len(view_line)) * MINUTE_US,
                              line_us - MINUTE_US]),
        "type": np.repeat([0, 1], [len(view_line), len(line_order)]),
        "channel": order_channel[line_order[np.concatenate([view_line, np.arange(len(line_order))])]],
        "line": np.concatenate([view_line, np.arange(len(line_order))]),  # the order line it leads to: the truth
    }).drop_duplicates(["customer", "item", "us", "type", "channel"])  # one item viewed twice in a minute: once
    led_to = line_order[events["line"].to_numpy()]
    events = pa.table({
        s.CUSTOMER_ID: _strings(world.customer_ids, events["customer"].to_numpy()),
        s.ITEM_ID: _strings(world.item_ids, events["item"].to_numpy()),
        s.TIMESTAMP: pa.array(events["us"].to_numpy(), s.TIMESTAMP_TYPE),
        s.EVENT_TYPE: _strings(np.array(s.EVENT_TYPES), events["type"].to_numpy()),
        s.CHANNEL: _strings(CHANNELS, events["channel"].to_numpy()),
    }, schema=s.EVENTS.schema)
    browsing = pa.table({
        s.CUSTOMER_ID: events[s.CUSTOMER_ID], s.ITEM_ID: events[s.ITEM_ID], s.TIMESTAMP: events[s.TIMESTAMP],
        s.EVENT_TYPE: events[s.EVENT_TYPE], s.ORDER_ID: _strings(order_ids, led_to),
        "order_timestamp": pa.array(order_us[led_to], s.TIMESTAMP_TYPE),
    })
    return transactions, events, browsing


def activity_blocks(world: World) -> Iterator[tuple[pa.Table, pa.Table, pa.Table]]:
    for first in range(0, world.config.customers, BLOCK_CUSTOMERS):
        yield activity(world, first, min(first + BLOCK_CUSTOMERS, world.config.customers))


def customers_table(world: World) -> pa.Table:
    rng = np.random.default_rng([world.config.seed, 2])
    n_c = world.config.customers
    tier = np.searchsorted(np.quantile(world.rate, [0.6, 0.9]), world.rate)  # tiers follow spend, as they do
    return pa.table({
        s.CUSTOMER_ID: pa.array(world.customer_ids),
        s.COUNTRY: _strings(COUNTRIES, rng.choice(len(COUNTRIES), n_c, p=COUNTRY_WEIGHTS)),
        s.SIGNUP_DATE: pa.array(world.start_us + world.signup_day * DAY_US, s.TIMESTAMP_TYPE),
        s.EMAIL_OPT_IN: pa.array(rng.random(n_c) < world.config.opt_in_share),
        s.LOYALTY_TIER: _strings(TIERS, tier),
    }, schema=s.CUSTOMERS.schema)


def items_table(world: World) -> pa.Table:
    names = CATEGORY_NAMES[world.item_category % len(CATEGORY_NAMES)]
    numbers = np.arange(len(world.item_ids)).astype(str)
    return pa.table({
        s.ITEM_ID: pa.array(world.item_ids),
        s.DESCRIPTION: pa.array(np.char.add(np.char.add(np.char.upper(names), " ITEM "), numbers)),
        s.CATEGORY: pa.array(names),
        s.PRICE: pa.array(world.item_price),
    }, schema=s.ITEMS.schema)


def ground_truth(world: World) -> dict[str, pd.DataFrame]:
    """What was planted: each customer's taste group and churn date, each group's categories, the staples."""
    c = world.config
    start = pd.Timestamp(c.start, tz="UTC")
    churn_date = pd.Series(start + pd.to_timedelta(np.where(world.is_churner, world.churn_day, 0), unit="D"))
    return {
        "customers": pd.DataFrame({
            s.CUSTOMER_ID: world.customer_ids,
            "taste_group": world.group,
            "is_churner": world.is_churner,
            "churn_date": churn_date.where(world.is_churner),
            "orders_per_year": world.rate * 365,
        }),
        "taste_groups": pd.DataFrame({
            "taste_group": np.repeat(np.arange(c.taste_groups), c.categories_per_group),
            s.CATEGORY: CATEGORY_NAMES[world.group_categories.ravel() % len(CATEGORY_NAMES)],
        }),
        "staples": pd.DataFrame({
            s.CUSTOMER_ID: np.repeat(world.customer_ids, c.staples_per_customer),
            s.ITEM_ID: world.item_ids[world.staples.ravel()],
        }),
    }


class BrowsingTruth:
    """`ground_truth/browsing.parquet`, written block by block as the activity is drawn (a million customers'
    events do not fit in memory twice) and put in place only whole, by `commit`."""

    def __init__(self, home: Path):
        self.folder = Home(home).ground_truth
        self.partial = self.folder / "browsing.parquet.partial"
        self.writer: pq.ParquetWriter | None = None

    def write(self, block: pa.Table) -> None:
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.partial, block.schema)
        self.writer.write_table(block)

    def commit(self) -> None:
        if self.writer is not None:
            self.writer.close()
            os.replace(self.partial, self.folder / "browsing.parquet")

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.partial.unlink(missing_ok=True)


def save_truth(truth: dict[str, pd.DataFrame], home: Path) -> None:
    folder = Home(home).ground_truth
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in truth.items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet")
