"""The event log (loyal/events.py): events checked one by one, durable before they are acknowledged, each kept once,
folded into the canonical tables exactly once whatever is killed when, and gone with a forgotten customer.
Commands run as real processes; the service's POST /events is in test_service.py."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from loyal.events import EventLog
from loyal.store import manifest, read_table

from conftest import write

LOYAL = str(Path(sys.executable).parent / "loyal")


def loyal(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([LOYAL, *args], capture_output=True, text=True, timeout=timeout,
                          env={"LOYAL_HOME": str(home), "PATH": "/usr/bin:/bin"})


def event(i: int, kind: str = "purchase", customer: str | None = None, **extra) -> dict:
    base = {"event_id": f"ev-{i}", "customer_id": customer or f"c{i % 50}", "item_id": f"i{i % 30}", "type": kind,
            "timestamp": f"2026-11-{1 + i % 28:02d}T10:00:00Z"}
    if kind in ("purchase", "return"):
        base |= {"quantity": 1 + i % 3, "unit_price": 2.5}
    return base | extra


def jsonl(path: Path, events: list) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    return path


def logged(home: Path) -> pd.DataFrame:
    with sqlite3.connect(home / "events.db") as db:
        return pd.read_sql("SELECT * FROM events ORDER BY seq", db)


def test_each_event_is_checked_alone_and_a_repeated_id_is_a_duplicate(tmp_path, home):
    events = [
        event(0, "view"),
        event(1),
        event(1),  # the same event sent twice in one file
        event(2, quantity="2"),  # JSON's types as they are: "2" is not a number
        "not json",
        event(3, "return", channel="In-Store"),  # a return, from a channel name mapped onto `store`
        {k: v for k, v in event(4).items() if k != "unit_price"},
        event(5, "view", timestamp="2199-01-01T00:00:00Z"),
        event(6, "view", customer="x" * 65),
        event(7, "view", colour="red"),
        event(8, "view", channel="fax"),
        event(9, "add_to_cart", timestamp="yesterday"),
    ]
    result = loyal(home, "events", "push", str(jsonl(tmp_path / "e.jsonl", events)))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["duplicates"], summary["rejected_count"]) == (3, 1, 8)
    errors = {r["index"]: r["error"] for r in summary["rejected"]}
    assert errors == {
        3: "quantity: Input should be a valid integer",
        4: "an event is a JSON object",
        6: "unit_price: required for a purchase",
        7: "timestamp: outside 1990-01-01 .. " + errors[7].rsplit(" ", 1)[-1],
        8: "customer_id: String should have at most 64 characters",
        9: "colour: Extra inputs are not permitted",
        10: "channel: 'fax' is not one of web, app, store",
        11: "timestamp: not an ISO 8601 date and time",
    }
    stored = logged(home)
    assert stored["event_id"].tolist() == ["ev-0", "ev-1", "ev-3"]
    assert stored["quantity"].tolist()[1:] == [2, -1] and stored["channel"].tolist() == ["web", "web", "store"]

    again = json.loads(loyal(home, "events", "push", str(tmp_path / "e.jsonl")).stdout)
    assert (again["accepted"], again["duplicates"]) == (0, 4)  # a second push of the same file adds nothing


def test_a_csv_of_events_is_typed_from_its_text(tmp_path, home):
    data = write(tmp_path / "events.csv", """
