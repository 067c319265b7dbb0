"""The feature store: hand-computed features, point-in-time correctness, the online store (SQLite and a real
Redis), freshness warnings, lineage and the `loyal features` commands."""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loyal.app.cli import app
from loyal.errors import LoyalError
from loyal.features import compute, definitions
from loyal.features.online import OnlineReader, StaleFeaturesWarning
from loyal.features.repo import BuildConfig, build, historical_features, lineage, materialize, online_store_config
from loyal.features.repo import offline_file, open_store, show
from loyal.ingest import ingest_file, ingest_synthetic
from loyal.store import read_table
from loyal.synthetic import SyntheticConfig

from conftest import write

TRANSACTIONS = """
customer_id,item_id,timestamp,quantity,unit_price,order_id,channel
A,X,2024-01-01 10:00,2,5.0,o1,web
A,Y,2024-01-01 10:00,1,3.5,o1,web
A,X,2024-01-20 09:00,1,5.0,o2,app
A,Y,2024-01-25 12:00,-1,3.5,r1,web
A,Z,2024-03-01 08:00,4,2.25,o3,store
B,X,2024-01-10 15:00,1,5.0,p1,web
"""
EVENTS = """
customer_id,item_id,timestamp,event_type,channel
A,X,2024-02-25 11:00,view,web
A,X,2024-02-25 11:05,view,web
A,X,2024-02-26 18:00,add_to_cart,web
A,Z,2024-03-01 07:00,add_to_cart,web
"""
CUSTOMERS = """
customer_id,country,signup_date,email_opt_in,loyalty_tier
A,DE,2023-12-15,true,gold
"""


