"""The synthetic retailer: deterministic, multi-channel, and carrying the structure it says it plants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loyal.home import Home
from loyal.ingest import ingest_synthetic
from loyal.store import read_table
from loyal.synthetic import SyntheticConfig

from conftest import tree_digest

CONFIG = SyntheticConfig(customers=3_000, days=365, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("synthetic")
    summary = ingest_synthetic(CONFIG, home)
    tables = {name: read_table(home, name) for name in ("transactions", "events", "customers", "items")}
    truth = {name: pd.read_parquet(Home(home).ground_truth / f"{name}.parquet")
             for name in ("customers", "taste_groups", "staples")}
    return home, summary, tables, truth


def test_summary_reconciles_and_every_table_is_filled(world):
    _, summary, tables, _ = world
    assert summary["rows_read"] == summary["rows_kept"] and summary["rows_quarantined"] == 0
    assert summary["tables"]["customers"]["rows_total"] == CONFIG.customers
    assert all(len(t) for t in tables.values())


def test_same_seed_same_data_and_a_second_ingest_changes_nothing(world, tmp_path):
    home, _, _, _ = world
    before = tree_digest(home / "canonical")
    again = ingest_synthetic(CONFIG, home)
    assert tree_digest(home / "canonical") == before
    assert all(t["rows_added"] == 0 for t in again["tables"].values())
    elsewhere = tmp_path / "other"
    ingest_synthetic(CONFIG, elsewhere)
    assert tree_digest(elsewhere / "canonical") == before


def test_multi_channel_with_events_consent_and_tiers(world):
    _, _, tables, _ = world
    assert set(tables["transactions"]["channel"]) == {"web", "app", "store"}
    assert set(tables["events"]["event_type"]) == {"view", "add_to_cart"}
    assert (tables["transactions"]["quantity"] < 0).any()  # returns exist
    opt_in = tables["customers"]["email_opt_in"].mean()
    assert 0.5 < opt_in < 0.7
    assert set(tables["customers"]["loyalty_tier"]) == {"bronze", "silver", "gold"}
    assert tables["items"]["category"].notna().all()


def test_taste_groups_buy_from_their_categories(world):
    _, _, tables, truth = world
    sales = tables["transactions"].query("quantity > 0").merge(tables["items"][["item_id", "category"]])
    sales = sales.merge(truth["customers"][["customer_id", "taste_group"]])
    own = truth["taste_groups"].assign(own=True)
    share_own = sales.merge(own, on=["taste_group", "category"], how="left")["own"].notna().mean()
    # Planted: 30 % staples (from own categories) + 70 % x 80 % own categories = 86 % (plus chance hits).
    # Without planted tastes, 3 of 24 categories would get about 1/8 of the lines.
    assert share_own > 0.8


def test_customers_rebuy_their_staples(world):
    _, _, tables, truth = world
    sales = tables["transactions"].query("quantity > 0")
    staples = truth["staples"].assign(staple=True).drop_duplicates()
    share = sales.merge(staples, on=["customer_id", "item_id"], how="left")["staple"].notna().mean()
    assert share > 0.3


def test_churners_fade_and_stop(world):
    _, _, tables, truth = world
    sales = tables["transactions"].query("quantity > 0")
    churners = truth["customers"].query("is_churner")
    last = sales.groupby("customer_id")["timestamp"].max()
    joined = churners.set_index("customer_id").join(last, how="inner")
    assert (joined["timestamp"] <= joined["churn_date"]).all()  # nobody buys after churning
    # In the fade's last third a churner buys at under a third of their full rate; compare with the 90 days
    # before the fade started, for churners whose whole fade lies inside the window.
    start = pd.Timestamp(CONFIG.start, tz="UTC")
    end = start + pd.Timedelta(days=CONFIG.days)
    inside = churners[(churners["churn_date"] < end) & (churners["churn_date"] - pd.Timedelta(days=210) > start)]
    bought = sales.merge(inside[["customer_id", "churn_date"]])
    days_before = (bought["churn_date"] - bought["timestamp"]).dt.days
    late = (days_before < 40).sum() / 40
    early = ((days_before >= 120) & (days_before < 210)).sum() / 90
    assert late < 0.35 * early


def test_non_churners_keep_buying(world):
    _, _, tables, truth = world
    sales = tables["transactions"].query("quantity > 0")
    end = pd.Timestamp(CONFIG.start, tz="UTC") + pd.Timedelta(days=CONFIG.days)
    recent = set(sales.loc[sales["timestamp"] > end - pd.Timedelta(days=90), "customer_id"])
    people = truth["customers"].assign(recent=lambda d: d["customer_id"].isin(recent))
    gone = people["churn_date"] < end - pd.Timedelta(days=90)
    assert people.loc[~people["is_churner"], "recent"].mean() > 0.5
    assert gone.sum() > 100 and people.loc[gone, "recent"].sum() == 0


@pytest.mark.slow
def test_a_million_customers_in_minutes(tmp_path):
    """Scale check (the benchmark benchmarks/synthetic_scale.py records the figures)."""
    import resource
    import time

    began = time.perf_counter()
    summary = ingest_synthetic(SyntheticConfig(customers=1_000_000), tmp_path)
    assert summary["tables"]["customers"]["rows_total"] == 1_000_000
    assert time.perf_counter() - began < 600
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 2**20  # KiB: under 4 GiB
    assert np.isfinite(summary["rows_read"])


def test_sessions_announce_the_order_they_lead_to(world):
    """Planted and saved: every add-to-cart is of an item of the order placed a minute later, every view of an item
    of the category of a line of the order placed within the half hour."""
    home, _, tables, _ = world
    browsing = pd.read_parquet(Home(home).ground_truth / "browsing.parquet")
    assert len(browsing) == len(tables["events"])
    ahead = (browsing["order_timestamp"] - browsing["timestamp"]).dt.total_seconds() / 60
    assert ((ahead >= 1) & (ahead < 30)).all()
    lines = tables["transactions"].query("quantity > 0")[["order_id", "item_id"]].drop_duplicates()
    carts = browsing[browsing["event_type"] == "add_to_cart"].merge(lines.assign(bought=True), how="left")
    assert carts["bought"].notna().all() and (ahead[browsing["event_type"] == "add_to_cart"] == 1).all()
    category = tables["items"].set_index("item_id")["category"]
    views = browsing[browsing["event_type"] == "view"].assign(category=lambda v: v["item_id"].map(category))
    ordered = lines.assign(category=lines["item_id"].map(category))[["order_id", "category"]].drop_duplicates()
    assert views.merge(ordered.assign(same=True), how="left")["same"].notna().all()


@pytest.fixture(scope="module")
def campaigned(tmp_path_factory):
    home = tmp_path_factory.mktemp("campaigned")
    ingest_synthetic(SyntheticConfig(customers=20_000, days=365, seed=1, campaigns=4), home)
    return home


def test_past_campaigns_start_the_contact_history_with_random_control_groups(campaigned):
    from loyal.contacts import contact_history

    history = contact_history(campaigned)
    assert sorted(history["campaign"].unique()) == [f"synthetic-{k}" for k in range(1, 5)]
    days = history.groupby("campaign")["contacted_on"].agg(["min", "max"])
    assert (days["min"] == days["max"]).all() and days["min"].diff().dropna().min() >= pd.Timedelta(days=30)
    customers = read_table(campaigned, "customers").set_index("customer_id")
    assert customers.loc[history["customer_id"], "email_opt_in"].all()  # only those who consented
    share = (history["group"] == "control").groupby(history["campaign"]).mean()
    assert share.between(0.45, 0.55).all()
    assert set(history["incentive"]) == {"percent_off", "free_shipping", "points_multiplier"}
    truth = pd.read_parquet(Home(campaigned).ground_truth / "campaign_effects.parquet")
    assert len(truth) == len(history) and set(truth["uplift_type"]) == {
        "persuadable", "sure_thing", "lost_cause", "put_off"}
    at_end = pd.read_parquet(Home(campaigned).ground_truth / "effects_at_end.parquet")
    assert len(at_end) == 20_000


def test_the_planted_effects_show_between_treatment_and_control(campaigned):
    """Over the four campaigns, the revenue each group brings in the 30 days after: treatment - control is
    positive for the persuadable, negative for those put off, nothing for lost causes, near the planted truth."""
    from loyal.contacts import contact_history

    history = contact_history(campaigned)
    truth = pd.read_parquet(Home(campaigned).ground_truth / "campaign_effects.parquet")
    sales = read_table(campaigned, "transactions").query("quantity > 0")
    outcome = []
    for name, listed in history.groupby("campaign"):
        start = pd.Timestamp(listed["contacted_on"].iloc[0]).tz_localize("UTC")
        window = sales[(sales["timestamp"] >= start) & (sales["timestamp"] < start + pd.Timedelta(days=30))]
        revenue = (window["quantity"] * window["unit_price"]).groupby(window["customer_id"]).sum()
        outcome.append(listed.assign(revenue=listed["customer_id"].map(revenue).fillna(0.0).to_numpy()))
    rows = pd.concat(outcome).merge(truth, on=["campaign", "customer_id", "group", "incentive"])
    rows["true"] = [row[f"true_incremental_revenue_{row['incentive']}"] for _, row in rows.iterrows()]
    by = rows.groupby(["uplift_type", "group"])["revenue"].agg(["mean", "var", "size"]).unstack()
    effect = by["mean"]["treatment"] - by["mean"]["control"]
    error = 1.96 * np.sqrt(by["var"]["treatment"] / by["size"]["treatment"]
                           + by["var"]["control"] / by["size"]["control"])
    planted = rows[rows["group"] == "treatment"].groupby("uplift_type")["true"].mean()
    assert effect["persuadable"] - error["persuadable"] > 0 and effect["put_off"] + error["put_off"] < 0
    assert effect["lost_cause"] == 0 and (planted["lost_cause"] == 0) and planted["sure_thing"] == 0
    for kind in ("persuadable", "put_off"):  # the truth lies within the measured interval
        assert abs(effect[kind] - planted[kind]) < error[kind], kind


def test_too_many_campaigns_for_the_days_is_one_line(tmp_path):
    from loyal.errors import LoyalError

    with pytest.raises(LoyalError, match="leave room for"):
        ingest_synthetic(SyntheticConfig(customers=100, days=365, seed=1, campaigns=9), tmp_path)
    assert not (tmp_path / "canonical").exists()
