"""The suppression list: customers never to be contacted, scored or served as themselves again (`loyal forget`
puts them there). It holds SHA-256 hashes of their ids, not the ids; ingest, campaigns and the service check it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from loyal.store import write_atomically

SUPPRESSION = "suppression.parquet"  # in $LOYAL_HOME


def customer_hash(customer_id: str) -> str:
    return hashlib.sha256(str(customer_id).encode()).hexdigest()


def suppressed_hashes(home: Path) -> frozenset[str]:
    path = home / SUPPRESSION
    return frozenset(pd.read_parquet(path)["customer_hash"]) if path.exists() else frozenset()


def suppressed(home: Path, customer_ids) -> np.ndarray:
    """Whether each id is on the suppression list."""
    hashes = suppressed_hashes(home)
    if not hashes:
        return np.zeros(len(customer_ids), dtype=bool)
    return np.array([customer_hash(c) in hashes for c in customer_ids], dtype=bool)


def suppress(home: Path, customer_ids: set[str]) -> int:
    """Put these customers on the suppression list; how many were not on it yet."""
    known = suppressed_hashes(home)
    new = sorted({customer_hash(c) for c in customer_ids} - known)
    if new:
        write_atomically(pd.DataFrame({"customer_hash": sorted(known) + new}), home / SUPPRESSION)
    return len(new)
