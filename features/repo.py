"""The feature store's life cycle: build (compute, write the offline data, apply the repo), materialize into the
online store, and read features back, point in time (training) or latest (serving).

The live Feast repo is $LOYAL_HOME/feast: `feature_store.yaml` (from the template beside this module, with the
online store chosen by LOYAL_ONLINE_STORE), the registry, the SQLite online store, the offline parquet files and
`lineage.jsonl`, one line per build saying what data it covers.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml
from feast import FeatureStore
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.repo_config import RepoConfig

from loyal.dates import midnight
from loyal.errors import LoyalError
from loyal.features import compute, definitions, engines
from loyal.features.compute import EVENT_TIMESTAMP, Snapshots
from loyal.features.online import OnlineReader, StaleFeaturesWarning
from loyal.features.state import CustomerState, unfolded_events
from loyal.home import ONLINE_STORE_ENV, Home
from loyal.locking import writing
from loyal.noise import silence_third_parties
from loyal.schema import CUSTOMER_ID, CUSTOMERS, EVENTS, ITEM_ID, TIMESTAMP, TRANSACTIONS
from loyal.store import read_table, table_path, without_customers

TEMPLATE = Path(__file__).with_name("feature_store.yaml")
SPARK_OFFLINE_STORE = "feast.infra.offline_stores.contrib.spark_offline_store.spark"
LINEAGE = "lineage.jsonl"
_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}


@dataclass(frozen=True)
class BuildConfig:
    start: date | None = None  # first snapshot; default: the day after the first event
    end: date | None = None  # last snapshot; default: the day after the last event (sees all the data)
    every: int = 1  # days between snapshots
    engine: str = "embedded"  # what runs the feature definitions: embedded (DuckDB) or spark (engines.py)


def online_store_config(setting: str | None) -> dict:
    """The `online_store` block for a LOYAL_ONLINE_STORE value (with its password, if the URL has one)."""
    if not setting or setting == "sqlite":
        return yaml.safe_load(TEMPLATE.read_text())["online_store"]
    url = urlparse(setting)
    if url.scheme != "redis" or not url.hostname:
        raise LoyalError(f"{ONLINE_STORE_ENV} is not understood: use sqlite or redis://[:PASSWORD@]HOST:PORT[/DB]")
    parts = [f"{url.hostname}:{url.port or 6379}"]
    if url.path.strip("/"):
        parts.append(f"db={url.path.strip('/')}")
    if url.password:
        parts.append(f"password={url.password}")
    return {"type": "redis", "connection_string": ",".join(parts)}


def _repo_config(home: Path, engine: str | None = None) -> dict:
    """The live repo's configuration: the template with the online store the environment asks for, and, for the
    builds Spark wrote (`engine`, default: the latest build's), Feast's Spark offline store (training sets) and its
    Spark compute engine (materialization), configured as https://docs.feast.dev/reference/offline-stores/spark
    and https://docs.feast.dev/reference/compute-engine/spark describe."""
    config = yaml.safe_load(TEMPLATE.read_text())
    config["online_store"] = online_store_config(os.environ.get(ONLINE_STORE_ENV))
    if (engine or _latest_engine(home)) == "spark":
        config["offline_store"] = {"type": "spark", "spark_conf": engines.spark_conf()}
        writing = engines.spark_conf()
        if config["online_store"]["type"] == "sqlite":
            # SQLite takes one writer at a time, and Feast's engine writes from each partition of the deduplicated
            # rows (its `partitions` setting is not applied on that path): two at once, and the one kept waiting
            # past SQLite's 5 s gives up ("database is locked", seen at a million customers). One partition, one
            # writer. Redis takes them all at once.
            writing["spark.sql.shuffle.partitions"] = "1"
        config["batch_engine"] = {"type": "spark.engine", "spark_conf": writing, "partitions": 0}
    return config


def _latest_engine(home: Path) -> str:
    builds = lineage(home)
    return builds[-1].get("engine", "embedded") if builds else "embedded"


def write_repo_config(home: Path, engine: str | None = None) -> Path:
    """Write the live feature_store.yaml (by the writers, build and materialize), for the `feast` command line:
    the configuration Loyal opens the store with, except a secret. A Redis password stays in the environment (LOYAL_ONLINE_STORE), never on disk: the file
    names it `${LOYAL_REDIS_PASSWORD}`, which Feast reads from the environment."""
    config = _repo_config(home, engine)
    store = config["online_store"]
    if "password=" in store.get("connection_string", ""):
        parts = [p for p in store["connection_string"].split(",") if not p.startswith("password=")]
        store["connection_string"] = ",".join([*parts, "password=${LOYAL_REDIS_PASSWORD}"])
    folder = Home(home).feast
    folder.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False)
    path = folder / "feature_store.yaml"
    if not path.exists() or path.read_text() != text:
        tmp = folder / ".feature_store.yaml.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
    return folder


