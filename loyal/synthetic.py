"""A synthetic multi-channel retailer with planted structure and the truth about it saved beside the data.

Planted so that models have something to find and tests know the right answer:
- taste groups: each customer belongs to one; a group buys mostly from its own few categories;
- staples: each customer rebuys a handful of items (the "buy it again" signal);
- churners: their purchase rate fades linearly to zero over `fade_days` before their churn day;
- browsing: before each order line, `views_per_line` views (on average) of items of the bought item's category in
  the half hour before, then the add-to-cart of the bought item a minute before (what a session says about the
  coming order); `ground_truth/browsing.parquet` names the order each event led to;
- past campaigns (`campaigns` > 0): each lists a random share of the opted-in customers active by its day, holds a
  random part out as control and offers the rest a random incentive, whose effect over the next
  `campaign_window_days` depends on what the customer was doing, observably: a customer whose buying fades (a
  churner in their fade) is *persuadable*: the incentive brings them back for one order with some probability and
  restores the same share of the lost rate (some incentives more than others); a store shopper (most orders in
  store) is *put off* and buys less; everyone else is a *sure thing* (buys anyway) or a *lost cause* (stopped
  already) and does not change. The lists go to the contact history;
  `ground_truth/campaign_effects.parquet` holds each listed customer's expected effect of every incentive, and
  `ground_truth/effects_at_end.parquet` every customer's on the day after the data.
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
INCENTIVES = np.array(["percent_off", "free_shipping", "points_multiplier"])  # the names policy.yaml gives them
# Per incentive, what it does to a persuadable: the probability they come back for one order in the window (the
# offer redeemed), and the same share of their lost buying rate restored over it.
INCENTIVE_PULL = np.array([0.8, 0.4, 0.5])
PUT_OFF_LOSS = 0.5  # the share of a put-off customer's orders an email costs in its window
UPLIFT_TYPES = np.array(["persuadable", "sure_thing", "lost_cause", "put_off"])
PERSUADABLE, SURE_THING, LOST_CAUSE, PUT_OFF = range(4)
TREATMENT, CONTROL = 1, 2  # a campaign's groups; 0: not listed
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
    campaigns: int = 0                  # past campaigns with planted heterogeneous effects
    campaign_share: float = 0.3         # of the opted-in customers active by its day, the share a campaign lists
    campaign_control: float = 0.5       # of a list, the share held out as control
    campaign_window_days: int = 30      # how long an incentive acts

    def campaign_days(self) -> np.ndarray:
        """The day of each past campaign: evenly spread over the second half of the window, each one's effect
        over before the next starts and the last one's inside the data."""
        if self.campaigns == 0:
            return np.zeros(0, dtype=np.int64)
        first, last = self.days // 2, self.days - self.campaign_window_days - 1
        if self.campaigns > 1 and (last - first) / (self.campaigns - 1) < self.campaign_window_days:
            room = max(0, (last - first) // self.campaign_window_days + 1)
            raise ValueError(f"{self.days} days leave room for {room} campaign(s) of {self.campaign_window_days} "
                             f"days in their second half, not {self.campaigns}")
        if last < first:
            raise ValueError(f"{self.days} days are too few for a campaign: "
                             f"{2 * (self.campaign_window_days + 1)} at least")
        return np.linspace(first, last, self.campaigns).round().astype(np.int64)


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
    country: np.ndarray             # per customer, an index into COUNTRIES
    opt_in: np.ndarray              # per customer
    order_value: np.ndarray         # per customer, the expected value of an order (before the rare repeated line)
    campaign_days: np.ndarray       # (campaigns,)
    campaign_group: np.ndarray      # (campaigns, customers): 0 not listed, TREATMENT or CONTROL
    campaign_incentive: np.ndarray  # (campaigns, customers): an index into INCENTIVES, for those listed


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
    channel_pref = rng.dirichlet([3.0, 1.5, 1.5], n_c).cumsum(axis=1)

    profile = np.random.default_rng([config.seed, 2])
    country = profile.choice(len(COUNTRIES), n_c, p=COUNTRY_WEIGHTS)
    opt_in = profile.random(n_c) < config.opt_in_share
    # An order's expected value: its lines (1 + Poisson(2)) x units (1 + Poisson(1)) x the expected unit price of
    # a line, which is a staple, an item of the group's categories or anything, each item by its popularity.
    category_price = np.divide(np.bincount(item_category, popularity * item_price, minlength=n_k), category_total,
                               out=np.zeros(n_k), where=category_total > 0)
    general_price = float(category_price @ (category_total / category_total.sum()))
    in_group_price = category_price[group_categories].mean(axis=1)[group]
    line_price = (config.staple_share * item_price[staples].mean(axis=1) + (1 - config.staple_share)
                  * (config.in_group_share * in_group_price + (1 - config.in_group_share) * general_price))
    order_value = 3.0 * 2.0 * line_price

    days = config.campaign_days()
    drawn = np.random.default_rng([config.seed, 3])
    campaign_group = np.zeros((len(days), n_c), dtype=np.int8)
    campaign_incentive = np.zeros((len(days), n_c), dtype=np.int8)
    for k, day in enumerate(days):
        listed = opt_in & (np.maximum(signup_day, 0) < day) & (drawn.random(n_c) < config.campaign_share)
        control = drawn.random(n_c) < config.campaign_control
        campaign_group[k] = np.where(listed, np.where(control, CONTROL, TREATMENT), 0)
        campaign_incentive[k] = drawn.integers(0, len(INCENTIVES), n_c)
    return World(
        config=config,
        start_us=pd.Timestamp(config.start, tz="UTC").value // 1000,
        item_category=item_category, first_item=first_item, cum_by_item=cum_by_item,
        category_weights=category_total / category_total.sum(), item_price=item_price,
        group_categories=group_categories, group=group, signup_day=signup_day, rate=rate,
        is_churner=is_churner, churn_day=churn_day, staples=staples,
        channel_pref=channel_pref,
        customer_ids=np.char.add("C", np.char.zfill(np.arange(n_c).astype(str), 7)),
        item_ids=np.char.add("SKU", np.char.zfill(np.arange(n_i).astype(str), 5)),
        country=country, opt_in=opt_in, order_value=order_value,
        campaign_days=days, campaign_group=campaign_group, campaign_incentive=campaign_incentive,
    )


def _fade(world: World, customers: np.ndarray, day: np.ndarray) -> np.ndarray:
    """The share of their buying rate customers keep on a (fractional) day: 1 until a churner's fade begins,
    falling to 0 at their churn day."""
    return np.clip((world.churn_day[customers] - day) / world.config.fade_days, 0, 1)


def uplift_type(world: World, customers: np.ndarray, day: int) -> np.ndarray:
    """What an incentive offered on `day` does to each customer, by what they were doing (UPLIFT_TYPES' index)."""
    fade = _fade(world, customers, day)
    store_share = 1 - world.channel_pref[customers, 1]
    return np.select([fade <= 0, store_share > 0.5, fade < 1], [LOST_CAUSE, PUT_OFF, PERSUADABLE], SURE_THING)


def true_effects(world: World, customers: np.ndarray, day: int) -> pd.DataFrame:
    """Each customer's expected change in orders and revenue over the window of an incentive offered on `day`,
    for every incentive: the rate each is given in `activity`, integrated over the window day by day."""
    window = day + 0.5 + np.arange(world.config.campaign_window_days)
    fade = _fade(world, customers[:, None], window[None, :])  # (customers, days)
    kind = uplift_type(world, customers, day)
    rate = world.rate[customers]
    frame = pd.DataFrame({s.CUSTOMER_ID: world.customer_ids[customers], "uplift_type": UPLIFT_TYPES[kind]})
    lost = np.where(kind == PUT_OFF, -PUT_OFF_LOSS * rate * fade.sum(axis=1), 0.0)
    for incentive, pull in zip(INCENTIVES, INCENTIVE_PULL):
        orders = np.where(kind == PERSUADABLE, pull * (1 + rate * (1 - fade).sum(axis=1)), lost)
        frame[f"true_incremental_orders_{incentive}"] = orders
        frame[f"true_incremental_revenue_{incentive}"] = orders * world.order_value[customers]
    return frame


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
    if len(world.campaign_days):
        order_customer, order_day = _campaign_outcomes(world, first, last, order_customer, order_day)
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


def _campaign_outcomes(world: World, first: int, last: int, order_customer: np.ndarray, order_day: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The orders of customers first..last-1 once each past campaign has acted on its treatment group: a
    put-off customer loses a share of the window's orders; a persuadable one redeems the offer in one order with
    its incentive's pull as probability, and gains orders at the part of their lost rate it restores (drawn at
    that share of their full rate, kept where their fade has taken it)."""
    c = world.config
    rng = np.random.default_rng([c.seed, 4, first])  # its own stream: without campaigns the data are as before
    customers = np.arange(first, last)
    for k, day in enumerate(world.campaign_days):
        treated = world.campaign_group[k, customers] == TREATMENT
        kind = uplift_type(world, customers, day)
        end = min(day + c.campaign_window_days, c.days)
        local = order_customer - first
        in_window = (order_day >= day) & (order_day < end)
        dropped = in_window & treated[local] & (kind[local] == PUT_OFF) & (rng.random(len(local)) < PUT_OFF_LOSS)
        order_customer, order_day = order_customer[~dropped], order_day[~dropped]
        gaining = customers[treated & (kind == PERSUADABLE)]
        pull = INCENTIVE_PULL[world.campaign_incentive[k, gaining]]
        extra = np.repeat(gaining, rng.poisson(world.rate[gaining] * pull * (end - day)))
        extra_day = day + rng.random(len(extra)) * (end - day)
        extra_kept = rng.random(len(extra)) >= _fade(world, extra, extra_day)
        redeemed = gaining[rng.random(len(gaining)) < pull]
        redeemed_day = day + rng.random(len(redeemed)) * (end - day)
        order_customer = np.concatenate([order_customer, extra[extra_kept], redeemed])
        order_day = np.concatenate([order_day, extra_day[extra_kept], redeemed_day])
    return order_customer, order_day


def activity_blocks(world: World) -> Iterator[tuple[pa.Table, pa.Table, pa.Table]]:
    for first in range(0, world.config.customers, BLOCK_CUSTOMERS):
        yield activity(world, first, min(first + BLOCK_CUSTOMERS, world.config.customers))


def customers_table(world: World) -> pa.Table:
    tier = np.searchsorted(np.quantile(world.rate, [0.6, 0.9]), world.rate)  # tiers follow spend, as they do
    return pa.table({
        s.CUSTOMER_ID: pa.array(world.customer_ids),
        s.COUNTRY: _strings(COUNTRIES, world.country),
        s.SIGNUP_DATE: pa.array(world.start_us + world.signup_day * DAY_US, s.TIMESTAMP_TYPE),
        s.EMAIL_OPT_IN: pa.array(world.opt_in),
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


def campaign_history(world: World) -> pd.DataFrame:
    """The past campaigns' lists, as `loyal campaign` records them in the contact history: campaign, customer,
    group, the day, and the incentive offered (the control group is offered nothing but drawn one all the same,
    so that the truth knows what it would have done)."""
    frames = []
    for k, day in enumerate(world.campaign_days):
        listed = np.flatnonzero(world.campaign_group[k])
        frames.append(pd.DataFrame({
            "campaign": f"synthetic-{k + 1}",
            s.CUSTOMER_ID: world.customer_ids[listed],
            "group": np.where(world.campaign_group[k, listed] == TREATMENT, "treatment", "control"),
            "contacted_on": pd.Timestamp(world.config.start) + pd.Timedelta(days=int(day)),
            "incentive": INCENTIVES[world.campaign_incentive[k, listed]],
        }))
    history = pd.concat(frames, ignore_index=True)
    return history.astype({"campaign": "string", s.CUSTOMER_ID: "string", "group": "string",
                           "contacted_on": "datetime64[us]", "incentive": "string"})


def campaign_truth(world: World) -> dict[str, pd.DataFrame]:
    """Each listed customer's true effects in each past campaign, and every customer's on the day after the data."""
    frames = []
    for k, day in enumerate(world.campaign_days):
        listed = np.flatnonzero(world.campaign_group[k])
        effects = true_effects(world, listed, int(day))
        effects.insert(0, "campaign", f"synthetic-{k + 1}")
        effects.insert(2, "group", np.where(world.campaign_group[k, listed] == TREATMENT, "treatment", "control"))
        effects.insert(3, "incentive", INCENTIVES[world.campaign_incentive[k, listed]])
        frames.append(effects)
    everyone = np.arange(world.config.customers)
    return {"campaign_effects": pd.concat(frames, ignore_index=True),
            "effects_at_end": true_effects(world, everyone, world.config.days)}


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
