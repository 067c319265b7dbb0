"""The engines that run the feature definitions (`features.sql`): DuckDB in this process (embedded, the default)
or Apache Spark (`--engine spark`), from the same SQL.

The definitions are written once, in Spark SQL; SQLGlot transpiles them to DuckDB's dialect. Each engine is given
the canonical tables (parquet files; an absent table is an empty one of its schema) and the snapshot times, runs a
definition and writes its rows to parquet. ARCHITECTURE.md says why SQL and SQLGlot rather than a dataframe API.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import sqlglot

from loyal.dates import utc
from loyal.errors import LoyalError
from loyal.features.compute import DAY_US, HISTORY, HISTORY_LINES, LOG_SCALE, MONEY_SCALE, SESSION, SESSION_EVENTS
from loyal.schema import CUSTOMER_ID, DEFAULT_CHANNEL, EVENTS, ORDER_ID, TABLES, TIMESTAMP, TRANSACTIONS

DEFINITIONS = Path(__file__).with_name("features.sql")
ENGINES = ("embedded", "spark")
SPARK_MASTER_ENV = "LOYAL_SPARK_MASTER"  # where a session is not given by spark-submit; default local[*]
# The window frames the definitions name: N days before the snapshot are the days [T - N, T - 1].
FRAMES = {
    "before": "RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING",
    "up_to_today": "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
    **{f"last_{n}": f"RANGE BETWEEN {n} PRECEDING AND 1 PRECEDING" for n in (30, 90, 180, 365)},
    "the_90_before_the_last_90": "RANGE BETWEEN 180 PRECEDING AND 91 PRECEDING",
    "the_30_before_the_last_30": "RANGE BETWEEN 60 PRECEDING AND 31 PRECEDING",
}
CONSTANTS = {"day_us": DAY_US, "money_scale": MONEY_SCALE, "log_scale": LOG_SCALE, "default_channel": DEFAULT_CHANNEL,
             "history_lines": HISTORY_LINES}


@functools.cache
def definitions() -> dict[str, str]:
    """Each named query of features.sql, in Spark SQL, its placeholders filled in ({session_events}, which a
    caller may change, is filled in by `query`)."""
    text = DEFINITIONS.read_text()
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    constants = FRAMES | CONSTANTS | {"session_events": "{session_events}"}
    return {name: body.strip().rstrip(";").format(**constants) for name, body in zip(parts[1::2], parts[2::2])}


@functools.cache
def query(name: str, dialect: str = "spark", session_events: int = SESSION_EVENTS) -> str:
    """A definition in an engine's dialect (spark as written; duckdb by SQLGlot)."""
    text = definitions()[name].replace("{session_events}", str(int(session_events)))
    return text if dialect == "spark" else sqlglot.transpile(text, read="spark", write=dialect)[0]


# ------------------------------------------------------------------------------------- the state, in this process


def purchase_history(transactions: pd.DataFrame, before=None) -> pd.DataFrame:
    """Every customer's history (compute.HISTORY columns) as of `before` (a time; None: all of it), as
    features.sql defines it: their latest HISTORY_LINES purchase lines before it, oldest first."""
    return _in_process("purchase_history", TRANSACTIONS.name, transactions, before, HISTORY)


def session(events: pd.DataFrame | None, before=None, keep: int = SESSION_EVENTS) -> pd.DataFrame:
    """Every customer's session (compute.SESSION columns) as of `before`: their latest `keep` views and
    add-to-carts, oldest first."""
    return _in_process("session", EVENTS.name, events, before, SESSION, session_events=keep)


def _in_process(name: str, table: str, frame: pd.DataFrame | None, before, columns: tuple[str, ...],
                **settings) -> pd.DataFrame:
    if frame is None:
        frame = TABLES[table].schema.empty_table().to_pandas()
    elif before is not None:
        frame = frame[frame[TIMESTAMP] < utc(before)]
    if ORDER_ID not in frame and table == TRANSACTIONS.name:  # a frame without order ids: none is known
        frame = frame.assign(**{ORDER_ID: None})
    with duckdb.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        db.register(table, frame)
        result = db.execute(query(name, "duckdb", **settings)).df()
    result = result[list(columns)]
    for column in columns:  # strings as objects, as the rest of Loyal reads them
        if result[column].dtype != "int64":
            result[column] = result[column].astype(object)
    return result.astype({CUSTOMER_ID: object})


