"""Each customer's state in the online store: their purchase history and their session (`features.sql`
defines both, as of any moment, from the canonical tables). `loyal features materialize` writes
every customer's state as of the data; every event the service or `loyal events push` takes is appended at once; the
rails read it at request time. So a purchase made now shows in the next answer, with no retraining.

Why not Feast's push API: `FeatureStore.push` replaces a feature row, so two workers appending to one customer's
history at the same moment would each write back what it read, and one purchase would be lost. The state lives in
the online store's own structures behind this one small interface instead, each append one atomic step:
- SQLite (Feast's online store file): a table of lines keyed by their columns (customer, time, item, then order
  and quantity, or event type); a transaction inserts the new lines and trims the customer to the latest ones;
- Redis (Feast's server): a sorted set per customer, scored by time, its members the line's columns (numbers
  zero-padded, so that equal times order by item, then order and quantity, as in SQLite and in `compute`); a MULTI
  adds and trims.
A line appended twice (a retried request, or a materialize meeting an event already appended) is kept once.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from feast.infra.online_stores.helpers import get_online_store_from_config
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from loyal.errors import LoyalError
from loyal.events import BROWSING, COLUMNS, EventLog, in_chunks
from loyal.features.compute import HISTORY, HISTORY_LINES, SESSION, SESSION_EVENTS
from loyal.home import Home
from loyal.schema import CUSTOMER_ID, EVENT_TYPE, ITEM_ID, ORDER_ID, QUANTITY, TIMESTAMP
from loyal.store import manifest

SEPARATOR = "\x1f"  # between the parts of a Redis member: ids never hold control characters (contract.py)
# name: (columns, the columns after customer, item and time that make a line unique, how many a customer keeps)
KINDS = {"history": (HISTORY, (ORDER_ID, QUANTITY), HISTORY_LINES),
         "session": (SESSION, (EVENT_TYPE,), SESSION_EVENTS)}
NUMBERS = (TIMESTAMP, QUANTITY)  # integer columns


class CustomerState:
    """The customers' state in the online store of a Feast FeatureStore (SQLite or Redis). Safe to share between
    threads; processes share it through the store."""

    def __init__(self, store):
        self.project = store.config.project
        online = get_online_store_from_config(store.config.online_store)
        if isinstance(online, SqliteOnlineStore):
            self.backend = _Sqlite(Path(SqliteOnlineStore._get_db_path(store.config)))
        elif isinstance(online, RedisOnlineStore):
            self.backend = _Redis(online._get_client(store.config.online_store), f"loyal:{self.project}")
        else:
            raise LoyalError(f"customer state needs a SQLite or Redis online store, not {type(online).__name__}")

    def read(self, customer_ids: Iterable[str]) -> dict[str, pd.DataFrame]:
        """{"history": ..., "session": ...}: the customers' lines (compute.HISTORY and compute.SESSION columns), each
        customer's oldest first; a customer with none has no rows."""
        ids = [str(c) for c in customer_ids]
        return {kind: self.backend.read(kind, ids) for kind in KINDS}

    def append(self, history: pd.DataFrame, session: pd.DataFrame) -> None:
        """Add lines to the customers' state, each customer trimmed to their latest lines: both kinds in one write."""
        frames = {kind: frame for kind, frame in (("history", history), ("session", session)) if len(frame)}
        if frames:
            self.backend.write(frames, replace=False)

    def append_events(self, rows: list[tuple]) -> None:
        """Add events as the log keeps them (events.COLUMNS): purchases to the history, browsing to the session."""
        if rows:
            self.append(*event_lines(rows))

    def replace(self, history: pd.DataFrame, session: pd.DataFrame) -> None:
        """Every customer's state, as `compute` gives it: what was there before goes."""
        self.backend.write({"history": history, "session": session}, replace=True)

    def erase(self, customer_ids: Iterable[str]) -> int:
        """Delete these customers' state; how many lines went."""
        ids = [str(c) for c in customer_ids]
        return sum(self.backend.erase(kind, ids) for kind in KINDS)


