"""Benchmark: the feature store's build, online reads and scale.

    python benchmarks/feature_store.py real  [--data ../shared/data/online_retail.csv.gz] [--repeats 3]
    python benchmarks/feature_store.py scale [--customers 1000000] [--start-days-before-end 28] [--every 7]
    python benchmarks/feature_store.py engines [--data ../shared/data/online_retail.csv.gz] [--every 1]

`real` ingests the UCI file into a temporary LOYAL_HOME, then times `build` (every daily snapshot of the data's
year) `--repeats` times, materializes to SQLite, and times reading one (customer, item) row of `offers_v1`
in-process: Loyal's OnlineReader and, beside it, Feast's own `get_online_features`, over random known customers
and items (warm-up reads first, then `--reads` timed ones).

`scale` ingests a synthetic population in a subprocess (not timed), then, in this process, times the build and the
materialization into a real redis-server it starts on a free loopback port, and reports this process's peak
resident memory. At a million customers a daily snapshot of every customer is a million rows, so the snapshots
are those of the last `--start-days-before-end` days, `--every` days apart (the latest always included).

`engines` ingests the UCI file, runs every definition of features/features.sql (the three views and the customer
state) on both engines, DuckDB in this process and a local Spark, over every daily snapshot of the year, times each,
and compares every row: counts and money exactly, ratios to 1e-9 relative.

Each writes its figures to benchmarks/results/feature_store_<part>.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3), "reads": len(ms)}


def _time_reads(read, rows: list[dict], warmup: int) -> dict:
    for row in rows[:warmup]:
        read(row)
    seconds = []
    for row in rows[warmup:]:
        began = time.perf_counter()
        read(row)
        seconds.append(time.perf_counter() - began)
    return _percentiles(seconds)


def real(args) -> dict:
    from loyal.features.online import OnlineReader
    from loyal.features.repo import build, materialize, open_store
    from loyal.ingest import ingest_file
    from loyal.store import read_table

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        os.environ.pop("LOYAL_ONLINE_STORE", None)
        ingest_file("online-retail", args.data, home)
        build_seconds, record = [], {}
        for _ in range(args.repeats):
            began = time.perf_counter()
            record = build(home)
            build_seconds.append(time.perf_counter() - began)
        began = time.perf_counter()
        materialize(home)
        materialize_seconds = time.perf_counter() - began

        transactions = read_table(home, "transactions")
        rng = np.random.default_rng(0)
        customers = rng.choice(transactions["customer_id"].unique(), args.reads + args.warmup)
        items = rng.choice(transactions["item_id"].unique(), args.reads + args.warmup)
        rows = [{"customer_id": c, "item_id": i} for c, i in zip(customers, items)]
        store = open_store(home)
        reader = OnlineReader(store, "offers_v1")
        service = store.get_feature_service("offers_v1")
        loyal_reads = _time_reads(reader.read, rows, args.warmup)
        feast_reads = _time_reads(
            lambda row: store.get_online_features(features=service, entity_rows=[row]).to_dict(), rows, args.warmup
        )
    return {
        "benchmark": "feature_store_real",
        "data": str(args.data),
        "snapshots": record["snapshots"],
        "rows": record["rows"],
        "build_seconds": {"median": round(statistics.median(build_seconds), 2), "max": round(max(build_seconds), 2),
                          "repeats": args.repeats},
        "materialize_sqlite_seconds": round(materialize_seconds, 2),
        "online_read_offers_v1_one_row": {"loyal_online_reader": loyal_reads,
                                          "feast_get_online_features": feast_reads},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scale(args) -> dict:
    from loyal.features.repo import BuildConfig, build, materialize

    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        env = {**os.environ, "LOYAL_HOME": folder}
        subprocess.run([sys.executable, "-m", "loyal.app.cli", "ingest", "synthetic", "--customers", str(args.customers),
                        "--days", str(args.days)], env=env, check=True, stdout=subprocess.DEVNULL)
        port = _free_port()
        redis = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                  "no"], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            os.environ["LOYAL_ONLINE_STORE"] = f"redis://127.0.0.1:{port}"
            end = pd.Timestamp(latest_end(home))
            start = (end - pd.Timedelta(days=args.start_days_before_end)).date()
            began = time.perf_counter()
            record = build(home, BuildConfig(start=start, every=args.every))
            built = time.perf_counter() - began
            began = time.perf_counter()
            materialize(home)
            materialized = time.perf_counter() - began
            keys = subprocess.run(["redis-cli", "-p", str(port), "dbsize"], capture_output=True, text=True).stdout
        finally:
            redis.terminate()
            redis.wait()
    return {
        "benchmark": "feature_store_scale",
        "customers": args.customers,
        "days_of_data": args.days,
        "snapshots": record["snapshots"],
        "rows": record["rows"],
        "build_seconds": round(built, 1),
        "materialize_redis_seconds": round(materialized, 1),
        "total_seconds": round(built + materialized, 1),
        "redis_keys": int(keys.strip() or 0),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "note": "one run; peak RSS is this process's (build + materialize), the ingest ran in a subprocess",
    }


def compare_engines(args) -> dict:
    from loyal.features import engines
    from loyal.features.compute import Snapshots
    from loyal.ingest import ingest_file
    from loyal.schema import CUSTOMERS, EVENTS, TRANSACTIONS
    from loyal.store import table_path

    keys = {"customer_behaviour": ["customer_id", "event_timestamp"], "item_statistics": ["item_id", "event_timestamp"],
            "customer_profile": ["customer_id", "event_timestamp"],
            "purchase_history": ["customer_id", "timestamp", "item_id", "order_id", "quantity"],
            "session": ["customer_id", "timestamp", "item_id", "event_type"]}
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        ingest_file("online-retail", args.data, home)
        tables = {table.name: table_path(home, table) for table in (TRANSACTIONS, EVENTS, CUSTOMERS)}
        times = pd.read_parquet(tables["transactions"], columns=["timestamp"])["timestamp"]
        snapshots = Snapshots.covering(times.min(), times.max(), args.every).dates()
        frames, seconds = {}, {}
        for name in engines.ENGINES:
            began = time.perf_counter()
            runner = engines.engine(name, Path(folder) / name)
            seconds[name] = {"start": round(time.perf_counter() - began, 2)}
            runner.tables(tables, engines.snapshot_table(snapshots))
            for query in keys:
                began = time.perf_counter()
                runner.write(query, Path(folder) / f"{name}-{query}.parquet")
                seconds[name][query] = round(time.perf_counter() - began, 2)
            runner.close()
            frames[name] = {query: pd.read_parquet(Path(folder) / f"{name}-{query}.parquet") for query in keys}
    compared = {}
    for query, columns in keys.items():
        a, b = (frames[name][query].sort_values(columns).reset_index(drop=True) for name in engines.ENGINES)
        result = {"rows": [len(a), len(b)], "columns": len(a.columns)}
        if len(a) == len(b):
            differing, worst = {}, 0.0
            for column in a.columns:
                x, y = a[column], b[column]
                if x.dtype.kind == "f":
                    same = (x.isna() & y.isna()) | np.isclose(x, y, rtol=1e-9, atol=0)
                    both = x.notna() & y.notna() & (x != 0)
                    if both.any():
                        worst = max(worst, float((abs(x[both] - y[both]) / abs(x[both])).max()))
                else:
                    same = (x.isna() & y.isna()) | (x == y)
                if not same.all():
                    differing[column] = int((~same).sum())
            result |= {"differing_values_by_column": differing, "max_relative_difference_of_floats": worst}
        compared[query] = result
    equal = all(r["rows"][0] == r["rows"][1] and not r["differing_values_by_column"] for r in compared.values())
    return {"benchmark": "feature_store_engines", "data": str(args.data), "snapshots": len(snapshots),
            "equal": equal, "compared": compared, "seconds": seconds,
            "note": "both engines in this process (Spark's JVM beside it, local[*]); start: the engine's session"}


def latest_end(home: Path) -> str:
    """The day after the last transaction: the snapshot that sees all the data."""
    from loyal.store import day_after_last_purchase

    return pd.Timestamp(day_after_last_purchase(home), tz="UTC").isoformat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_subparsers(dest="part", required=True)
    real_part = parts.add_parser("real")
    real_part.add_argument("--data", type=Path, default=Path("../shared/data/online_retail.csv.gz"))
    real_part.add_argument("--repeats", type=int, default=3)
    real_part.add_argument("--reads", type=int, default=5000)
    real_part.add_argument("--warmup", type=int, default=500)
    scale_part = parts.add_parser("scale")
    scale_part.add_argument("--customers", type=int, default=1_000_000)
    scale_part.add_argument("--days", type=int, default=365)
    scale_part.add_argument("--start-days-before-end", type=int, default=28)
    scale_part.add_argument("--every", type=int, default=7)
    engines_part = parts.add_parser("engines")
    engines_part.add_argument("--data", type=Path, default=Path("../shared/data/online_retail.csv.gz"))
    engines_part.add_argument("--every", type=int, default=1)
    args = parser.parse_args()

    result = {"real": real, "scale": scale, "engines": compare_engines}[args.part](args)
    result["machine"] = _machine()
    out = RESULTS / f"feature_store_{args.part}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