def snapshot_table(dates: pd.DatetimeIndex) -> pa.Table:
    """The snapshots table the definitions join: each time as a timestamp, microseconds and whole days."""
    us = dates.astype("datetime64[us, UTC]").asi8
    return pa.table({"event_timestamp": pa.array(dates.astype("datetime64[us, UTC]")),
                     "us": pa.array(us, pa.int64()), "day": pa.array(us // DAY_US, pa.int64())})


class Embedded:
    """DuckDB in this process: the default, no server and no JVM. It spills to disk beyond its memory limit."""

    name = "embedded"

    def __init__(self, scratch: Path):
        scratch.mkdir(parents=True, exist_ok=True)
        self.db = duckdb.connect(config={"temp_directory": str(scratch)})
        self.db.execute("SET TimeZone = 'UTC'")

    def tables(self, paths: dict[str, Path | None], snapshots: pa.Table) -> None:
        for name, path in paths.items():
            if path is None:
                self.db.register(name, TABLES[name].schema.empty_table())
            else:
                self.db.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_quoted(path)})")
        self.db.register("snapshots", snapshots)

    def write(self, name: str, path: Path) -> None:
        """The definition's rows to one parquet file at `path`."""
        self.db.execute(f"COPY ({query(name, 'duckdb')}) TO {_quoted(path)} (FORMAT parquet)")

    def close(self) -> None:
        self.db.close()


class Spark:
    """Apache Spark: the session spark-submit gives, else a local one (LOYAL_SPARK_MASTER, default local[*]).
    Times are UTC and written as microseconds, as the canonical tables hold them."""

    name = "spark"

    def __init__(self, scratch: Path):
        self.session = spark_session()
        self.scratch = scratch

    def tables(self, paths: dict[str, Path | None], snapshots: pa.Table) -> None:
        for name, path in paths.items():
            if path is None:
                frame = self.session.createDataFrame([], _spark_schema(TABLES[name].schema))
            else:
                frame = self.session.read.parquet(str(path))
            frame.createOrReplaceTempView(name)
        self.session.createDataFrame(snapshots.to_pandas()).createOrReplaceTempView("snapshots")

    def write(self, name: str, path: Path) -> None:
        """The definition's rows to a folder of parquet parts at `path`, as Spark writes them (Feast's Spark
        offline store reads the folder; so do pyarrow and pandas)."""
        self.session.sql(query(name)).write.mode("overwrite").parquet(str(path))

    def close(self) -> None:
        pass  # the session is the process's, shared by later builds and scoring


def spark_session():
    """The process's Spark session, created on first use. pyspark is imported here, not at the top: it is an
    optional dependency (`pip install loyal[spark]`) and the embedded path never needs it."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise LoyalError("--engine spark needs pyspark: pip install 'loyal[spark]' (and Java 17)") from None
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise LoyalError("--engine spark needs Java 17: install it or set JAVA_HOME")
    builder = SparkSession.builder.appName("loyal")
    for key, value in spark_conf().items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_conf() -> dict[str, str]:
    """The settings of Loyal's Spark session, which Feast's Spark offline store and compute engine are given too:
    times in UTC, written as microseconds, as the canonical tables hold them.

    Spark's Python workers (a model's UDF, Feast's writes to the online store) must run this interpreter, which has
    Loyal and its dependencies, rather than whichever python3 comes first on the PATH. PySpark reads that from the
    environment (PYSPARK_PYTHON) when its context starts, whoever starts it, so it is set here, unless given."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return {
        "spark.master": os.environ.get(SPARK_MASTER_ENV, "local[*]"),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": os.environ.get("LOYAL_SPARK_PARTITIONS", "8"),
        # The JVM's heap: Spark's default (1g) ran out in the year's windows of a million customers on one
        # machine. Local Spark runs everything in this driver; on a cluster, the executors' memory is the
        # cluster's setting.
        "spark.driver.memory": os.environ.get("LOYAL_SPARK_DRIVER_MEMORY", "4g"),
        # pandas in and out of Spark (the snapshot a model scores, Feast's training sets) as Arrow batches rather
        # than a Python object per value.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def engine(name: str, scratch: Path):
    if name == "embedded":
        return Embedded(scratch)
    if name == "spark":
        return Spark(scratch)
    raise LoyalError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


_SPARK_TYPES = {pa.string(): "STRING", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN"}


def _spark_schema(schema: pa.Schema) -> str:
    return ", ".join(f"{field.name} {_SPARK_TYPES.get(field.type, 'TIMESTAMP')}" for field in schema)
