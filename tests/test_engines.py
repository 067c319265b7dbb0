"""One feature definition, two engines: every feature (and the customer state) of every (entity, snapshot) is the
same on DuckDB and on a real local Spark, on a sample of the real data and on a synthetic shop with browsing and
profiles. Exact for counts and money, 1e-9 relative for ratios. The whole real year is compared by
benchmarks/engines.py."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest

from loyal.errors import LoyalError
from loyal.features import engines
from loyal.features.compute import Snapshots
from loyal.features.online import StaleFeaturesWarning
from loyal.features.repo import BuildConfig, build, historical_features, materialize, offline_file, open_store
from loyal.ingest import ingest_file, ingest_synthetic
from loyal.schema import CUSTOMERS, EVENTS, TRANSACTIONS
from loyal.store import read_table, table_path
from loyal.synthetic import SyntheticConfig

pytestmark = pytest.mark.integration  # starts a JVM

VIEWS = {"customer_behaviour": "customer_id", "item_statistics": "item_id", "customer_profile": "customer_id"}
STATE = {"purchase_history": ["customer_id", "timestamp", "item_id", "order_id", "quantity"],
         "session": ["customer_id", "timestamp", "item_id", "event_type"]}


@pytest.fixture(scope="module")
def spark():
    return engines.spark_session()


@pytest.fixture
def real_sample(real_data, tmp_path, home):
    """Every row of one customer in 25 of the UCI file (and of no customer: guests), its whole year."""
    with gzip.open(real_data, "rt", encoding="utf-8") as source:
        frame = pd.read_csv(source, dtype=str)
    customer = pd.to_numeric(frame["CustomerID"], errors="coerce")
    sample = frame[(customer % 25 == 0) | customer.isna() & (frame.index % 25 == 0)]
    path = tmp_path / "sample.csv.gz"
    sample.to_csv(path, index=False)
    ingest_file("online-retail", path, home)
    return home


@pytest.fixture
def synthetic_shop(home):
    ingest_synthetic(SyntheticConfig(customers=300, days=240, seed=11), home)
    return home


def _run(home, engine_name: str, tmp_path, every: int = 1) -> dict[str, pd.DataFrame]:
    """Every definition of features.sql run by one engine over the home's canonical tables."""
    tables = {table.name: table_path(home, table) for table in (TRANSACTIONS, EVENTS, CUSTOMERS)}
    times = pd.read_parquet(tables["transactions"], columns=["timestamp"])["timestamp"]
    snapshots = Snapshots.covering(times.min(), times.max(), every).dates()
    runner = engines.engine(engine_name, tmp_path / engine_name)
    runner.tables(tables, engines.snapshot_table(snapshots))
    frames = {}
    for name in (*VIEWS, *STATE):
        path = tmp_path / f"{engine_name}-{name}.parquet"
        runner.write(name, path)
        frames[name] = pd.read_parquet(path)
    runner.close()
    return frames


def _assert_same(name: str, embedded: pd.DataFrame, spark: pd.DataFrame, keys: list[str]) -> None:
    assert list(embedded.columns) == list(spark.columns), name
    assert len(embedded) == len(spark) > 0, name
    embedded = embedded.sort_values(keys, kind="stable").reset_index(drop=True)
    spark = spark.sort_values(keys, kind="stable").reset_index(drop=True)
    for column in embedded.columns:
        a, b = embedded[column], spark[column]
        assert a.dtype == b.dtype, (name, column, a.dtype, b.dtype)
        if a.dtype.kind == "f":
            both_missing = a.isna().to_numpy() & b.isna().to_numpy()
            close = np.isclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=0)
            assert (both_missing | close).all(), (name, column, a[~(both_missing | close)].head())
        else:
            pd.testing.assert_series_equal(a, b, check_names=False, obj=f"{name}.{column}")


