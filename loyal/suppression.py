"""The suppression list: customers never to be contacted, scored or served as themselves again (`loyal forget`
puts them there). It holds keyed hashes of their ids (HMAC-SHA256 with the home's secret key), not the ids: short
ids hashed without a key are reversed by trying them all, these cannot be without the key. Ingest, campaigns,
`loyal recommend` and the service check it.

A list written before the key existed holds plain SHA-256 hashes (column `customer_hash`); it is still obeyed.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import numpy as np
import pandas as pd

from loyal.home import Home, secret_key
from loyal.store import write_atomically

KEYED = "customer_hmac"
UNKEYED = "customer_hash"  # lists written before the key


class Suppression:
    """The list, for membership of ids. It looks at the file on every question and reads it again when it changed,
    so a long-running process (the service) obeys a `loyal forget` from its next answer on, with no restart."""

    def __init__(self, home: Path):
        self.path, self.key_path = Home(home).suppression, Home(home).secret_key
        self.stamp: tuple[int, int] | None = None
        self.key, self.keyed, self.unkeyed = b"", frozenset(), frozenset()
        self._read_if_changed()

    def _read_if_changed(self) -> None:
        try:
            status = self.path.stat()
            stamp = (status.st_ino, status.st_mtime_ns)  # a rewrite is a new file: its inode tells it too
        except FileNotFoundError:
            stamp = None
        if stamp == self.stamp:
            return
        frame = pd.read_parquet(self.path) if stamp is not None else pd.DataFrame({KEYED: []})
        # Read, never made, here: a keyed entry exists only once `suppress` made the key.
        self.key = self.key_path.read_bytes() if self.key_path.exists() else b""
        self.keyed = frozenset(frame[KEYED].dropna()) if KEYED in frame else frozenset()
        self.unkeyed = frozenset(frame[UNKEYED].dropna()) if UNKEYED in frame else frozenset()
        self.stamp = stamp

    def __len__(self) -> int:
        return len(self.keyed) + len(self.unkeyed)

    def contains(self, customer_ids) -> np.ndarray:
        """Whether each id is on the list (as it is now)."""
        self._read_if_changed()
        if not len(self):
            return np.zeros(len(customer_ids), dtype=bool)
        return np.array([keyed_hash(self.key, c) in self.keyed
                         or (bool(self.unkeyed) and _unkeyed_hash(c) in self.unkeyed) for c in customer_ids],
                        dtype=bool)


def keyed_hash(key: bytes, customer_id) -> str:
    return hmac.new(key, str(customer_id).encode(), hashlib.sha256).hexdigest()


def _unkeyed_hash(customer_id) -> str:
    return hashlib.sha256(str(customer_id).encode()).hexdigest()


def suppressed(home: Path, customer_ids) -> np.ndarray:
    """Whether each id is on the suppression list."""
    return Suppression(home).contains(customer_ids)


def suppress(home: Path, customer_ids: set[str]) -> int:
    """Put these customers on the suppression list; how many were not on it yet. Only a holder of the write lock
    calls this."""
    current = Suppression(home)
    key = secret_key(home)
    on_list = current.contains(sorted(customer_ids))
    new = sorted({keyed_hash(key, c) for c, listed in zip(sorted(customer_ids), on_list) if not listed})
    if new:
        keyed = sorted(current.keyed) + new
        unkeyed = sorted(current.unkeyed)
        rows = max(len(keyed), len(unkeyed))
        frame = pd.DataFrame({KEYED: keyed + [None] * (rows - len(keyed))})
        if unkeyed:
            frame[UNKEYED] = unkeyed + [None] * (rows - len(unkeyed))
        write_atomically(frame, Home(home).suppression)
    return len(new)