def open_store(home: Path, built: bool = True, engine: str | None = None):
    """The FeatureStore of the repo under `home`; `built`: it must have been built already. Its configuration is
    made in memory from the environment (a password is never read back from disk); a store whose home was moved
    or copied is first pointed at its own offline files."""
    if built and not (Home(home).feast / "registry.db").exists():
        raise LoyalError(f"no feature store under {home}: run `loyal features build` first")
    folder = Home(home).feast
    folder.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(**_repo_config(home, engine))
    if config.offline_store.type == "spark":
        # Feast's Spark offline store sets every RuntimeWarning to "once" when it is imported, in front of the
        # filters of third-party noise: import it now and put those back (loyal/noise.py).
        importlib.import_module(SPARK_OFFLINE_STORE)
        silence_third_parties()
    config.repo_path = folder
    with _feast_quiet():
        store = FeatureStore(repo_path=str(folder), config=config)
    if built:
        _follow_a_moved_home(home, store)
    return store


def _follow_a_moved_home(home: Path, store) -> None:
    """Feast's registry names each view's offline file by its absolute path (the DuckDB offline store reads a path
    as given, relative to the working directory). Where those paths lie outside this home, the home was moved or
    copied: the views are applied again, reading the same build's files under this home (under the write lock)."""
    offline = Home(home).feast / definitions.OFFLINE_DIR
    if all(Path(view.batch_source.path).is_relative_to(offline) for view in store.list_feature_views()):
        return
    with writing(home, "relocate"):
        store.refresh_registry()
        views = [view for view in store.list_feature_views()
                 if not Path(view.batch_source.path).is_relative_to(offline)]
        if views:
            with _feast_quiet():
                store.apply([_with_source_folder(view, offline / Path(view.batch_source.path).parent.name)
                             for view in views])


@contextlib.contextmanager
def _feast_quiet():
    """Feast prints progress to stdout; Loyal's stdout carries results, so send it to stderr."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", module="feast")
        yield


# ---------------------------------------------------------------------------------------------------- build


def build(home: Path, config: BuildConfig = BuildConfig()) -> dict:
    """Compute every feature at every snapshot date, write the offline data, record its lineage, apply the repo;
    under the home's write lock (which also clears the folder a killed build left)."""
    if config.every < 1:
        raise LoyalError(f"--every must be at least 1 day, not {config.every}")
    if config.engine not in engines.ENGINES:
        raise LoyalError(f"unknown engine {config.engine!r}: use one of {', '.join(engines.ENGINES)}")
    with writing(home, "features build"):
        return _build(home, config)


