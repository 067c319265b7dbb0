"""The canonical tables on disk: parquet files under LOYAL_HOME/canonical, named by `manifest.json`.

The manifest is the commit point. A `Staging` writes each changed table to a file of a new generation beside the
old ones and, at `commit()`, renames a new manifest naming them over the old manifest: every table of one ingest
(or one erasure) becomes visible at once, and a writer killed at any moment leaves the previous manifest, and so the
previous tables, as they were. Files of older generations stay until the next writer starts (a reader that read
the previous manifest may still be opening them); an erasure removes them at once.
Fact tables (transactions, events) stream in chunks, so a million customers' history never has to sit in
memory at once; entity tables (customers, items) are small and upserted in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loyal.errors import LoyalError
from loyal.home import Home
from loyal.schema import CUSTOMER_ID, TABLES, TIMESTAMP, TRANSACTIONS, Table

BATCH_ROWS = 1 << 20
MANIFEST = "manifest.json"


def manifest(home: Path) -> dict:
    """{"generation": n, "tables": {table name: file name under canonical/}, "events_folded": the sequence number of
    the last event of the log in those tables}. A home written before manifests holds one file per table, named
    after it: generation 0."""
    try:
        current = json.loads((Home(home).canonical / MANIFEST).read_text())
    except FileNotFoundError:
        folder = Home(home).canonical
        current = {"generation": 0,
                   "tables": {name: f"{name}.parquet" for name in TABLES if (folder / f"{name}.parquet").exists()}}
    return {"events_folded": 0} | current


def table_path(home: Path, table: Table) -> Path | None:
    """The file holding a canonical table now, or None when nothing has been ingested into it yet."""
    name = manifest(home)["tables"].get(table.name)
    return None if name is None else Home(home).canonical / name


def _write_manifest(home: Path, tables: dict[str, str], generation: int, events_folded: int) -> None:
    """Switch to a new manifest: written beside the old one, flushed, renamed over it (the commit)."""
    folder = Home(home).canonical
    folder.mkdir(parents=True, exist_ok=True)
    for name in tables.values():
        _flush(folder / name)
    tmp = folder / f".{MANIFEST}.tmp"
    with open(tmp, "w") as handle:
        json.dump({"generation": generation, "tables": dict(sorted(tables.items())), "events_folded": events_folded},
                  handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / MANIFEST)
    _flush(folder)


def _flush(path: Path) -> None:
    """Make a written file (or a rename in a folder) durable before it is pointed at."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_unreferenced_tables(home: Path, keep: set[str] = frozenset()) -> int:
    """Remove the table files under canonical/ that the manifest does not name (and that `keep` does not): older
    generations, and what a writer killed before its commit left. Only a holder of the write lock calls this."""
    folder = Home(home).canonical
    if not folder.exists():
        return 0
    wanted = set(manifest(home)["tables"].values()) | set(keep) | {MANIFEST}
    removed = 0
    for path in folder.iterdir():
        if path.is_file() and path.name not in wanted:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def read_table(home: Path, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    """A canonical table (only `columns`, when given) as a DataFrame, or None when nothing has been ingested into it
    yet."""
    for attempt in range(3):
        path = table_path(home, TABLES[name])
        if path is None:
            return None
        try:
            return pq.read_table(path, columns=columns).to_pandas()
        except FileNotFoundError:
            # A writer committed, and a later one cleared this generation, between reading the manifest and
            # opening the file: the new manifest names the table as it is now.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def to_arrow(frame: pd.DataFrame, table: Table) -> pa.Table:
    """Cast a frame holding the table's columns (missing optional ones are added as nulls) to its schema."""
    columns = {}
    for field in table.schema:
        if field.name in frame.columns:
            columns[field.name] = pa.array(frame[field.name], type=field.type, from_pandas=True)
        else:
            columns[field.name] = pa.nulls(len(frame), type=field.type)
    return pa.table(columns, schema=table.schema)


def row_hashes(data: pa.Table | pa.RecordBatch) -> np.ndarray:
    """A 64-bit hash of each whole row; equal rows hash equal.

    Strings go through pandas categoricals so that millions of rows hash without one Python object per cell.
    At 10^8 stored rows the chance of any collision stays below 10^-3.
    """
    as_pandas = data.to_pandas(strings_to_categorical=True)
    return pd.util.hash_pandas_object(as_pandas, index=False).to_numpy()


def _temporary_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


class _FactWriter:
    """Appends the rows not already stored, streaming into the new generation's file: the old file is copied batch
    by batch, then new chunks."""

    def __init__(self, old: Path | None, target: Path, table: Table):
        self.target, self.table = target, table
        self.old = pq.ParquetFile(old) if old is not None else None
        self.old_rows = self.old.metadata.num_rows if self.old else 0
        known = [row_hashes(b) for b in self.old.iter_batches(BATCH_ROWS)] if self.old else []
        self.known = np.sort(np.concatenate(known)) if known else np.empty(0, dtype=np.uint64)
        self.writer: pq.ParquetWriter | None = None
        self.added = 0

    def add(self, chunk: pa.Table) -> None:
        chunk = chunk.cast(self.table.schema)
        if len(self.known):
            hashes = row_hashes(chunk)
            at = np.searchsorted(self.known, hashes).clip(0, len(self.known) - 1)
            chunk = chunk.filter(pa.array(self.known[at] != hashes))
        if chunk.num_rows == 0:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.target, self.table.schema, compression="zstd")
            if self.old is not None:
                for batch in self.old.iter_batches(BATCH_ROWS):
                    self.writer.write_batch(batch)
        self.writer.write_table(chunk)
        self.added += chunk.num_rows

    def finish(self) -> tuple[bool, dict[str, int]]:
        """(whether the table has a new file, its counts)."""
        written = self.writer is not None
        if written:
            self.writer.close()
        elif self.old is None:  # nothing added to a table that did not exist: still write it, empty
            pq.write_table(self.table.schema.empty_table(), self.target)
            written = True
        return written, {"rows_added": self.added, "rows_total": self.old_rows + self.added}

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.target.unlink(missing_ok=True)


