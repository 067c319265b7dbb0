"""The event log: what customers do as they do it (views, add-to-carts, purchases, returns), sent by the web shop
(`POST /events`) or from a file (`loyal events push FILE`), and kept until the next ingest or retrain folds it into
the canonical tables.

- Durable before acknowledged. The log is an SQLite database (`$LOYAL_HOME/events.db`: write-ahead log,
  synchronous=FULL), so an event answered as accepted has reached the disk and survives a kill -9 that follows.
  The service's workers and `loyal events push` append at once in transactions; SQLite takes one at a time.
- Once. An event_id already in the log, or earlier in the same batch, is a duplicate, not a second purchase.
- Checked one by one. A malformed event is rejected by its index, naming the field and the problem; the others are
  kept. The values obey the canonical contract (contract.py: id lengths, channels, price and quantity caps, dates).
  Events of a customer on the suppression list are not kept.
- Folded exactly once. Every event has a sequence number. `fold` stages the events past the canonical manifest's
  `events_folded` into the next generation of the tables, and the manifest that makes their rows visible records
  the new offset in the same rename (store.py): a fold killed at any point leaves both as they were, and the next
  one folds them all. Purchases and returns go to `transactions` (a return's quantity negative; an event without
  an order_id is its own order), views and add-to-carts to `events`.
- Forgotten. `forget` deletes a customer's events; deleted content is overwritten (secure_delete) and the write-ahead
  log truncated, so that no copy of them stays on disk.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loyal import contract
from loyal import schema as s
from loyal.errors import LoyalError
from loyal.home import Home
from loyal.store import Staging, to_arrow
from loyal.suppression import Suppression

CONTROL = re.compile(contract.CONTROL_CHARACTERS)
PURCHASES = ("purchase", "return")  # folded into transactions
BROWSING = s.EVENT_TYPES  # view, add_to_cart: folded into events
TYPES = (*BROWSING, *PURCHASES)
MAX_BATCH = 1_000  # events per request, and per transaction of a file
MAX_LISTED_REJECTIONS = 1_000  # a file's summary lists this many rejected events, and counts them all
FOLD_ROWS = 1 << 20  # events read from the log at a time while folding
COLUMNS = ("event_id", s.CUSTOMER_ID, s.ITEM_ID, "type", s.QUANTITY, s.UNIT_PRICE, s.CHANNEL, s.TIMESTAMP,
           s.ORDER_ID)
REQUIRED = ("event_id", s.CUSTOMER_ID, s.ITEM_ID, "type", s.TIMESTAMP)


class Event(BaseModel):
    """One event as the web shop sends it. Strict for JSON (a quantity of "2" is not a number); a CSV's text is
    converted first (see `read_file`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    event_id: s.Id = Field(description="Unique per event: the same id sent again is a duplicate, not a new event.")
    customer_id: s.Id
    item_id: s.Id
    type: Literal["view", "add_to_cart", "purchase", "return"]
    timestamp: str = Field(max_length=40, description="ISO 8601; without a zone, UTC.",
                           examples=["2026-12-01T10:15:00Z"])
    quantity: Optional[int] = Field(None, ge=1, description="Units, for purchase and return (a return's are "
                                    "given positive).")
    unit_price: Optional[float] = Field(None, ge=0, allow_inf_nan=False, description="For purchase and return.")
    channel: Optional[str] = Field(None, max_length=40, description="web (default), app or store.")
    order_id: Optional[s.Id] = Field(None, description="The order a purchase belongs to (default: the event alone).")


SQL_VARIABLES = 500  # ids per `IN (...)`: well under SQLite's limit on a statement's variables


def in_chunks(ids: list[str]) -> Iterator[tuple[list[str], str]]:
    """The ids a slice at a time, each with its `?, ?, ...` placeholders, for SQLite `IN (...)` queries."""
    for start in range(0, len(ids), SQL_VARIABLES):
        part = ids[start : start + SQL_VARIABLES]
        yield part, ",".join("?" * len(part))


class BadEvent(ValueError):
    """Why one event cannot be kept, naming the field."""


def check(raw: Any, limits: contract.Limits, strict: bool = True) -> tuple:
    """One event as a row of the log (COLUMNS; timestamp in microseconds since 1970 UTC), or BadEvent."""
    if not isinstance(raw, dict):
        raise BadEvent("an event is a JSON object")
    try:
        event = Event.model_validate(raw, strict=strict)
    except ValidationError as error:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}"
                    for e in error.errors(include_input=False, include_url=False)]
        raise BadEvent("; ".join(problems[:3])) from None
    for name in ("event_id", s.CUSTOMER_ID, s.ITEM_ID, s.ORDER_ID):
        value = getattr(event, name)
        if value is None:
            continue
        if value.strip().lower() in contract.MISSING_WORDS or not value.strip():
            raise BadEvent(f"{name}: missing")
        if CONTROL.search(value):
            raise BadEvent(f"{name}: control characters are not allowed")
    when = _timestamp(event.timestamp, limits)
    channel = s.DEFAULT_CHANNEL if event.channel is None else contract.CHANNEL_NAMES.get(
        event.channel.lower().replace(" ", "").replace("_", "").replace("-", ""))
    if channel is None:
        raise BadEvent(f"channel: {event.channel[:40]!r} is not one of {', '.join(s.CHANNELS)}")
    quantity, price = event.quantity, event.unit_price
    if event.type in PURCHASES:
        if quantity is None or price is None:
            raise BadEvent(f"{'quantity' if quantity is None else 'unit_price'}: required for a {event.type}")
        if quantity > limits.max_quantity:
            raise BadEvent(f"quantity: over {limits.max_quantity} units")
        if price > limits.max_price:
            raise BadEvent(f"unit_price: over {limits.max_price:g}")
        quantity = -quantity if event.type == "return" else quantity
    else:
        quantity, price = None, None  # a view has no quantity; a cart's is not kept
    return (event.event_id, event.customer_id, event.item_id, event.type, quantity, price, channel, when,
            event.order_id)