def _build(home: Path, config: BuildConfig) -> dict:
    path = table_path(home, TRANSACTIONS)
    if path is None:
        raise LoyalError(f"no transactions under {home}: run `loyal ingest` first")
    tables = {table.name: table_path(home, table) for table in (TRANSACTIONS, EVENTS, CUSTOMERS)}
    data = {name: _time_range(path) for name, path in tables.items() if path is not None and name != CUSTOMERS.name}
    if data["transactions"]["rows"] == 0:
        raise LoyalError(f"the transactions table under {home} is empty: nothing to compute features from")
    data = {name: bounds for name, bounds in data.items() if bounds["rows"]}
    first = min(pd.Timestamp(r["first"]) for r in data.values())
    last = max(pd.Timestamp(r["last"]) for r in data.values())
    snapshots = Snapshots.covering(first, last, config.every, _timestamp(config.start), _timestamp(config.end))
    if config.start and config.end and snapshots.start > pd.Timestamp(config.end, tz="UTC"):
        raise LoyalError(f"--start {config.start} is after --end {config.end}")

    # Each build writes a folder of its own, renamed into place when complete, and the views are re-applied to
    # point at it: a reader sees one whole build or the previous one, never a mix, and no cache of a file that a
    # later build replaced can answer for it.
    built_at = datetime.now(timezone.utc)
    build_id = f"{built_at:%Y%m%dT%H%M%S%fZ}"
    offline_root = Home(home).feast / definitions.OFFLINE_DIR
    staging = offline_root / f".{build_id}.partial"
    staging.mkdir(parents=True)
    try:
        runner = engines.engine(config.engine, staging / ".scratch")
        try:
            runner.tables(tables, engines.snapshot_table(snapshots.dates()))
            for view in definitions.VIEWS:
                runner.write(view.name, staging / f"{view.name}.parquet")
                _check_schema(staging / f"{view.name}.parquet", view)
        finally:
            runner.close()
        shutil.rmtree(staging / ".scratch", ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    offline = offline_root / build_id
    os.replace(staging, offline)

    record = {
        "build_id": build_id,
        "built_at": built_at.isoformat(timespec="seconds"),
        "data": data,
        "engine": config.engine,
        "snapshots": {
            "start": snapshots.start.isoformat(),
            "end": snapshots.end.isoformat(),
            "every_days": snapshots.every,
            "count": len(snapshots.dates()),
        },
        "rows": {view.name: ds.dataset(offline / f"{view.name}.parquet").count_rows() for view in definitions.VIEWS},
    }
    write_repo_config(home, config.engine)
    store = open_store(home, built=False, engine=config.engine)
    views = [_with_source_folder(view, offline, config.engine) for view in definitions.VIEWS]
    with _feast_quiet():
        store.apply([definitions.customer, definitions.item, *views, *definitions.SERVICES])
    # Recorded once applied: the lineage lists only builds the registry has pointed at.
    with open(Home(home).feast / LINEAGE, "a") as log:
        log.write(json.dumps(record) + "\n")
    _remove_old_builds(offline_root, keep={build_id, *(r["build_id"] for r in lineage(home)[-2:])})
    return record | {"feature_services": [s.name for s in definitions.SERVICES]}


def _with_source_folder(view, folder: Path, engine: str | None = None):
    """A copy of the view reading its data from this build's folder, by absolute path (the DuckDB offline store
    reads a path as given, relative to the working directory rather than the repo): a parquet file the embedded
    engine wrote, read by the DuckDB offline store, or a folder of parts Spark wrote, read by the Spark offline
    store (`engine`; default: as the view read before)."""
    path = str(folder / Path(view.batch_source.path).name)
    spark = engine == "spark" if engine else isinstance(view.batch_source, SparkSource)
    view = copy.copy(view)
    if spark:
        view.batch_source = SparkSource(name=view.batch_source.name, path=path, file_format="parquet",
                                        timestamp_field=EVENT_TIMESTAMP)
    else:
        view.batch_source = definitions.file_source(view.name, path)
    return view


def _remove_old_builds(offline_root: Path, keep: set[str]) -> None:
    """Keep the latest builds (a reader may still be on the previous one) and drop the rest."""
    for folder in offline_root.iterdir():
        if folder.is_dir() and folder.name not in keep and not folder.name.endswith(".partial"):
            shutil.rmtree(folder, ignore_errors=True)


def _timestamp(day: date | None) -> pd.Timestamp | None:
    return None if day is None else midnight(day)


def _check_schema(path: Path, view) -> None:
    """The engine wrote the view's columns, in its order, of the kinds Feast reads them as."""
    key = view.entities[0]
    catalogue = {"customer_behaviour": compute.CUSTOMER_BEHAVIOUR, "customer_profile": compute.CUSTOMER_PROFILE,
                 "item_statistics": compute.ITEM_STATISTICS}[view.name]
    expected = pa.schema([(CUSTOMER_ID if key == definitions.customer.name else ITEM_ID, pa.string()),
                          (EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC"))]
                         + [(name, _ARROW_TYPES[kind]) for name, kind in catalogue.items()])
    written = [(field.name, field.type) for field in ds.dataset(path).schema]  # nullability is the engine's business
    if written != [(field.name, field.type) for field in expected]:
        raise LoyalError(f"the engine wrote {view.name} as {written}, not as {expected}")


def _time_range(path: Path) -> dict:
    times = pq.read_table(path, columns=[TIMESTAMP])[TIMESTAMP]
    bounds = pc.min_max(times).as_py()
    if not len(times):
        return {"rows": 0}
    return {"rows": len(times), "first": bounds["min"].isoformat(), "last": bounds["max"].isoformat()}


def lineage(home: Path) -> list[dict]:
    """Every build's record, oldest first."""
    path = Home(home).feast / LINEAGE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def offline_file(home: Path, view: str) -> Path:
    """The latest build's offline data of one view."""
    return Home(home).feast / definitions.OFFLINE_DIR / latest_build(home)["build_id"] / f"{view}.parquet"


def latest_build(home: Path) -> dict:
    builds = lineage(home)
    if not builds:
        raise LoyalError(f"no feature store under {home}: run `loyal features build` first")
    return builds[-1]


# ---------------------------------------------------------------------------------------------- materialize


def materialize(home: Path, full: bool = False) -> dict:
    """Fill the online store with the latest values of the last build, under the home's write lock.

    A view materialized before is brought up to date from where it stopped (Feast's incremental
    materialization); a new view, or every view with `full`, from its earliest row.
    """
    with writing(home, "features materialize"):
        return _materialize(home, full)


def _materialize(home: Path, full: bool) -> dict:
    write_repo_config(home)
    store = open_store(home)
    build_record = latest_build(home)
    end = pd.Timestamp(build_record["snapshots"]["end"]).to_pydatetime() + pd.Timedelta(seconds=1)
    done = {}
    for view in store.list_feature_views():
        with _feast_quiet():
            if full or not view.materialization_intervals:
                start = _earliest(Path(view.batch_source.path))
                if start is None:  # a view with no rows (no customers file, say): nothing to write
                    done[view.name] = {"mode": "empty"}
                    continue
                store.materialize(start_date=start, end_date=end, feature_views=[view.name])
                mode = "full"
            else:
                start = max(interval[1] for interval in view.materialization_intervals)
                if start < end:
                    store.materialize_incremental(end_date=end, feature_views=[view.name])
                mode = "incremental"
        done[view.name] = {"mode": mode, "from": start.isoformat(), "to": end.isoformat()}
    online = store.config.online_store.type
    return {"online_store": online, "views": done, "customer_state": _write_state(home, store),
            "data_until": build_record["data"]["transactions"]["last"]}


def _write_state(home: Path, store) -> dict[str, int]:
    """Every customer's state as the canonical tables hold it, then the events not folded into them yet."""
    state = CustomerState(store)
    history = engines.purchase_history(read_table(home, "transactions"))
    session = engines.session(read_table(home, "events"))
    state.replace(history, session)
    later = unfolded_events(home)
    state.append(*later)
    return {"customers": int(history[CUSTOMER_ID].nunique()), "history_lines": len(history),
            "session_events": len(session), "events_not_yet_folded": sum(len(frame) for frame in later)}


def online_state(home: Path) -> CustomerState | None:
    """The customers' state in the online store; None before the first build (events wait in the log, and the
    first materialize writes them)."""
    if not (Home(home).feast / "registry.db").exists():
        return None
    return CustomerState(open_store(home))


def _earliest(path: Path) -> datetime | None:
    """The earliest snapshot in a view's offline file; None when it holds no rows."""
    column = pq.read_table(path, columns=[EVENT_TIMESTAMP])[EVENT_TIMESTAMP]
    return pc.min(column).as_py() if len(column) else None


# -------------------------------------------------------------------------------------------------- reading


def _service_or_views(store, service: str | None):
    if service is None:
        return [f"{view.name}:{field.name}" for view in definitions.CUSTOMER_VIEWS for field in view.features]
    return store.get_feature_service(definitions.require_service(service))


def _view_names(features) -> list[str]:
    if isinstance(features, list):
        return sorted({ref.split(":")[0] for ref in features})
    return [projection.name for projection in features.feature_view_projections]


def _join_keys(features) -> list[str]:
    """The entity columns the rows need for these features: customer_id, then item_id where items are read."""
    entities = {view.name: view.entities for view in definitions.VIEWS}
    needed = {entity for name in _view_names(features) for entity in entities[name]}
    return [e.join_key for e in (definitions.customer, definitions.item) if e.name in needed]


def historical_features(
    home: Path, entities: pd.DataFrame, service: str | None = None, features: list[str] | None = None
) -> pd.DataFrame:
    """The features of each (entity, event_timestamp) row, point in time: the latest snapshot at or before the
    time, which holds only what happened strictly before that snapshot. Rows keep their order; rows without
    features (a customer not yet seen) keep theirs as nulls.

    `service`: a FeatureService name (churn_v1, offers_v1); default: every customer view. `features`: explicit
    "view:feature" references instead.
    """
    store = open_store(home)
    features = features if features is not None else _service_or_views(store, service)
    keys = _join_keys(features)
    missing = [c for c in (*keys, EVENT_TIMESTAMP) if c not in entities.columns]
    if missing:
        raise LoyalError(f"the entity rows lack the column(s) {', '.join(missing)}")
    entity_df = entities[[*keys, EVENT_TIMESTAMP]].copy()
    for key in keys:
        if entity_df[key].isna().any():
            raise LoyalError(f"the entity rows have an empty {key}")
        entity_df[key] = entity_df[key].astype(str)
    try:
        entity_df[EVENT_TIMESTAMP] = pd.to_datetime(entity_df[EVENT_TIMESTAMP], utc=True, format="mixed")
    except (ValueError, TypeError) as error:
        raise LoyalError(f"event_timestamp holds a value that is not a time ({error})") from None
    if entity_df[EVENT_TIMESTAMP].isna().any():
        raise LoyalError("event_timestamp is empty in some entity rows")
    entity_df[EVENT_TIMESTAMP] = entity_df[EVENT_TIMESTAMP].astype("datetime64[us, UTC]")
    entity_df["_row"] = np.arange(len(entity_df))

    with _feast_quiet():
        joined = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    feature_columns = [c for c in joined.columns if c not in (*keys, EVENT_TIMESTAMP, "_row")]
    # Feast may reorder rows and drops those no snapshot matched; put every row back where it was.
    result = entity_df.merge(joined[["_row", *feature_columns]], on="_row", how="left").drop(columns="_row")
    catalogue = compute.CUSTOMER_BEHAVIOUR | compute.CUSTOMER_PROFILE | compute.ITEM_STATISTICS
    nullable = {"int": "Int64", "float": "float64", "str": "string", "bool": "boolean"}
    result = result.astype({c: nullable[catalogue[c]] for c in feature_columns if c in catalogue})
    _warn_if_stale_historical(home, store, _view_names(features), entity_df[EVENT_TIMESTAMP])
    return result


def features_by_entity(home: Path, service: str, at: pd.Timestamp, ids: dict[str, pd.Index]) -> dict[str, pd.DataFrame]:
    """A FeatureService's features at one time, read once per entity instead of once per (customer, item) row.

    `ids` maps a join key (customer_id, item_id) to the ids wanted. Returns, per join key, the features of the
    service's views on that entity, indexed by id in the order given (nulls where an id has no row). A ranker
    scoring a few hundred items for each of thousands of customers needs thousands of rows, not millions.
    """
    store = open_store(home)
    projections = store.get_feature_service(definitions.require_service(service)).feature_view_projections
    entities = {view.name: view.entities for view in definitions.VIEWS}
    join_key = {e.name: e.join_key for e in (definitions.customer, definitions.item)}
    frames = {}
    for key, wanted in ids.items():
        refs = [
            f"{p.name}:{field.name}"
            for p in projections
            if [join_key[e] for e in entities[p.name]] == [key]
            for field in p.features
        ]
        rows = pd.DataFrame({key: pd.Index(wanted).astype(str), EVENT_TIMESTAMP: pd.Timestamp(at)})
        frame = historical_features(home, rows, features=refs)
        frames[key] = frame.drop(columns=EVENT_TIMESTAMP).set_index(key)
    return frames


def _freshness(store, view_names: list[str]) -> dict[str, float]:
    freshness = {}
    for name in view_names:
        tag = store.get_feature_view(name).tags.get("freshness_days")
        if tag:
            freshness[name] = float(tag)
    return freshness


def _warn_if_stale_historical(home: Path, store, view_names: list[str], times: pd.Series) -> None:
    freshness = _freshness(store, view_names)
    if not freshness or times.empty:
        return
    snapshots = latest_build(home)["snapshots"]
    dates = Snapshots(
        pd.Timestamp(snapshots["start"]), pd.Timestamp(snapshots["end"]), snapshots["every_days"]
    ).dates()
    stamps = times.to_numpy(dtype="datetime64[us]")
    dates_us = dates.to_numpy(dtype="datetime64[us]")
    latest = np.searchsorted(dates_us, stamps, side="right") - 1
    age_days = np.where(latest >= 0, (stamps - dates_us[np.maximum(latest, 0)]) / np.timedelta64(1, "D"), np.inf)
    for name, days in freshness.items():
        stale = int((age_days > days).sum())
        if stale:
            warnings.warn(
                f"feature view {name}: {stale} of {len(stamps)} rows are read more than {days:g} days after the "
                f"nearest snapshot (snapshots run {snapshots['start'][:10]} to {snapshots['end'][:10]}); "
                "rebuild with `loyal features build` to cover those times",
                StaleFeaturesWarning,
                stacklevel=3,
            )


def show(home: Path, customer_id: str, now: datetime | None = None) -> dict:
    """What the online store holds for one customer, view by view, with the time each view's values are as of.

    Views older than their freshness give a StaleFeaturesWarning naming the view."""
    reader = OnlineReader(open_store(home))
    values, as_of = reader.read({CUSTOMER_ID: customer_id})
    if not any(as_of.values()):
        raise LoyalError(f"customer {customer_id} is not in the online store")
    for message in reader.stale(as_of, now):
        warnings.warn(message, StaleFeaturesWarning, stacklevel=2)
    result: dict = {CUSTOMER_ID: customer_id}
    for view, _, features, _ in reader.views:
        stamp = as_of[view.name]
        result[view.name] = {"as_of": stamp.isoformat(), **{f: values[f] for f in features}} if stamp else None
    return result


def forget_offline(home: Path, customer_ids: set[str]) -> int:
    """Remove these customers' rows from every kept build's offline data (each customer view's file); rows
    removed."""
    root = Home(home).feast / definitions.OFFLINE_DIR
    return sum(without_customers(path, customer_ids)
               for view in definitions.CUSTOMER_VIEWS for path in sorted(root.glob(f"*/{view.name}.parquet")))


def customer_features_at_last_snapshot(home: Path, at) -> pd.DataFrame | None:
    """Every customer's features (all customer views) at the latest build's last snapshot, read straight from its
    offline files: the rows Feast's point-in-time join returns at that time (a test holds them equal), without an
    entity row per customer to join, which a million customers' campaign cannot afford. Sorted by customer id.
    None when `at` is not that snapshot (then ask `historical_features`)."""
    build = latest_build(home)
    last = pd.Timestamp(build["snapshots"]["end"])
    if midnight(at) != last:
        return None
    folder = Home(home).feast / definitions.OFFLINE_DIR / build["build_id"]
    behaviour = pq.read_table(folder / "customer_behaviour.parquet", filters=[(EVENT_TIMESTAMP, "==", last)])
    profile = pq.read_table(folder / "customer_profile.parquet", filters=[(EVENT_TIMESTAMP, "<=", last)])
    profile = profile.to_pandas().sort_values(EVENT_TIMESTAMP).drop_duplicates(CUSTOMER_ID, keep="last")
    frame = behaviour.to_pandas().drop(columns=EVENT_TIMESTAMP).merge(
        profile.drop(columns=EVENT_TIMESTAMP), on=CUSTOMER_ID, how="left")
    return frame.sort_values(CUSTOMER_ID, ignore_index=True)