def _assert_engines_agree(home, tmp_path, every: int = 1) -> dict[str, pd.DataFrame]:
    embedded = _run(home, "embedded", tmp_path, every)
    spark = _run(home, "spark", tmp_path, every)
    for name, key in VIEWS.items():
        _assert_same(name, embedded[name], spark[name], [key, "event_timestamp"])
    for name, keys in STATE.items():
        if name == "session" and table_path(home, EVENTS) is None:
            assert embedded[name].empty and spark[name].empty
            continue
        _assert_same(name, embedded[name], spark[name], keys)
    return embedded


def test_engines_agree_on_the_real_data(spark, real_sample, tmp_path):
    embedded = _assert_engines_agree(real_sample, tmp_path)
    behaviour = embedded["customer_behaviour"]
    assert behaviour["customer_id"].nunique() > 100 and behaviour["event_timestamp"].nunique() > 360
    # The in-process state is the same definition: engines.purchase_history equals the engine's rows.
    history = engines.purchase_history(read_table(real_sample, "transactions"))
    pd.testing.assert_frame_equal(history.reset_index(drop=True),
                                  embedded["purchase_history"].astype({"customer_id": object, "item_id": object,
                                                                       "order_id": object}))


def test_engines_agree_on_a_shop_with_browsing_and_profiles(spark, synthetic_shop, tmp_path):
    embedded = _assert_engines_agree(synthetic_shop, tmp_path, every=3)
    assert embedded["customer_behaviour"]["views_30d"].sum() > 0
    assert embedded["customer_profile"]["email_opt_in"].notna().any()


def test_feast_on_spark_reads_and_materializes_what_the_embedded_store_does(spark, synthetic_shop, redis_url,
                                                                          monkeypatch):
    """`loyal features build --engine spark` writes the same offline data; Feast's Spark offline store joins the
    same training rows from it, point in time, and Feast's Spark compute engine writes the same values into a real
    Redis."""
    import redis

    monkeypatch.setenv("LOYAL_ONLINE_STORE", redis_url)
    transactions = read_table(synthetic_shop, "transactions")
    customers = sorted(transactions["customer_id"].unique())[:60]
    times = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(np.arange(len(customers)) * 29, unit="h")
    rows = pd.DataFrame({"customer_id": customers, "event_timestamp": times})
    found = {}
    for engine in engines.ENGINES:
        redis.Redis.from_url(redis_url).flushall()
        record = build(synthetic_shop, BuildConfig(every=7, engine=engine))
        assert record["engine"] == engine
        offline = {view: pd.read_parquet(offline_file(synthetic_shop, view)) for view in VIEWS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StaleFeaturesWarning)
            training = historical_features(synthetic_shop, rows, "churn_v1")
        materialize(synthetic_shop, full=True)  # the store was emptied: every view from its first row
        store = open_store(synthetic_shop)
        online = store.get_online_features(features=store.get_feature_service("churn_v1"),
                                           entity_rows=[{"customer_id": c} for c in customers]).to_df()
        found[engine] = (offline, training, online)
    (embedded_offline, embedded_training, embedded_online), (spark_offline, spark_training, spark_online) = (
        found["embedded"], found["spark"])
    assert open_store(synthetic_shop).config.offline_store.type == "spark"
    assert open_store(synthetic_shop).config.batch_engine.type == "spark.engine"
    for view, key in VIEWS.items():
        _assert_same(view, embedded_offline[view], spark_offline[view], [key, "event_timestamp"])
    assert embedded_training["recency_days"].notna().sum() > 30
    _assert_same("training rows", embedded_training, spark_training, ["customer_id", "event_timestamp"])
    assert embedded_online["orders_total"].notna().all()
    _assert_same("online", embedded_online, spark_online, ["customer_id"])


def test_an_unknown_engine_is_refused_before_anything_is_written(synthetic_shop):
    with pytest.raises(LoyalError, match="unknown engine 'flink'"):
        build(synthetic_shop, BuildConfig(engine="flink"))