def _upsert_entities(old_path: Path | None, target: Path, table: Table,
                     chunks: list[pa.Table]) -> tuple[bool, dict[str, int]]:
    """Upsert by key: a value in the new rows replaces the stored one; a missing value keeps it. (Whether the table
    has a new file, its counts.)"""
    new = pa.concat_tables([c.cast(table.schema) for c in chunks])
    old = pq.read_table(old_path) if old_path is not None else None
    if old is None:
        merged, added = new, new.num_rows
    else:
        key = list(table.key)
        old_df, new_df = old.to_pandas().set_index(key), new.to_pandas().set_index(key)
        added = int((~new_df.index.isin(old_df.index)).sum())
        combined = new_df.combine_first(old_df)[[c for c in table.columns if c not in key]].reset_index()
        merged = to_arrow(combined, table)
        if merged.equals(old):
            return False, {"rows_added": 0, "rows_total": old.num_rows}
    pq.write_table(merged, target, compression="zstd")
    return True, {"rows_added": added, "rows_total": merged.num_rows}


class Staging:
    """New versions of the canonical tables, written as the next generation's files and made visible together by
    commit(), which switches the manifest. Only a holder of the write lock stages."""

    def __init__(self, home: Path):
        self.home = home
        self.current = manifest(home)
        self.generation = self.current["generation"] + 1
        self.events_folded = self.current["events_folded"]  # moved on by events.fold
        self.facts: dict[str, _FactWriter] = {}
        self.entities: dict[str, list[pa.Table]] = {}

    def _old(self, name: str) -> Path | None:
        file = self.current["tables"].get(name)
        return None if file is None else Home(self.home).canonical / file

    def _target(self, name: str) -> Path:
        folder = Home(self.home).canonical
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.{self.generation}.parquet"

    def add(self, name: str, chunk: pa.Table) -> None:
        table = TABLES[name]
        if table.key is None:
            if name not in self.facts:
                self.facts[name] = _FactWriter(self._old(name), self._target(name), table)
            self.facts[name].add(chunk)
        else:
            self.entities.setdefault(name, []).append(chunk)

    def commit(self) -> dict[str, dict[str, int]]:
        """Switch to a manifest naming every table that changed; return rows added and total per table."""
        written: list[str] = []
        report: dict[str, dict[str, int]] = {}
        try:
            for name, writer in self.facts.items():
                changed, report[name] = writer.finish()
                if changed:
                    written.append(name)
            for name, chunks in self.entities.items():
                changed, report[name] = _upsert_entities(self._old(name), self._target(name), TABLES[name], chunks)
                if changed:
                    written.append(name)
            if written or self.events_folded != self.current["events_folded"]:
                tables = self.current["tables"] | {name: self._target(name).name for name in written}
                _write_manifest(self.home, tables, self.generation, self.events_folded)
        except BaseException:
            self.abort()
            raise
        # The previous generation goes at once rather than at the next writer's start: a table can be gigabytes, and
        # a reader that opened the manifest before the switch reads the new one instead (read_table retries).
        discard_unreferenced_tables(self.home)
        return report

    def abort(self) -> None:
        for writer in self.facts.values():
            writer.abort()
        for name in self.entities:
            self._target(name).unlink(missing_ok=True)