def _at(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


@pytest.fixture
def small(tmp_path, home):
    """The six transactions above, ingested and built with daily snapshots."""
    folder = tmp_path / "export"
    folder.mkdir()
    write(folder / "transactions.csv", TRANSACTIONS)
    write(folder / "events.csv", EVENTS)
    write(folder / "customers.csv", CUSTOMERS)
    ingest_file("canonical", folder, home)
    build(home)
    return home


def _historical(home, pairs, service=None) -> pd.DataFrame:
    entities = pd.DataFrame(pairs, columns=["customer_id", "event_timestamp"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StaleFeaturesWarning)
        return historical_features(home, entities, service)


def test_customer_features_match_hand_computed_values(small):
    a_2nd, a_1st, b_2nd = _historical(
        small, [("A", _at("2024-03-02")), ("A", _at("2024-03-01")), ("B", _at("2024-03-02"))]
    ).to_dict("records")
    # A at 2024-03-02: the last purchase was 16 h earlier, the first 60 days 14 h earlier.
    expected = {
        "recency_days": 0, "tenure_days": 60,
        "orders_30d": 1, "orders_90d": 3, "orders_365d": 3, "orders_total": 3,
        "spend_30d": 9.0, "spend_90d": 27.5, "spend_365d": 27.5, "spend_total": 27.5,
        "returns_365d": 3.5,
        "avg_order_value_365d": pytest.approx(27.5 / 3),
        # (2024-03-01 08:00 - 2024-01-01 10:00) = 59 days 22 h, over two gaps
        "mean_days_between_orders": pytest.approx((59 + 22 / 24) / 2),
        # purchase days 01-01, 01-20 and 03-01: gaps of 19 and 41 days, 11 either side of their mean
        "purchase_days_total": 3, "purchase_days_180d": 3, "gap_std_days": pytest.approx(11.0),
        "lines_per_order_365d": pytest.approx(4 / 3),  # X and Y, X, Z
        "typical_quantity_per_line_365d": pytest.approx(np.expm1(np.log1p([2, 1, 1, 4]).mean()), rel=1e-4),
        "typical_unit_price_365d": pytest.approx(np.expm1(np.log1p([5.0, 3.5, 5.0, 2.25]).mean()), rel=1e-4),
        "spend_trend": 1.0,
        "web_share_365d": pytest.approx(1 / 3), "app_share_365d": pytest.approx(1 / 3),
        "store_share_365d": pytest.approx(1 / 3),
        "views_30d": 2, "add_to_carts_30d": 2, "cart_conversion_30d": 0.5,  # Z was bought the day it was carted
        "country": "DE", "loyalty_tier": "gold", "email_opt_in": True,
    }
    assert {k: a_2nd[k] for k in expected} == expected
    # A day earlier the 2024-03-01 order and cart do not exist yet.
    assert (a_1st["recency_days"], a_1st["orders_30d"], a_1st["spend_30d"]) == (40, 0, 0.0)
    assert (a_1st["add_to_carts_30d"], a_1st["cart_conversion_30d"]) == (1, 0.0)
    assert (b_2nd["recency_days"], b_2nd["orders_total"], b_2nd["web_share_365d"]) == (51, 1, 1.0)
    assert b_2nd["purchase_days_total"] == 1 and pd.isna(b_2nd["gap_std_days"])  # no gap yet
    assert pd.isna(b_2nd["country"]) and pd.isna(b_2nd["email_opt_in"])  # no profile: consent unknown


def test_item_statistics_match_hand_computed_values(small):
    entities = pd.DataFrame({"customer_id": "A", "item_id": ["X", "Z", "Y"], "event_timestamp": _at("2024-03-02")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StaleFeaturesWarning)
        x, z, y = historical_features(small, entities, "offers_v1").to_dict("records")
    # X: A bought it on two days, B on one, all in January; none in the last 30 days, two lines in the 30 before.
    assert (x["item_buyers_7d"], x["item_buyers_30d"], x["item_buyers_90d"], x["item_buyers_365d"]) == (0, 0, 2, 2)
    assert (x["item_repeat_rate_365d"], x["item_revenue_365d"], x["item_avg_price_365d"]) == (0.5, 20.0, 5.0)
    assert x["item_trend_30d"] == -1.0
    assert (z["item_buyers_7d"], z["item_revenue_30d"], z["item_avg_price_365d"], z["item_trend_30d"]) == (
        1, 9.0, 2.25, 1.0)
    assert (y["item_buyers_90d"], y["item_revenue_365d"]) == (1, 3.5)  # the return does not unbuy it
    assert x["recency_days"] == 0 and x["loyalty_tier"] == "gold"  # offers_v1 rows carry the customer's features


def test_no_row_before_the_first_purchase_and_rows_keep_their_order(small):
    frame = _historical(
        small,
        [("B", _at("2024-01-10 23:00")), ("nobody", _at("2024-02-01")), ("B", _at("2024-01-11")),
         ("A", _at("2023-06-01"))],
    )
    assert list(frame["customer_id"]) == ["B", "nobody", "B", "A"]
    # B bought at 15:00 on 2024-01-10: the snapshot that first sees it is 2024-01-11.
    assert frame["recency_days"].isna().tolist() == [True, True, False, True]
    assert frame.loc[2, "recency_days"] == 0


def test_later_transactions_leave_the_features_at_t_unchanged(small, tmp_path):
    pairs = [(c, _at(day)) for c in ("A", "B") for day in ("2024-01-15", "2024-02-20", "2024-03-02")]
    before = _historical(small, pairs)
    later = tmp_path / "later.csv"
    write(later, """
customer_id,item_id,timestamp,quantity,unit_price,order_id,channel
A,X,2024-03-02 00:00,7,5.0,o9,web
B,Y,2024-03-05 10:00,3,3.5,p9,app
B,X,2024-03-01 23:59:59,1,5.0,p8,web
""")
    ingest_file("canonical", later, small)
    build(small)
    after = _historical(small, pairs)
    # B's 23:59:59 purchase is before T = 2024-03-02 and must show; nothing at or after T may.
    changed = after.compare(before)
    assert list(changed.index) == [5]
    assert after.loc[5, "recency_days"] == 0 and before.loc[5, "recency_days"] == 51
    pd.testing.assert_frame_equal(after.drop(index=5), before.drop(index=5))


COLUMNS_CHECKED = ("recency_days", "orders_90d", "spend_90d", "purchase_days_180d", "gap_std_days",
                   "lines_per_order_365d")


def _independent(transactions: pd.DataFrame, customer: str, t: pd.Timestamp) -> tuple:
    """COLUMNS_CHECKED straight from their definitions, one (customer, T) at a time; None where there is no row."""
    bought = transactions[(transactions.customer_id == customer) & (transactions.timestamp < t)
                          & (transactions.quantity > 0)]
    if bought.empty:
        return (None,) * len(COLUMNS_CHECKED)
    window = bought[bought.timestamp >= t - pd.Timedelta(days=90)]
    year = bought[bought.timestamp >= t - pd.Timedelta(days=365)]
    days = pd.Series(bought.timestamp.dt.floor("D").unique()).sort_values()
    gaps = days.diff().dropna().dt.days
    return (
        int((t - bought.timestamp.max()) // pd.Timedelta(days=1)),
        window.order_id.nunique(),
        round(float((window.quantity * window.unit_price).sum()), 4),
        int((days >= t.floor("D") - pd.Timedelta(days=180)).sum()),
        round(float(gaps.std(ddof=0)), 6) if len(gaps) else None,
        round(len(year) / year.order_id.nunique(), 6) if len(year) else 0.0,
    )


def _check_random_pairs(home, pairs: int, seed: int) -> int:
    transactions = read_table(home, "transactions")
    rng = np.random.default_rng(seed)
    days = pd.date_range(transactions.timestamp.min().floor("D"), transactions.timestamp.max().ceil("D"), tz="UTC")
    entities = list(zip(rng.choice(transactions.customer_id.unique(), pairs), rng.choice(days, pairs)))
    frame = _historical(home, entities)
    checked = 0
    for row in frame.to_dict("records"):
        expected = _independent(transactions, row["customer_id"], row["event_timestamp"])
        got = tuple(None if pd.isna(row[name]) else row[name] for name in COLUMNS_CHECKED)
        got = tuple(round(float(v), 6) if isinstance(v, float) else v for v in got)
        assert got == expected, (row["customer_id"], row["event_timestamp"])
        checked += expected[0] is not None
    return checked


def test_independent_recomputation_on_synthetic_data(home):
    ingest_synthetic(SyntheticConfig(customers=300, days=150, seed=3), home)
    build(home)
    assert _check_random_pairs(home, pairs=150, seed=0) > 50


@pytest.mark.integration
def test_independent_recomputation_on_the_real_data(real_data, home):
    """Random (customer, date) pairs of the UCI file: the historical features equal the definition exactly."""
    ingest_file("online-retail", real_data, home)
    record = build(home)
    assert record["snapshots"]["count"] == 374 and record["snapshots"]["every_days"] == 1
    assert _check_random_pairs(home, pairs=250, seed=1) > 100


def test_sparse_snapshots_hold_the_same_values_as_daily_ones(home):
    """Weekly (or any) snapshots sum over fewer, wider spans; the values at their dates must not change."""
    ingest_synthetic(SyntheticConfig(customers=200, days=200, seed=5), home)
    build(home)
    daily = {view: pd.read_parquet(offline_file(home, view)) for view in ("customer_behaviour", "item_statistics")}
    record = build(home, BuildConfig(start=datetime(2024, 3, 1).date(), every=9))
    count = record["snapshots"]["count"]
    assert count == (pd.Timestamp(record["snapshots"]["end"]) - _at("2024-03-01")).days // 9 + 1
    for view, key in (("customer_behaviour", "customer_id"), ("item_statistics", "item_id")):
        sparse = pd.read_parquet(offline_file(home, view))
        assert sparse["event_timestamp"].nunique() == count and len(sparse) > 100
        same_dates = daily[view].merge(sparse[[key, "event_timestamp"]], on=[key, "event_timestamp"])
        pd.testing.assert_frame_equal(
            same_dates.sort_values([key, "event_timestamp"]).reset_index(drop=True),
            sparse.sort_values([key, "event_timestamp"]).reset_index(drop=True),
        )


def test_build_records_the_data_range_it_covers(small):
    (record,) = lineage(small)
    assert record["data"]["transactions"] == {
        "rows": 6, "first": "2024-01-01T10:00:00+00:00", "last": "2024-03-01T08:00:00+00:00"}
    assert record["snapshots"]["start"].startswith("2024-01-02") and record["snapshots"]["end"].startswith("2024-03-02")
    assert record["rows"]["customer_profile"] == 1
    build(small, BuildConfig(every=7))
    assert [r["snapshots"]["every_days"] for r in lineage(small)] == [1, 7]


def test_snapshots_always_include_the_end_date():
    dates = compute.Snapshots(_at("2024-01-01"), _at("2024-01-20"), every=7).dates()
    assert list(dates.strftime("%m-%d")) == ["01-06", "01-13", "01-20"]


def test_reading_past_the_last_snapshot_warns_naming_the_view(small):
    entities = pd.DataFrame({"customer_id": ["A", "A"], "event_timestamp": [_at("2024-03-02"), _at("2024-06-01")]})
    with pytest.warns(StaleFeaturesWarning, match="feature view customer_behaviour: 1 of 2 rows"):
        frame = historical_features(small, entities)
    assert frame.loc[1, "recency_days"] == 0  # the latest snapshot still answers, with the warning


def test_historical_rejects_bad_entity_rows(small):
    with pytest.raises(LoyalError, match="lack the column"):
        historical_features(small, pd.DataFrame({"customer_id": ["A"]}))
    with pytest.raises(LoyalError, match="not a time"):
        historical_features(small, pd.DataFrame({"customer_id": ["A"], "event_timestamp": ["soon"]}))
    with pytest.raises(LoyalError, match="item_id"):
        historical_features(small, pd.DataFrame({"customer_id": ["A"], "event_timestamp": ["2024-03-02"]}), "offers_v1")
    with pytest.raises(LoyalError, match="unknown feature service"):
        historical_features(small, pd.DataFrame({"customer_id": ["A"], "event_timestamp": ["2024-03-02"]}), "nope")


def test_every_view_schema_is_the_computed_catalogue():
    catalogues = {
        "customer_behaviour": compute.CUSTOMER_BEHAVIOUR,
        "customer_profile": compute.CUSTOMER_PROFILE,
        "item_statistics": compute.ITEM_STATISTICS,
    }
    for view in definitions.VIEWS:
        assert [f.name for f in view.features] == list(catalogues[view.name])
    assert {s.name for s in definitions.SERVICES} == {"churn_v1", "offers_v1"}


def test_online_store_setting():
    assert online_store_config(None)["type"] == "sqlite"
    assert online_store_config("redis://cache:6380/2") == {"type": "redis", "connection_string": "cache:6380,db=2"}
    with pytest.raises(LoyalError, match="LOYAL_ONLINE_STORE"):
        online_store_config("memcached://x")


def test_feature_commands_need_a_build_first(home):
    with pytest.raises(LoyalError, match="run `loyal features build` first"):
        materialize(home)
    with pytest.raises(LoyalError, match="run `loyal ingest` first"):
        build(home)


# ---------------------------------------------------------------------------------------- the online store


def _latest_offline(home, customer: str) -> dict:
    rows = pd.read_parquet(offline_file(home, "customer_behaviour"))
    return rows[rows.customer_id == customer].sort_values("event_timestamp").iloc[-1].to_dict()


def test_online_store_answers_the_latest_values(small, online_store, tmp_path):
    summary = materialize(small)
    assert summary["online_store"] == online_store
    assert {v["mode"] for v in summary["views"].values()} == {"full"}
    store = open_store(small)
    reader = OnlineReader(store, "churn_v1")
    values, as_of = reader.read({"customer_id": "A"})
    latest = _latest_offline(small, "A")
    assert as_of["customer_behaviour"] == latest["event_timestamp"].to_pydatetime()
    for name in compute.CUSTOMER_BEHAVIOUR:
        assert values[name] == pytest.approx(latest[name], nan_ok=True), name
    assert values["country"] == "DE"
    # The fast reader and Feast's own get_online_features give the same answer.
    service = store.get_feature_service("offers_v1")
    row = {"customer_id": "A", "item_id": "X"}
    feast_answer = store.get_online_features(features=service, entity_rows=[row]).to_dict()
    fast_answer, _ = OnlineReader(store, "offers_v1").read(row)
    assert {k: v[0] for k, v in feast_answer.items() if k not in row} == pytest.approx(fast_answer, nan_ok=True)
    assert reader.read({"customer_id": "stranger"})[0]["recency_days"] is None
    # Many customers at once (the service's /churn) read the same values, strangers included.
    columns, known = reader.read_many("customer_id", ["A", "stranger", "B"])
    assert known == [True, False, True]
    singles = [reader.read({"customer_id": c})[0] for c in ("A", "stranger", "B")]
    assert columns == {name: [single[name] for single in singles] for name in singles[0]}

    # New data: B buys again. Build and materialize again: incremental, and B's latest values arrive.
    later = tmp_path / "later.csv"
    write(later, """
customer_id,item_id,timestamp,quantity,unit_price,order_id,channel
B,Z,2024-03-10 09:00,2,2.25,p2,web
""")
    ingest_file("canonical", later, small)
    build(small)
    summary = materialize(small)
    assert summary["views"]["customer_behaviour"]["mode"] == "incremental"
    assert summary["views"]["customer_behaviour"]["from"].startswith("2024-03-02")
    values, as_of = OnlineReader(open_store(small), "churn_v1").read({"customer_id": "B"})
    assert as_of["customer_behaviour"] == datetime(2024, 3, 11, tzinfo=timezone.utc)
    assert (values["recency_days"], values["orders_total"], values["spend_total"]) == (0, 2, 9.5)


def test_show_prints_one_customer_and_warns_when_stale(small, online_store):
    materialize(small)
    with pytest.warns(StaleFeaturesWarning, match="feature view customer_behaviour"):
        shown = show(small, "A", now=datetime(2024, 6, 1, tzinfo=timezone.utc))
    assert shown["customer_behaviour"]["as_of"] == "2024-03-02T00:00:00+00:00"
    assert shown["customer_behaviour"]["spend_total"] == 27.5
    assert shown["customer_profile"]["loyalty_tier"] == "gold"
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleFeaturesWarning)
        show(small, "A", now=datetime(2024, 3, 2, 12, tzinfo=timezone.utc))  # fresh: no warning
    with pytest.raises(LoyalError, match="not in the online store"):
        show(small, "stranger")


def test_erasing_a_customer_from_the_online_store_leaves_the_others(small, online_store):
    from loyal.features.online import erase

    materialize(small)
    store = open_store(small)
    reader = OnlineReader(store)
    before, known = reader.read_many("customer_id", ["A", "B"])
    assert known == [True, True]
    assert erase(store, "customer_id", ["A", "stranger"]) > 0
    after, known = reader.read_many("customer_id", ["A", "B"])
    assert known == [False, True]
    assert all(values[0] is None for values in after.values())
    assert {name: values[1] for name, values in after.items()} == {name: values[1] for name, values in before.items()}


# ------------------------------------------------------------------------------------------- the commands


def test_feature_commands_end_to_end(small, tmp_path):
    runner = CliRunner()
    built = runner.invoke(app, ["features", "build", "--every", "1"])
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["feature_services"] == ["churn_v1", "offers_v1"]
    done = runner.invoke(app, ["features", "materialize"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["online_store"] == "sqlite"

    entities = write(tmp_path / "entities.csv", "customer_id,event_timestamp\nA,2024-03-02\nB,2024-02-01T12:00:00Z\n")
    output = tmp_path / "out" / "training.parquet"
    result = runner.invoke(app, ["features", "historical", "--entities", str(entities), "--output", str(output)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(output)
    assert list(frame.columns[:3]) == ["customer_id", "event_timestamp", "recency_days"]
    assert set(compute.CUSTOMER_BEHAVIOUR) <= set(frame.columns)
    assert frame["spend_90d"].tolist() == [27.5, 5.0]

    shown = runner.invoke(app, ["features", "show", "A"])
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["customer_behaviour"]["orders_total"] == 3
    assert "loyal: warning: feature view customer_behaviour" in shown.stderr  # 2024 data read today


def test_bad_entity_file_is_one_line_and_writes_nothing(small, tmp_path):
    runner = CliRunner()
    output = tmp_path / "out.csv"
    cases = [
        write(tmp_path / "no_time.csv", "customer_id\nA\n"),
        write(tmp_path / "bad_time.csv", "customer_id,event_timestamp\nA,yesterday-ish\n"),
        tmp_path / "absent.csv",
    ]
    for entities in cases:
        result = runner.invoke(app, ["features", "historical", "--entities", str(entities), "--output", str(output)])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("loyal: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.output
        assert not output.exists()
    unknown = runner.invoke(app, ["features", "show", "stranger"])
    assert unknown.exit_code == 2 and "not in the online store" in unknown.stderr
