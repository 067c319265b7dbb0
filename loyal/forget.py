"""Forgetting customers (the right to erasure): `loyal forget CUSTOMER_ID...`.

Their rows leave the canonical tables, the quarantine files, every kept build's offline features, the online store
and the contact history. They join the suppression list (hashes, not ids), which keeps them out of every later
ingest, training set and campaign, and which the running service reads to answer them as strangers. The audit
log records that an erasure happened, when, and how much it removed, never who.

Models trained before the erasure still hold the ids among their parameters; the next training no longer sees the
customers, and until then the suppression list masks them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from loyal.errors import LoyalError

AUDIT_LOG = "erasures.jsonl"  # in $LOYAL_HOME


def forget(home: Path, customer_ids: list[str]) -> dict:
    """Erase the customers everywhere Loyal keeps them; what was removed, in counts."""
    from loyal.serving.campaign import forget_contacts
    from loyal.features.online import erase
    from loyal.features.repo import feast_dir, forget_offline, open_store
    from loyal.ingest import normal_id, scrub_quarantine
    from loyal.schema import CUSTOMER_ID
    from loyal.store import drop_customers
    from loyal.suppression import suppress

    ids = {normal_id(c) for c in customer_ids if str(c).strip()}
    if not ids:
        raise LoyalError("name at least one customer id to forget")
    # Suppressed first: an ingest or campaign that runs meanwhile already leaves them out.
    removed: dict = {"suppressed_now": suppress(home, ids)}
    removed["canonical_rows"] = drop_customers(home, ids)
    removed["quarantine_rows"] = scrub_quarantine(home, ids)
    removed["offline_feature_rows"] = forget_offline(home, ids)
    removed["online_store_entries"] = (erase(open_store(home), CUSTOMER_ID, sorted(ids))
                                       if (feast_dir(home) / "registry.db").exists() else 0)
    removed["contact_history_rows"] = forget_contacts(home, ids)
    entry = {"erased_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "customers": len(ids)} | removed
    home.mkdir(parents=True, exist_ok=True)
    with (home / AUDIT_LOG).open("a") as log:
        log.write(json.dumps(entry) + "\n")
    return entry
