"""The canonical tables on disk: one parquet file per table under LOYAL_HOME/canonical.

A `Staging` writes the new version of each table to a temporary file beside it and renames them all over the
old ones only at `commit()`, so a failed or interrupted ingest leaves the previous tables as they were.
Fact tables (transactions, events) stream in chunks, so a million customers' history never has to sit in
memory at once; entity tables (customers, items) are small and upserted in memory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loyal.home import canonical_dir
from loyal.schema import TABLES, Table

BATCH_ROWS = 1 << 20


def table_path(home: Path, table: Table) -> Path:
    return canonical_dir(home) / f"{table.name}.parquet"


def read_table(home: Path, name: str) -> pd.DataFrame | None:
    """A canonical table as a DataFrame, or None when nothing has been ingested into it yet."""
    path = table_path(home, TABLES[name])
    if not path.exists():
        return None
    return pq.read_table(path).to_pandas()


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
    """Appends the rows not already stored, streaming: the old file is copied batch by batch, then new chunks."""

    def __init__(self, path: Path, table: Table):
        self.path, self.table = path, table
        self.old = pq.ParquetFile(path) if path.exists() else None
        self.old_rows = self.old.metadata.num_rows if self.old else 0
        known = [row_hashes(b) for b in self.old.iter_batches(BATCH_ROWS)] if self.old else []
        self.known = np.sort(np.concatenate(known)) if known else np.empty(0, dtype=np.uint64)
        self.tmp: Path | None = None
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
            self.tmp = _temporary_beside(self.path)
            self.writer = pq.ParquetWriter(self.tmp, self.table.schema, compression="zstd")
            if self.old is not None:
                for batch in self.old.iter_batches(BATCH_ROWS):
                    self.writer.write_batch(batch)
        self.writer.write_table(chunk)
        self.added += chunk.num_rows

    def finish(self) -> tuple[Path | None, dict[str, int]]:
        if self.writer is not None:
            self.writer.close()
        elif self.old is None:  # nothing added to a table that did not exist: still write it, empty
            self.tmp = _temporary_beside(self.path)
            pq.write_table(self.table.schema.empty_table(), self.tmp)
        return self.tmp, {"rows_added": self.added, "rows_total": self.old_rows + self.added}

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def _upsert_entities(path: Path, table: Table, chunks: list[pa.Table]) -> tuple[Path | None, dict[str, int]]:
    """Upsert by key: a value in the new rows replaces the stored one; a missing value keeps it."""
    new = pa.concat_tables([c.cast(table.schema) for c in chunks])
    old = pq.read_table(path) if path.exists() else None
    if old is None:
        merged, added = new, new.num_rows
    else:
        key = list(table.key)
        old_df, new_df = old.to_pandas().set_index(key), new.to_pandas().set_index(key)
        added = int((~new_df.index.isin(old_df.index)).sum())
        combined = new_df.combine_first(old_df)[[c for c in table.columns if c not in key]].reset_index()
        merged = to_arrow(combined, table)
        if merged.equals(old):
            return None, {"rows_added": 0, "rows_total": old.num_rows}
    tmp = _temporary_beside(path)
    pq.write_table(merged, tmp, compression="zstd")
    return tmp, {"rows_added": added, "rows_total": merged.num_rows}


class Staging:
    """New versions of the canonical tables, staged beside them and swapped in together by commit()."""

    def __init__(self, home: Path):
        self.home = home
        self.facts: dict[str, _FactWriter] = {}
        self.entities: dict[str, list[pa.Table]] = {}

    def add(self, name: str, chunk: pa.Table) -> None:
        table = TABLES[name]
        if table.key is None:
            if name not in self.facts:
                self.facts[name] = _FactWriter(table_path(self.home, table), table)
            self.facts[name].add(chunk)
        else:
            self.entities.setdefault(name, []).append(chunk)

    def commit(self) -> dict[str, dict[str, int]]:
        """Rename every staged table over its old version; return rows added and total per table."""
        staged: list[tuple[Path, Path]] = []
        report: dict[str, dict[str, int]] = {}
        try:
            for name, writer in self.facts.items():
                tmp, report[name] = writer.finish()
                if tmp is not None:
                    staged.append((tmp, writer.path))
            for name, chunks in self.entities.items():
                path = table_path(self.home, TABLES[name])
                tmp, report[name] = _upsert_entities(path, TABLES[name], chunks)
                if tmp is not None:
                    staged.append((tmp, path))
        except BaseException:
            self.abort()
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, path in staged:
            os.replace(tmp, path)
        return report

    def abort(self) -> None:
        for writer in self.facts.values():
            writer.abort()


def day_after_last_purchase(home: Path):
    """The day after the last transaction (a date), from the timestamp column alone: a million customers' table is
    15 million rows, and its other columns are not needed to date it."""
    import pyarrow.compute as pc

    from loyal.errors import LoyalError
    from loyal.schema import TIMESTAMP, TRANSACTIONS

    path = table_path(home, TRANSACTIONS)
    last = pc.max(pq.read_table(path, columns=[TIMESTAMP])[TIMESTAMP]).as_py() if path.exists() else None
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
    """Remove every row of these customers from the canonical tables that hold customers; rows removed per table."""
    from loyal.schema import CUSTOMER_ID

    return {table.name: without_customers(table_path(home, table), customer_ids)
            for table in TABLES.values() if CUSTOMER_ID in table.columns and table_path(home, table).exists()}


def without_customers(path: Path, customer_ids: set[str]) -> int:
    """Rewrite a parquet file (a canonical table, an offline feature file) without these customers' rows: streamed
    into a file beside it with its own schema, and swapped in only when something was removed; rows removed."""
    import pyarrow.compute as pc

    from loyal.schema import CUSTOMER_ID

    wanted = pa.array(sorted(customer_ids), type=pa.string())
    source, tmp, dropped = pq.ParquetFile(path), _temporary_beside(path), 0
    try:
        with pq.ParquetWriter(tmp, source.schema_arrow, compression="zstd") as writer:
            for batch in source.iter_batches(BATCH_ROWS):
                theirs = pc.fill_null(pc.is_in(batch.column(CUSTOMER_ID), value_set=wanted), False)
                dropped += pc.sum(theirs).as_py() or 0
                writer.write_batch(batch.filter(pc.invert(theirs)))
        if dropped:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return dropped