event_id,customer_id,item_id,type,quantity,unit_price,timestamp,channel,order_id
e1,c1,i1,purchase,2,3.5,2026-11-01 10:00:00,web,o1
e2,c1,i2,view,,,2026-11-01T10:05:00+01:00,,
e3,c1,i2,purchase,two,3.5,2026-11-01 10:00:00,web,o1
""")
    summary = json.loads(loyal(home, "events", "push", str(data)).stdout)
    assert summary["accepted"] == 2 and [r["index"] for r in summary["rejected"]] == [2]
    stored = logged(home)
    assert stored["timestamp"].tolist()[1] == int(pd.Timestamp("2026-11-01T09:05:00Z").timestamp() * 1e6)


@pytest.mark.parametrize("name, text, says", [
    ("missing.csv", None, "no such file"),
    ("empty.csv", "", "no events in it"),
    ("columns.csv", "customer_id,item_id\nc1,i1\n", "no column event_id, type, timestamp"),
    ("events.parquet", "PAR1", "events come as CSV"),
    ("binary.jsonl", b"\xff\xfe\x00\x01", "not UTF-8 text"),
])
def test_a_file_that_cannot_be_used_is_one_line_and_keeps_nothing(tmp_path, home, name, text, says):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    result = loyal(home, "events", "push", str(path))
    assert result.returncode == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and not (home / "events.db").exists()


def test_events_are_folded_into_the_canonical_tables_once_by_the_next_ingest(tmp_path, home):
    events = [event(i) for i in range(40)] + [event(i, "view") for i in range(40, 60)] + [event(60, "return")]
    assert loyal(home, "events", "push", str(jsonl(tmp_path / "e.jsonl", events))).returncode == 0
    first = write(tmp_path / "t.csv", "customer_id,item_id,timestamp,quantity,unit_price\nz1,i1,2026-10-01,1,1.0\n")
    summary = json.loads(loyal(home, "ingest", "canonical", str(first)).stdout)
    assert summary["event_log"] == {"events_folded": 61, "purchases": 41, "browsing": 20, "of_erased_customers": 0}
    transactions = read_table(home, "transactions")
    assert len(transactions) == 42 and transactions["order_id"].str.startswith("ev-", na=False).sum() == 41
    assert (transactions.loc[transactions["order_id"] == "ev-60", "quantity"] < 0).all()
    assert len(read_table(home, "events")) == 20 and manifest(home)["events_folded"] == 61

    # Nothing new: the next ingest folds nothing; a new event is folded alone.
    assert json.loads(loyal(home, "ingest", "canonical", str(first)).stdout)["event_log"]["events_folded"] == 0
    assert loyal(home, "events", "push", str(jsonl(tmp_path / "more.jsonl", [event(61), event(0)]))).returncode == 0
    assert json.loads(loyal(home, "ingest", "canonical", str(first)).stdout)["event_log"]["events_folded"] == 1
    assert len(read_table(home, "transactions")) == 43


def test_a_forgotten_customers_events_are_not_kept_and_leave_the_log(tmp_path, home):
    events = [event(i, customer="gone-4711" if i % 2 else "stays") for i in range(10)]
    assert loyal(home, "events", "push", str(jsonl(tmp_path / "e.jsonl", events))).returncode == 0
    erased = json.loads(loyal(home, "forget", "gone-4711").stdout)
    assert erased["event_log_rows"] == 5
    assert set(logged(home)["customer_id"]) == {"stays"}
    for path in home.glob("events.db*"):
        assert b"gone-4711" not in path.read_bytes(), path  # overwritten, not only unlinked from the table
    late = jsonl(tmp_path / "late.jsonl", [event(99, customer="gone-4711")])
    later = json.loads(loyal(home, "events", "push", str(late)).stdout)
    assert (later["accepted"], later["suppressed"]) == (0, 1)


# -------------------------------------------------------------------------------------------------- kill -9
WRITER = """
import json, sys
from loyal.events import EventLog
log, batch = EventLog(sys.argv[1]), int(sys.argv[2])
for start in range(0, 10**6, batch):
    events = [{"event_id": f"k-{i}", "customer_id": f"c{i % 97}", "item_id": f"i{i % 31}", "type": "purchase",
               "quantity": 1, "unit_price": 1.0, "timestamp": "2026-11-02T10:00:00Z"}
              for i in range(start, start + batch)]
    receipt = log.append(events)
    assert receipt.accepted == batch
    print(start + batch, flush=True)  # acknowledged: every event below this is on disk
"""


@pytest.mark.integration
def test_an_acknowledged_event_survives_a_kill_and_a_batch_is_kept_whole_or_not_at_all(tmp_path, home):
    acknowledged = 0
    for delay in (1.5, 2.0, 2.5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home), "100"], stdout=subprocess.PIPE, text=True)
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate()
        lines = out.split()
        acknowledged = int(lines[-1]) if lines else acknowledged
        stored = logged(home)
        ids = set(stored["event_id"])
        assert {f"k-{i}" for i in range(acknowledged)} <= ids
        assert len(stored) % 100 == 0 and len(ids) == len(stored)  # whole batches, each event once
    assert acknowledged > 0


@pytest.mark.integration
def test_a_fold_killed_at_any_moment_folds_every_event_exactly_once(tmp_path, home):
    """kill -9 during the ingest that folds 200,000 events, five times at random moments: the tables hold each
    purchase of the log once or not yet, never twice; the ingest run again folds them all, once."""
    log = EventLog(home)
    for start in range(0, 200_000, 1000):
        log.append([event(i, "purchase" if i % 4 else "view", customer=f"c{i % 3000}") for i in
                    range(start, start + 1000)])
    log.close()
    purchases = sum(1 for i in range(200_000) if i % 4)
    first = write(tmp_path / "t.csv", "customer_id,item_id,timestamp,quantity,unit_price\nz1,i1,2026-10-01,1,1.0\n")
    rng, seen = random.Random(0), []
    for attempt in range(5):
        run = subprocess.Popen([LOYAL, "ingest", "canonical", str(first)], env={"LOYAL_HOME": str(home)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt == 0:  # the first while it writes the new generation of the tables, before its commit
            while not list((home / "canonical").glob("transactions.*.parquet")):
                assert run.poll() is None
                time.sleep(0.002)
        else:
            time.sleep(rng.uniform(0.8, 2.8))  # about the fold's whole run, imports included
        run.send_signal(signal.SIGKILL)
        run.wait()
        stored = read_table(home, "transactions")
        folded = 0 if stored is None else int(stored["order_id"].str.startswith("ev-", na=False).sum())
        seen.append(folded)
        assert folded in (0, purchases)
        assert manifest(home)["events_folded"] == (0 if folded == 0 else 200_000)
    assert seen[0] == 0
    done = loyal(home, "ingest", "canonical", str(first))
    assert done.returncode == 0, done.stderr
    stored = read_table(home, "transactions")
    assert stored["order_id"].str.startswith("ev-", na=False).sum() == purchases
    assert stored.loc[stored["order_id"].str.startswith("ev-", na=False), "order_id"].is_unique
    assert len(read_table(home, "events")) == 200_000 - purchases
    assert json.loads(loyal(home, "ingest", "canonical", str(first)).stdout)["event_log"]["events_folded"] == 0