def day_after_last_purchase(home: Path):
    """The day after the last transaction (a date), from the timestamp column alone: a million customers' table is
    15 million rows, and its other columns are not needed to date it."""
    path = table_path(home, TRANSACTIONS)
    last = pc.max(pq.read_table(path, columns=[TIMESTAMP])[TIMESTAMP]).as_py() if path is not None else None
    if last is None:
        raise LoyalError(f"no transactions under {home} yet: ingest data first (`loyal ingest ...`)")
    return (pd.Timestamp(last) + pd.Timedelta(days=1)).date()


def write_atomically(frame: pd.DataFrame, output: Path) -> None:
    """Write a .csv or .parquet beside the target and rename it, so a failure never leaves a half-written file."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        if output.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def drop_customers(home: Path, customer_ids: set[str]) -> dict[str, int]:
    """Remove every row of these customers from the canonical tables that hold customers, as one new generation,
    and every older generation's file with them; rows removed per table. Only a holder of the write lock calls
    this."""
    current = manifest(home)
    generation, tables, removed = current["generation"] + 1, dict(current["tables"]), {}
    folder = Home(home).canonical
    for name, table in TABLES.items():
        if CUSTOMER_ID not in table.columns or name not in tables:
            continue
        target = folder / f"{name}.{generation}.parquet"
        removed[name] = _copy_without(folder / tables[name], target, customer_ids)
        if removed[name]:
            tables[name] = target.name
        else:
            target.unlink()
    if any(removed.values()):
        _write_manifest(home, tables, generation, current["events_folded"])
    discard_unreferenced_tables(home)  # the older generations still hold the erased rows
    return removed


def without_customers(path: Path, customer_ids: set[str]) -> int:
    """Rewrite a parquet file (an offline feature file) without these customers' rows: streamed into a file beside
    it, and swapped in only when something was removed; rows removed."""
    tmp = _temporary_beside(path)
    try:
        dropped = _copy_without(path, tmp, customer_ids)
        if dropped:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return dropped


def _copy_without(source: Path, target: Path, customer_ids: set[str]) -> int:
    """Copy a parquet file, with its own schema, leaving out these customers' rows; rows left out."""
    wanted = pa.array(sorted(customer_ids), type=pa.string())
    reader, dropped = pq.ParquetFile(source), 0
    with pq.ParquetWriter(target, reader.schema_arrow, compression="zstd") as writer:
        for batch in reader.iter_batches(BATCH_ROWS):
            theirs = pc.fill_null(pc.is_in(batch.column(CUSTOMER_ID), value_set=wanted), False)
            dropped += pc.sum(theirs).as_py() or 0
            writer.write_batch(batch.filter(pc.invert(theirs)))
    return dropped