def _timestamp(text: str, limits: contract.Limits) -> int:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadEvent("timestamp: not an ISO 8601 date and time") from None
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    if not limits.earliest <= when <= limits.latest:
        raise BadEvent(f"timestamp: outside {limits.earliest:%Y-%m-%d} .. {limits.latest:%Y-%m-%d}")
    return int(when.timestamp() * 1_000_000)


@dataclass
class Receipt:
    """What became of a batch of events: counts, and each rejected event's index and problem."""
    accepted: int = 0
    duplicates: int = 0
    suppressed: int = 0  # events of forgotten customers: not kept
    rejected: list[dict] = field(default_factory=list)
    rejected_count: int = 0
    kept: list[tuple] = field(default_factory=list, repr=False)  # the accepted events, as the log holds them

    def add(self, other: Receipt) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.suppressed += other.suppressed
        self.rejected_count += other.rejected_count
        self.rejected += other.rejected[: max(0, MAX_LISTED_REJECTIONS - len(self.rejected))]

    def as_dict(self) -> dict:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "rejected_count": self.rejected_count, "suppressed": self.suppressed}


class EventLog:
    """The log under one home. One per process is enough: it is safe to share between threads."""

    def __init__(self, home: Path, limits: contract.Limits | None = None):
        self.home, self.path = Path(home), Home(home).events
        self.limits = limits
        self.suppression = Suppression(home)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # the commit waits for the disk: durable before the answer
            db.execute("PRAGMA secure_delete=ON")  # a forgotten customer's deleted rows are overwritten
            db.execute("""CREATE TABLE IF NOT EXISTS events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL,
                item_id TEXT NOT NULL, type TEXT NOT NULL, quantity INTEGER, unit_price REAL, channel TEXT NOT NULL,
                timestamp INTEGER NOT NULL, order_id TEXT)""")
            db.execute("CREATE INDEX IF NOT EXISTS events_customer ON events (customer_id)")
            self._connection = db
        return self._connection

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def append(self, events: list, strict: bool = True, first_index: int = 0) -> Receipt:
        """Check the events and keep the good ones that are new; returns once they are on disk."""
        limits = self.limits or contract.Limits()  # "latest" is a day after now: made fresh for each batch
        receipt, rows = Receipt(), []
        for index, raw in enumerate(events, start=first_index):
            try:
                rows.append(check(raw, limits, strict))
            except BadEvent as error:
                receipt.rejected.append({"index": index, "error": str(error)})
        receipt.rejected_count = len(receipt.rejected)
        if rows:
            erased = self.suppression.contains([row[1] for row in rows])
            receipt.suppressed = int(erased.sum())
            rows = [row for row, gone in zip(rows, erased) if not gone]
        if not rows:
            return receipt
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = list({row[0] for row in rows})
                known = set()
                for part, marks in in_chunks(ids):
                    known.update(r[0] for r in db.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})",
                                                          part))
                new = []
                for row in rows:
                    if row[0] in known:
                        receipt.duplicates += 1
                    else:
                        known.add(row[0])
                        new.append(row)
                db.executemany(f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                               new)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        receipt.accepted, receipt.kept = len(new), new
        return receipt

    def since(self, offset: int, limit: int = FOLD_ROWS) -> pd.DataFrame:
        """Up to `limit` events after sequence number `offset`, in order, with their `seq`."""
        with self._lock:
            rows = self._db().execute(f"SELECT seq, {', '.join(COLUMNS)} FROM events WHERE seq > ? ORDER BY seq "
                                      "LIMIT ?", (offset, limit)).fetchall()
        return pd.DataFrame(rows, columns=["seq", *COLUMNS])

    def forget(self, customer_ids: Iterable[str]) -> int:
        """Delete these customers' events, leaving no copy on disk; how many went."""
        ids, removed = sorted(set(customer_ids)), 0
        with self._lock:
            db = self._db()
            for part, marks in in_chunks(ids):
                removed += db.execute(f"DELETE FROM events WHERE customer_id IN ({marks})", part).rowcount
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the write-ahead log held the rows' pages too
        return removed


