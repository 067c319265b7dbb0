"""Forgetting customers (the right to erasure): `loyal forget CUSTOMER_ID...`.

Their rows leave the event log, the canonical tables, the quarantine files, every kept build's offline features,
the online store and the contact history. They join the suppression list (hashes, not ids), which keeps them out of every later
ingest, training set and campaign, and which the running service reads to answer them as strangers. The audit
log records that an erasure happened, when, and how much it removed, never who.

Their state in the online store (history and session) goes too. Models hold items only, so nothing of them is left
in one: every rail answers them as a stranger at once. The suppression list guards the moments in between (in the
service, `loyal recommend` and campaigns).

An erasure killed part way leaves `erasure.pending` (when and how many, never who); the customers are on the
suppression list by then, and the same `loyal forget` run again removes what is left.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from loyal.errors import LoyalError
from loyal.events import EventLog
from loyal.features.online import erase
from loyal.features.repo import forget_offline, online_state, open_store
from loyal.ingest import normal_id, scrub_quarantine
from loyal.home import Home
from loyal.locking import writing
from loyal.schema import CUSTOMER_ID
from loyal.contacts import forget_contacts
from loyal.store import drop_customers
from loyal.suppression import suppress



def forget(home: Path, customer_ids: list[str]) -> dict:
    """Erase the customers everywhere Loyal keeps them; what was removed, in counts. Under the home's write lock, so
    no ingest, build or campaign runs meanwhile; taking it clears what interrupted writers left (a half-written
    build, a temporary table), so nothing of theirs outlives the erasure either."""
    ids = {normal_id(c) for c in customer_ids if str(c).strip()}
    if not ids:
        raise LoyalError("name at least one customer id to forget")
    with writing(home, "forget"):
        pending = Home(home).erasure_pending
        interrupted = pending.exists()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        pending.write_text(json.dumps({"started_at": started, "customers": len(ids)}) + "\n")
        # Suppressed first: should this erasure be interrupted, the customers are already left out of every later
        # ingest, campaign and answer, and running the same `loyal forget` again finishes the job.
        removed: dict = {"suppressed_now": suppress(home, ids)}
        removed["event_log_rows"] = _forget_events(home, ids)
        removed["canonical_rows"] = drop_customers(home, ids)
        removed["quarantine_rows"] = scrub_quarantine(home, ids)
        removed["offline_feature_rows"] = forget_offline(home, ids)
        state = online_state(home)
        removed["online_store_entries"] = erase(open_store(home), CUSTOMER_ID, sorted(ids)) if state else 0
        removed["online_state_lines"] = state.erase(ids) if state else 0
        removed["contact_history_rows"] = forget_contacts(home, ids)
        entry = {"erased_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "customers": len(ids)}
        entry |= removed | ({"after_an_interrupted_erasure": True} if interrupted else {})
        with Home(home).erasures.open("a") as log:
            log.write(json.dumps(entry) + "\n")
        pending.unlink()
    return entry


def _forget_events(home: Path, ids: set[str]) -> int:
    if not Home(home).events.exists():
        return 0
    log = EventLog(home)
    try:
        return log.forget(ids)
    finally:
        log.close()
