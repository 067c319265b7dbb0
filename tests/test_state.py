"""Customers' state in the online store (features/state.py), on SQLite and on a real Redis alike: written whole by
materialize, appended to by events at once, atomic under concurrent appends, trimmed to the latest lines, erased by
forget; and always equal to what `compute` makes of the canonical tables (batch = online)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from loyal.features import compute, engines
from loyal.schema import CUSTOMER_ID
from loyal.store import read_table

LOYAL = str(Path(sys.executable).parent / "loyal")


def loyal(home: Path, *args: str) -> subprocess.CompletedProcess:
    import os

    result = subprocess.run([LOYAL, *args], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "LOYAL_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return result


def batch_state(home: Path, customers: list[str]) -> dict[str, pd.DataFrame]:
    """What `compute` makes of the canonical tables now, for these customers."""
    history = engines.purchase_history(read_table(home, "transactions"))
    session = engines.session(read_table(home, "events"))
    return {kind: frame[frame[CUSTOMER_ID].isin(customers)].reset_index(drop=True)
            for kind, frame in (("history", history), ("session", session))}


def assert_same(online: dict[str, pd.DataFrame], batch: dict[str, pd.DataFrame]) -> None:
    for kind in ("history", "session"):
        pd.testing.assert_frame_equal(online[kind].reset_index(drop=True), batch[kind], check_dtype=False, obj=kind)


def _append(args) -> None:
    """One process appending events to one customer, a request at a time (as a worker of the service would)."""
    home, worker, n = args
    from loyal.events import EventLog
    from loyal.features.repo import online_state

    log, state = EventLog(home), online_state(home)
    for i in range(n):
        receipt = log.append([{"event_id": f"w{worker}-{i}", "customer_id": "busy", "item_id": f"i{i % 7}",
                               "type": "purchase", "quantity": 1, "unit_price": 1.0,
                               "timestamp": f"2026-11-{1 + i % 28:02d}T{worker:02d}:00:{i % 60:02d}Z"}])
        state.append_events(receipt.kept)


@pytest.mark.integration
def test_the_online_state_follows_events_and_equals_the_batch_state(tmp_path, home, online_store):
    from loyal.features.repo import online_state

    loyal(home, "ingest", "synthetic", "--customers", "150", "--days", "120", "--seed", "5")
    loyal(home, "features", "build")
    summary = json.loads(loyal(home, "features", "materialize").stdout)
    assert summary["customer_state"]["history_lines"] > 0 and summary["customer_state"]["session_events"] > 0
    customers = sorted(read_table(home, "transactions")[CUSTOMER_ID].unique())[:40] + ["never-seen"]
    state = online_state(home)
    assert_same(state.read(customers), batch_state(home, customers))

    # Events: in the online state as soon as they are taken, and equal to the batch state once folded.
    someone = customers[0]
    events = [{"event_id": f"e{i}", "customer_id": c, "item_id": f"item-{i % 5}", "type": kind,
               "timestamp": f"2026-11-20T10:{i:02d}:00Z", **({"quantity": 2, "unit_price": 1.5}
                                                              if kind == "purchase" else {})}
              for i, (c, kind) in enumerate([(someone, "purchase"), (someone, "view"), ("newcomer", "purchase"),
                                             ("newcomer", "add_to_cart"), (someone, "purchase")])]
    events += [{"event_id": f"v{i}", "customer_id": "browser", "item_id": f"item-{i}", "type": "view",
                "timestamp": f"2026-11-21T10:{i:02d}:00Z"} for i in range(compute.SESSION_EVENTS + 7)]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    loyal(home, "events", "push", str(path))
    now = state.read([someone, "newcomer", "browser"])
    assert {"e0", "e4"} <= set(now["history"]["order_id"]) and len(now["session"].query("customer_id == 'browser'")) \
        == compute.SESSION_EVENTS  # trimmed to the latest
    loyal(home, "ingest", "canonical", str(write_tiny(tmp_path)))  # folds the events into the tables
    assert_same(state.read([someone, "newcomer", "browser"]), batch_state(home, [someone, "newcomer", "browser"]))

    # A materialize now writes from the tables, which hold the events: the same state again.
    loyal(home, "features", "build")
    loyal(home, "features", "materialize")
    assert_same(state.read(customers + ["newcomer", "browser"]), batch_state(home, customers + ["newcomer", "browser"]))

    # Two processes appending to one customer at once lose nothing.
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_append, [(home, 1, 60), (home, 2, 60)]))
    assert len(state.read(["busy"])["history"]) == 120

    # Forgotten: no state left.
    erased = json.loads(loyal(home, "forget", someone, "busy").stdout)
    assert erased["online_state_lines"] > 120
    assert all(frame.empty for frame in state.read([someone, "busy"]).values())


def write_tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text("customer_id,item_id,timestamp,quantity,unit_price\nz1,item-0,2026-10-01,1,1.0\n")
    return path