def event_lines(rows: list[tuple] | pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The state lines of events as the log keeps them (events.COLUMNS): purchases become history (an event without
    an order is its own order, as the fold makes it), views and add-to-carts session. Returns are not history."""
    # Row by row: a request brings a hundred events, and a frame's every step costs more than that many rows.
    events = rows[list(COLUMNS)].itertuples(index=False, name=None) if isinstance(rows, pd.DataFrame) else rows
    field = {name: i for i, name in enumerate(COLUMNS)}
    kind, customer, item, when, quantity, order, event_id = (field[name] for name in (
        "type", CUSTOMER_ID, ITEM_ID, TIMESTAMP, QUANTITY, ORDER_ID, "event_id"))
    history, session = [], []
    for event in events:
        if event[kind] == "purchase" and event[quantity] > 0:
            history.append((event[customer], event[item], int(event[when]),
                            event[event_id] if event[order] is None or pd.isna(event[order]) else event[order],
                            int(event[quantity])))
        elif event[kind] in BROWSING:
            session.append((event[customer], event[item], int(event[when]), event[kind]))
    return _frame(history, HISTORY), _frame(session, SESSION)


def unfolded_events(home: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The state lines of the events the canonical tables do not hold yet (past the manifest's offset): what a
    materialize adds back after writing the state from the tables."""
    if not Home(home).events.exists():
        return event_lines([])
    log = EventLog(home)
    try:
        frames, offset = [], manifest(home)["events_folded"]
        while True:
            batch = log.since(offset)
            if batch.empty:
                break
            frames.append(batch)
            offset = int(batch["seq"].iloc[-1])
    finally:
        log.close()
    return event_lines(pd.concat(frames) if frames else [])


# -------------------------------------------------------------------------------------------------- SQLite
class _Sqlite:
    def __init__(self, path: Path):
        self.path, self._lock, self._db = path, threading.Lock(), None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            for kind, (columns, _, _) in KINDS.items():
                types = ", ".join(f"{c} {'INTEGER' if c in NUMBERS else 'TEXT'} NOT NULL" for c in columns)
                db.execute(f"CREATE TABLE IF NOT EXISTS loyal_{kind} ({types}, PRIMARY KEY ({', '.join(_order(kind))})"
                           ") WITHOUT ROWID")
            self._db = db
        return self._db

    def read(self, kind: str, ids: list[str]) -> pd.DataFrame:
        columns, rows = KINDS[kind][0], []
        with self._lock:
            db = self._connection()
            for part, marks in in_chunks(ids):
                rows += db.execute(f"SELECT {', '.join(columns)} FROM loyal_{kind} WHERE customer_id IN ({marks}) "
                                   f"ORDER BY {', '.join(_order(kind))}", part).fetchall()
        return _frame(rows, columns)

    def write(self, frames: dict[str, pd.DataFrame], replace: bool) -> None:
        """Add (or, with `replace`, put in place of everything) lines of each kind, in one transaction."""
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                for kind, frame in frames.items():
                    self._write(db, kind, frame, replace)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _write(db: sqlite3.Connection, kind: str, frame: pd.DataFrame, replace: bool) -> None:
        columns, _, keep = KINDS[kind]
        rows = list(frame[list(columns)].itertuples(index=False, name=None))
        line = ", ".join(_order(kind)[1:])
        if replace:
            db.execute(f"DELETE FROM loyal_{kind}")
        db.executemany(f"INSERT OR IGNORE INTO loyal_{kind} ({', '.join(columns)}) VALUES "
                       f"({', '.join('?' * len(columns))})", rows)
        if replace:  # compute's frames are trimmed already
            return
        over = []  # a customer at or under `keep` lines needs no trim
        for part, marks in in_chunks(list({row[0] for row in rows})):
            over += [r[0] for r in db.execute(f"SELECT customer_id FROM loyal_{kind} WHERE customer_id IN ({marks}) "
                                              f"GROUP BY customer_id HAVING COUNT(*) > {int(keep)}", part)]
        newest_first = ", ".join(f"{c} DESC" for c in _order(kind)[1:])
        for customer in over:
            db.execute(f"DELETE FROM loyal_{kind} WHERE customer_id = ?1 AND ({line}) NOT IN (SELECT {line} FROM "
                       f"loyal_{kind} WHERE customer_id = ?1 ORDER BY {newest_first} LIMIT ?2)", (customer, keep))

    def erase(self, kind: str, ids: list[str]) -> int:
        removed = 0
        with self._lock:
            db = self._connection()
            for part, marks in in_chunks(ids):
                removed += db.execute(f"DELETE FROM loyal_{kind} WHERE customer_id IN ({marks})", part).rowcount
        return removed


def _order(kind: str) -> list[str]:
    """A line's columns in the order lines sort by: customer, time, item, then the rest of its key."""
    return [CUSTOMER_ID, TIMESTAMP, ITEM_ID, *KINDS[kind][1]]


# -------------------------------------------------------------------------------------------------- Redis
class _Redis:
    def __init__(self, client, prefix: str):
        self.client, self.prefix = client, prefix

    def _key(self, kind: str, customer: str) -> str:
        return f"{self.prefix}:{kind}:{customer}"

    def read(self, kind: str, ids: list[str]) -> pd.DataFrame:
        columns, order = KINDS[kind][0], _order(kind)
        pipe = self.client.pipeline(transaction=False)
        for customer in ids:
            pipe.zrange(self._key(kind, customer), 0, -1)
        rows = []
        for customer, members in sorted(zip(ids, pipe.execute())):
            for member in members:
                line = dict(zip(order[1:], member.decode().split(SEPARATOR)), customer_id=customer)
                rows.append(tuple(int(line[c]) if c in NUMBERS else line[c] for c in columns))
        return _frame(rows, columns)

    def write(self, frames: dict[str, pd.DataFrame], replace: bool) -> None:
        for kind, frame in frames.items():
            self._write(kind, frame, replace)

    def _write(self, kind: str, frame: pd.DataFrame, replace: bool) -> None:
        order, keep = _order(kind), KINDS[kind][2]
        per_customer: dict[str, dict[str, int]] = {}
        for line in frame[order].itertuples(index=False, name=None):
            member = SEPARATOR.join(f"{v:020d}" if c in NUMBERS else str(v) for c, v in zip(order[1:], line[1:]))
            per_customer.setdefault(line[0], {})[member] = int(line[1])
        if replace:
            stale = {key for key in self.client.scan_iter(match=f"{self.prefix}:{kind}:*", count=1000)}
            stale -= {self._key(kind, customer).encode() for customer in per_customer}
            for key in stale:
                self.client.delete(key)
        customers = list(per_customer)
        for start in range(0, len(customers), 1000):
            pipe = self.client.pipeline(transaction=True)  # MULTI: each customer's add and trim are one step
            for customer in customers[start : start + 1000]:
                key = self._key(kind, customer)
                if replace:
                    pipe.delete(key)
                pipe.zadd(key, per_customer[customer])
                pipe.zremrangebyrank(key, 0, -(keep + 1))
            pipe.execute()


    def erase(self, kind: str, ids: list[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for customer in ids:
            pipe.zcard(self._key(kind, customer))
            pipe.delete(self._key(kind, customer))
        answers = pipe.execute()
        return int(sum(answers[0::2]))


def _frame(rows: list[tuple], columns: tuple[str, ...]) -> pd.DataFrame:
    # Column by column: a request reads a few dozen rows, and building a frame from rows costs more than reading them.
    values = list(zip(*rows)) if rows else [()] * len(columns)
    return pd.DataFrame({column: np.array(value, dtype=np.int64 if column in NUMBERS else object)
                         for column, value in zip(columns, values)})