def fold(staging: Staging, home: Path) -> dict[str, int]:
    """Stage the events not yet folded into the canonical tables, and move the manifest's offset with them (the
    staging's commit makes both visible at once). Counts of what was staged."""
    counts = {"events_folded": 0, "purchases": 0, "browsing": 0, "of_erased_customers": 0}
    if not Home(home).events.exists():
        return counts
    log = EventLog(home)
    try:
        while True:
            batch = log.since(staging.events_folded)
            if batch.empty:
                break
            staging.events_folded = int(batch["seq"].iloc[-1])
            counts["events_folded"] += len(batch)
            erased = log.suppression.contains(batch[s.CUSTOMER_ID].tolist())
            counts["of_erased_customers"] += int(erased.sum())
            batch = batch[~erased]
            batch[s.TIMESTAMP] = pd.to_datetime(batch[s.TIMESTAMP], unit="us", utc=True)
            bought = batch[batch["type"].isin(PURCHASES)]
            browsed = batch[batch["type"].isin(BROWSING)].rename(columns={"type": s.EVENT_TYPE})
            counts["purchases"] += len(bought)
            counts["browsing"] += len(browsed)
            staging.add(s.TRANSACTIONS.name, to_arrow(
                bought.assign(**{s.ORDER_ID: bought[s.ORDER_ID].fillna(bought["event_id"])}), s.TRANSACTIONS))
            staging.add(s.EVENTS.name, to_arrow(browsed, s.EVENTS))
    finally:
        log.close()
    return counts


# ------------------------------------------------------------------------------------------- files
def read_file(path: Path) -> tuple[list, bool]:
    """A file's events, and whether they are typed (JSON lines: checked as strictly as the API) or text to convert
    (CSV: an empty cell is a missing value). Read whole before any is kept: a file that cannot be used at all is a
    LoyalError, and nothing of it is in the log."""
    name = path.name.lower().removesuffix(".gz")
    if not name.endswith((".csv", ".jsonl", ".ndjson", ".json")):
        raise LoyalError(f"{path}: events come as CSV (.csv) or JSON lines (.jsonl), with or without .gz")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise LoyalError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LoyalError(f"{path}: a folder, not a file of events") from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
        raise LoyalError(f"{path}: not UTF-8 text ({type(error).__name__})") from None
    if not text.strip():
        raise LoyalError(f"{path}: no events in it")
    if name.endswith(".csv"):
        return _csv_events(path, text), False
    return [_json_or_none(line) for line in text.splitlines() if line.strip()], True


def _csv_events(path: Path, text: str) -> list[dict]:
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise LoyalError(f"{path}: not a CSV file of events ({str(error).splitlines()[0][:200]})") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise LoyalError(f"{path}: no column {', '.join(missing)} (it has {', '.join(map(str, frame.columns))[:300]})")
    return [{key: value for key, value in row.items() if value != ""} for row in frame.to_dict("records")]


def _json_or_none(line: str):
    """A line's JSON, or None (which `check` rejects in its place: "an event is a JSON object")."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def push_file(home: Path, path: Path, limits: contract.Limits | None = None,
              then: Callable[[list[tuple]], None] | None = None) -> dict:
    """`loyal events push FILE`: every event of the file into the log, a batch per transaction, each batch's kept
    events then given to `then` (the customers' online state); the summary."""
    events, typed = read_file(path)
    log, receipt = EventLog(home, limits), Receipt()
    try:
        for start in range(0, len(events), MAX_BATCH):
            batch = log.append(events[start : start + MAX_BATCH], strict=typed, first_index=start)
            receipt.add(batch)
            if then is not None:
                then(batch.kept)
    finally:
        log.close()
    return {"file": str(path), "events_read": len(events)} | receipt.as_dict()
