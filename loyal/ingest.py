"""Ingest: a retailer's files in, the canonical tables of DESIGN.md out.

Each adapter reads its source format, types the values and decides, row by row, what to keep. A row set aside
goes to a quarantine file with the first rule it broke, so that rows read = rows kept + rows quarantined.
A file that cannot be read at all raises LoyalError before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from loyal import contract
from loyal import schema as s
from loyal.contacts import append_contacts
from loyal.contract import Limits
from loyal.errors import LoyalError
from loyal.events import fold
from loyal.home import Home
from loyal.locking import writing
from loyal.readers import read_raw
from loyal.store import Staging, to_arrow
from loyal.suppression import suppressed
from loyal.synthetic import (
    BrowsingTruth,
    SyntheticConfig,
    activity_blocks,
    build_world,
    campaign_history,
    campaign_truth,
    customers_table,
    ground_truth,
    items_table,
    save_truth,
)

FORMATS = ("online-retail", "canonical", "synthetic")


@dataclass(frozen=True)
class IngestConfig:
    # Above this share of unparseable values a column is in the wrong format (a whole file to fix), not a few
    # bad rows to quarantine.
    max_unparseable_share: float = 0.1
    # What a value may be (contract.py). The quantity cap: the UCI file's two largest lines (80,995 and 74,215
    # units) were entry errors cancelled in full within 25 minutes, and no genuine line comes near 10,000.
    limits: Limits = field(default_factory=Limits)


class Verdicts:
    """Each row's reason to be set aside; None while it is kept. The first rule that matches names it."""

    def __init__(self, rows: int):
        self.reasons = np.full(rows, None, dtype=object)

    def flag(self, mask, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool) & self.kept
        self.reasons[mask] = reason

    @property
    def kept(self) -> np.ndarray:
        return pd.isna(self.reasons)


@dataclass
class Batch:
    """What one source file gives: its raw rows with their verdicts, and the canonical frames of the kept rows."""

    source: Path
    table: str
    raw: pd.DataFrame
    verdicts: Verdicts
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def rows_read(self) -> int:
        return len(self.raw)


# ---------------------------------------------------------------------------------------------------------------
# Typing values. A value that is present but will not parse is "bad"; past max_unparseable_share the whole
# column is refused with one line naming the file, the column and an example.


def _normalise_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _flag_unparseable(values: pd.Series, parsed: pd.Series, kind: str, column: str, reason: str, source: Path,
                      verdicts: Verdicts, config: IngestConfig) -> None:
    """Flag rows whose present value did not parse; refuse the file when too many did not."""
    present = values.notna()
    bad = present & parsed.isna()
    n_bad, n_present = int(bad.sum()), int(present.sum())
    if n_present and n_bad > config.max_unparseable_share * n_present:
        example = str(values[bad].iloc[0])[:40]
        raise LoyalError(
            f"{source}: column '{column}' has {kind} in {n_bad:,} of {n_present:,} rows (first: {example!r})"
        )
    verdicts.flag(bad, reason)


def parse_timestamps(values: pd.Series, formats: tuple[str, ...] = ("ISO8601",)) -> pd.Series:
    """UTC timestamps; naive ones are taken as UTC. With several formats, the one that parses most wins."""
    best = None
    for fmt in formats:
        parsed = pd.to_datetime(values, format=fmt, utc=True, errors="coerce")
        if best is None or parsed.notna().sum() > best.notna().sum():
            best = parsed
    # Parquet stores microseconds; anything outside that range is as unusable as a typo.
    in_range = (best > pd.Timestamp("1900-01-01", tz="UTC")) & (best < pd.Timestamp("2200-01-01", tz="UTC"))
    return best.where(in_range).astype("datetime64[us, UTC]")


def parse_numbers(values: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(values.astype("string"), errors="coerce").astype("float64")
    return numbers.where(np.isfinite(numbers))


def parse_integers(values: pd.Series) -> pd.Series:
    numbers = parse_numbers(values)
    whole = (numbers == np.round(numbers)) & (numbers.abs() < 2**53)
    return numbers.where(whole).astype("Int64")


TRUE_WORDS = {"true", "t", "yes", "y", "1", "1.0"}
FALSE_WORDS = {"false", "f", "no", "n", "0", "0.0"}


def parse_booleans(values: pd.Series) -> pd.Series:
    lowered = values.astype("string").str.lower()
    result = pd.Series(pd.NA, index=values.index, dtype="boolean")
    result[lowered.isin(TRUE_WORDS).fillna(False).astype(bool)] = True
    result[lowered.isin(FALSE_WORDS).fillna(False).astype(bool)] = False
    return result


def _typed(values: pd.Series, arrow_type: pa.DataType, column: str, source: Path, verdicts: Verdicts,
           config: IngestConfig) -> pd.Series:
    """Parse a column to its canonical type, flagging rows whose present value will not parse."""
    if arrow_type == s.TIMESTAMP_TYPE:
        parsed, kind = parse_timestamps(values), "dates that do not parse"
    elif arrow_type == pa.int64():
        parsed, kind = parse_integers(values), "values that are not whole numbers"
    elif arrow_type == pa.float64():
        parsed, kind = parse_numbers(values), "values that are not numbers"
    elif arrow_type == pa.bool_():
        parsed, kind = parse_booleans(values), "values that are not true/false"
    else:
        return values
    _flag_unparseable(values, parsed, kind, column, f"bad_{column}", source, verdicts, config)
    return parsed


# ---------------------------------------------------------------------------------------------------------------
# canonical: the contract in DESIGN.md, as CSV, gzip CSV, Excel or parquet; a folder may hold one file per table.


def _shown(columns) -> str:
    """The columns a file has, for a one-line message: a header may hold a line break or a tab, so those are
    written escaped (as JSON writes them), and the list is cut at 200 characters."""
    return ", ".join(json.dumps(str(c), ensure_ascii=False)[1:-1] for c in columns)[:200]


def _match_columns(raw: pd.DataFrame, table: s.Table, source: Path) -> dict[str, str]:
    by_name = {_normalise_header(column): column for column in raw.columns}
    found = {c: by_name[_normalise_header(c)] for c in table.columns if _normalise_header(c) in by_name}
    missing = [c for c in table.required if c not in found]
    if missing:
        raise LoyalError(
            f"{source}: missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"for the {table.name} table (found: {_shown(raw.columns)})"
        )
    return found


def parse_canonical(raw: pd.DataFrame, table: s.Table, source: Path, config: IngestConfig) -> Batch:
    columns = _match_columns(raw, table, source)
    verdicts = Verdicts(len(raw))
    given = contract.normalise(pd.DataFrame({name: raw[column] for name, column in columns.items()}))
    frame = pd.DataFrame(index=raw.index)
    for name in table.required:
        verdicts.flag(given[name].isna(), f"missing_{name}")
    for field_ in table.schema:
        if field_.name not in columns:
            continue
        frame[field_.name] = _typed(given[field_.name], field_.type, field_.name, source, verdicts, config)
    if s.UNIT_PRICE in frame:
        verdicts.flag(frame[s.UNIT_PRICE] < 0, "negative_unit_price")
    if s.PRICE in frame:
        verdicts.flag(frame[s.PRICE] < 0, "negative_price")
    for lowered in (s.CHANNEL, s.EVENT_TYPE, s.LOYALTY_TIER):
        if lowered in frame:
            frame[lowered] = frame[lowered].str.lower()
    if s.CHANNEL in table.columns:
        channel = frame[s.CHANNEL] if s.CHANNEL in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
        frame[s.CHANNEL] = channel.fillna(s.DEFAULT_CHANNEL)
    if s.EVENT_TYPE in frame:
        verdicts.flag(~frame[s.EVENT_TYPE].isin(s.EVENT_TYPES).fillna(False).astype(bool), "unknown_event_type")
    frame = frame.reindex(columns=[c for c in table.columns if c in frame])
    _enforce_contract(frame, table, verdicts, config)
    if table.key is None:
        verdicts.flag(_duplicated_among_kept(frame, verdicts), "duplicate_row")
    else:
        # Two rows for one customer (or item): the later row is the newer word on it.
        later = frame[list(table.key)].duplicated(keep="last").to_numpy()
        verdicts.flag(later, f"superseded_{table.key[0]}")
    return Batch(source, table.name, raw, verdicts, {table.name: frame[verdicts.kept]})


def _enforce_contract(frame: pd.DataFrame, table: s.Table, verdicts: Verdicts, config: IngestConfig) -> None:
    """Set aside the kept rows that break a value rule of the contract, each for the first it breaks."""
    kept = verdicts.kept
    broken = pd.Series(None, index=frame.index, dtype="object")
    broken[kept] = contract.broken_rules(frame[kept], table, config.limits).to_numpy()
    for reason in broken.dropna().unique():
        verdicts.flag((broken == reason).to_numpy(), reason)


def _duplicated_among_kept(frame: pd.DataFrame, verdicts: Verdicts) -> np.ndarray:
    """Rows still kept that copy an earlier kept row exactly; the first copy stays."""
    kept = verdicts.kept
    duplicated = np.zeros(len(frame), dtype=bool)
    duplicated[kept] = frame[kept].duplicated(keep="first").to_numpy()
    return duplicated


def read_canonical(path: Path, config: IngestConfig) -> list[Batch]:
    """A folder holds files named after the tables (transactions.csv, ...) and always a transactions file. A single
    file is the table it is named after (customers.csv: a consent or loyalty update alone), or else transactions."""
    if path.is_dir():
        files = {}
        for candidate in sorted(path.iterdir()):
            name = candidate.name.split(".")[0].lower()
            if name in s.TABLES and candidate.is_file():
                if name in files:
                    raise LoyalError(f"{path}: holds two files for the {name} table "
                                     f"({files[name].name}, {candidate.name})")
                files[name] = candidate
        if s.TRANSACTIONS.name not in files:
            raise LoyalError(f"{path}: no transactions file in this folder (expected transactions.csv or .parquet)")
        # Read and check every file before any is merged: one bad file stops the whole ingest.
        return [parse_canonical(read_raw(f), s.TABLES[name], f, config) for name, f in files.items()]
    table = s.TABLES.get(path.name.split(".")[0].lower(), s.TRANSACTIONS)
    return [parse_canonical(read_raw(path), table, path, config)]


# ---------------------------------------------------------------------------------------------------------------
# online-retail: the UCI "Online Retail" export (InvoiceNo, StockCode, Description, Quantity, InvoiceDate,
# UnitPrice, CustomerID, Country); the "Online Retail II" headers (Invoice, Price, Customer ID) are read too.

RETAIL_HEADERS = {
    "invoiceno": "invoice", "invoice": "invoice",
    "stockcode": "stock_code",
    "description": "description",
    "quantity": "quantity",
    "invoicedate": "invoice_date",
    "unitprice": "unit_price", "price": "unit_price",
    "customerid": "customer", "customer": "customer",
    "country": "country",
}
RETAIL_REQUIRED = ("invoice", "stock_code", "quantity", "invoice_date", "unit_price", "customer")
# Stock codes that are money movements, not products: they would otherwise become the "most popular items".
NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "C2", "M", "D", "S", "B", "CRUK", "PADS", "BANK CHARGES", "AMAZONFEE"}
)
GIFT_VOUCHER = re.compile(r"^GIFT_")
# The UCI export's own date format; the copy in shared/ uses ISO.
RETAIL_DATE_FORMATS = ("ISO8601", "%m/%d/%Y %H:%M")


def parse_online_retail(raw: pd.DataFrame, source: Path, config: IngestConfig) -> Batch:
    columns = {}
    for column in raw.columns:
        name = RETAIL_HEADERS.get(_normalise_header(column))
        if name and name not in columns:
            columns[name] = column
    missing = [c for c in RETAIL_REQUIRED if c not in columns]
    if missing:
        raise LoyalError(
            f"{source}: not an Online Retail file, missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (found: {_shown(raw.columns)})"
        )
    col = {name: raw[column] for name, column in columns.items()}
    verdicts = Verdicts(len(raw))

    quantity = parse_integers(col["quantity"])
    price = parse_numbers(col["unit_price"])
    timestamp = parse_timestamps(col["invoice_date"], RETAIL_DATE_FORMATS)
    for name, parsed, kind in (
        ("quantity", quantity, "values that are not whole numbers"),
        ("unit_price", price, "values that are not numbers"),
        ("invoice_date", timestamp, "dates that do not parse"),
    ):
        verdicts.flag(col[name].isna(), f"missing_{name}")
        _flag_unparseable(col[name], parsed, kind, columns[name], f"bad_{name}", source, verdicts, config)

    # CustomerID is written as a float in some exports ("17850.0"). Stock codes come in two cases for one product
    # ("47566b" and "47566B": same description, same price). Cancellations become returns: their quantity is
    # already negative and they carry their customer, so they stay in transactions as returns of that customer,
    # with the cancellation invoice as their order.
    transactions = contract.normalise(pd.DataFrame({
        s.CUSTOMER_ID: col["customer"].str.replace(r"\.0+$", "", regex=True),
        s.ITEM_ID: col["stock_code"].str.upper(),
        s.TIMESTAMP: timestamp,
        s.QUANTITY: quantity,
        s.UNIT_PRICE: price,
        s.ORDER_ID: col["invoice"].str.upper(),
        s.CHANNEL: s.DEFAULT_CHANNEL,  # an online-only retailer
    }))
    item = transactions[s.ITEM_ID]
    is_cancellation = transactions[s.ORDER_ID].str.startswith("C").fillna(False).astype(bool)

    verdicts.flag(transactions[s.CUSTOMER_ID].isna(), "missing_customer_id")
    verdicts.flag(item.isna(), "missing_stock_code")
    verdicts.flag(item.isin(NON_PRODUCT_CODES) | item.str.match(GIFT_VOUCHER).fillna(False), "non_product_code")
    verdicts.flag(price <= 0, "non_positive_price")
    _enforce_contract(transactions, s.TRANSACTIONS, verdicts, config)
    verdicts.flag(quantity == 0, "zero_quantity")
    # A cancellation invoice takes goods back: a positive quantity on one contradicts itself.
    verdicts.flag(is_cancellation & (quantity > 0), "cancellation_with_positive_quantity")
    # An exact copy of an earlier line of the file (same invoice, item, quantity, time, price, customer).
    verdicts.flag(_duplicated_among_kept(raw, verdicts), "duplicate_row")

    kept = verdicts.kept
    transactions = transactions[kept]
    description = col.get("description", pd.Series(pd.NA, index=raw.index, dtype="string"))[kept]
    country = col.get("country", pd.Series(pd.NA, index=raw.index, dtype="string"))[kept]
    return Batch(source, s.TRANSACTIONS.name, raw, verdicts, {
        s.TRANSACTIONS.name: transactions,
        s.ITEMS.name: contract.normalise(_retail_items(transactions, description)),
        s.CUSTOMERS.name: contract.normalise(_retail_customers(transactions, country)),
    })


def _most_frequent(keys: pd.Series, values: pd.Series) -> pd.Series:
    pairs = pd.DataFrame({"key": keys.to_numpy(), "value": values.to_numpy()}).dropna()
    counts = pairs.value_counts(sort=True)  # most frequent first; ties broken by value order
    return counts.reset_index().drop_duplicates("key").set_index("key")["value"]


def _retail_items(transactions: pd.DataFrame, description: pd.Series) -> pd.DataFrame:
    """One row per item: its most frequent description and median selling price."""
    items = pd.DataFrame(index=pd.Index(transactions[s.ITEM_ID].unique(), name=s.ITEM_ID))
    items[s.DESCRIPTION] = _most_frequent(transactions[s.ITEM_ID], description)
    sales = transactions[transactions[s.QUANTITY] > 0]
    items[s.PRICE] = sales.groupby(s.ITEM_ID)[s.UNIT_PRICE].median()
    return items.reset_index()


def _retail_customers(transactions: pd.DataFrame, country: pd.Series) -> pd.DataFrame:
    """One row per customer with the country they order from most."""
    customers = pd.DataFrame(index=pd.Index(transactions[s.CUSTOMER_ID].unique(), name=s.CUSTOMER_ID))
    customers[s.COUNTRY] = _most_frequent(transactions[s.CUSTOMER_ID], country)
    return customers.reset_index()


# ---------------------------------------------------------------------------------------------------------------
# Committing: quarantine files, then the merge into the canonical tables, then the summary.


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_quarantine(batch: Batch, fmt: str, home: Path) -> Path | None:
    """The rows set aside, as read, with their data-row number and reason. Named by the file's content, so
    ingesting the same file again rewrites the same file with the same rows."""
    set_aside = ~batch.verdicts.kept
    if not set_aside.any():
        return None
    rows = batch.raw[set_aside].copy()
    rows.insert(0, "reason", batch.verdicts.reasons[set_aside])
    rows.insert(0, "row", np.flatnonzero(set_aside) + 1)
    rows = rows[~_erased(home, rows)]  # a forgotten customer's rows are not kept, not even set aside
    if rows.empty:
        return None
    stem = batch.source.name.split(".")[0]
    target = Home(home).quarantine / f"{fmt}-{stem}-{_sha256(batch.source)[:12]}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    rows.to_csv(tmp, index=False)
    return tmp


def commit(batches: list[Batch], fmt: str, source: str, home: Path) -> dict:
    """Write quarantine files and merge the kept rows, under the home's write lock; return the JSON summary of the
    ingest."""
    with writing(home, "ingest"):
        return _commit(batches, fmt, source, home)


def _commit(batches: list[Batch], fmt: str, source: str, home: Path) -> dict:
    staging = Staging(home)
    quarantine_tmp: list[Path] = []
    rows_erased = 0
    try:
        folded = fold(staging, home)
        for batch in batches:
            for name, frame in batch.frames.items():
                erased = _erased(home, frame)
                rows_erased += int(erased.sum())
                staging.add(name, to_arrow(frame[~erased], s.TABLES[name]))
            tmp = _write_quarantine(batch, fmt, home)
            if tmp is not None:
                quarantine_tmp.append(tmp)
        merged = staging.commit()
    except BaseException:
        staging.abort()
        for tmp in quarantine_tmp:
            tmp.unlink(missing_ok=True)
        raise
    quarantine_files = []
    for tmp in quarantine_tmp:
        final = tmp.with_name(tmp.name[1:-len(".tmp")])
        os.replace(tmp, final)
        quarantine_files.append(str(final))

    reasons: dict[str, int] = {}
    counts: dict[str, dict[str, int]] = {}
    for batch in batches:
        for reason, count in pd.Series(batch.verdicts.reasons[~batch.verdicts.kept]).value_counts().items():
            reasons[reason] = reasons.get(reason, 0) + int(count)
        entry = counts.setdefault(batch.table, {"rows_read": 0, "rows_kept": 0})
        entry["rows_read"] += batch.rows_read
        entry["rows_kept"] += int(batch.verdicts.kept.sum())
    summary = _summary(fmt, source, home, counts, reasons, merged, quarantine_files) | {"event_log": folded}
    if rows_erased:
        summary["rows_of_erased_customers_dropped"] = rows_erased
    return summary


def customer_column(frame: pd.DataFrame) -> str | None:
    """The column naming the customer, in canonical or raw export form (customer_id, CustomerID, Customer ID)."""
    for column in frame.columns:
        if str(column).lower().replace(" ", "").replace("_", "") == "customerid":
            return column
    return None


def normal_id(value) -> str:
    """A customer id as the canonical tables hold it: exports write 12583 as 12583.0."""
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") else text


def _erased(home: Path, frame: pd.DataFrame) -> np.ndarray:
    """Whether each row belongs to a customer on the suppression list (`loyal forget`)."""
    column = customer_column(frame)
    if column is None or frame.empty:
        return np.zeros(len(frame), dtype=bool)
    ids = frame[column].map(normal_id, na_action="ignore").fillna("").to_numpy(dtype=object)
    distinct, position = np.unique(ids.astype(str), return_inverse=True)  # a key hashes each id once, not each row
    return suppressed(home, distinct)[position]


def scrub_quarantine(home: Path, customer_ids: set[str]) -> int:
    """Remove these customers' rows from every quarantine file; rows removed."""
    removed = 0
    for path in sorted(Home(home).quarantine.glob("*.csv")):
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
        column = customer_column(rows)
        if column is None:
            continue
        theirs = rows[column].map(normal_id).isin(customer_ids)
        if theirs.any():
            tmp = path.with_name(f".{path.name}.tmp")
            rows[~theirs].to_csv(tmp, index=False)
            os.replace(tmp, path)
            removed += int(theirs.sum())
    return removed


def _summary(fmt: str, source: str, home: Path, counts: dict[str, dict[str, int]], reasons: dict[str, int],
             merged: dict[str, dict[str, int]], quarantine_files: list[str]) -> dict:
    """The JSON an ingest prints: totals over the source rows read (derived tables are not rows read), then
    each table's own counts, rows added and rows now stored."""
    tables: dict[str, dict[str, int]] = {}
    for name, entry in counts.items():
        tables[name] = {**entry, "rows_quarantined": entry["rows_read"] - entry["rows_kept"]}
    for name, entry in merged.items():
        tables.setdefault(name, {}).update(entry)
    rows_read = sum(entry["rows_read"] for entry in counts.values())
    rows_kept = sum(entry["rows_kept"] for entry in counts.values())
    return {
        "format": fmt,
        "source": source,
        "rows_read": rows_read,
        "rows_kept": rows_kept,
        "rows_quarantined": rows_read - rows_kept,
        "reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "tables": tables,
        "quarantine_files": quarantine_files,
        "loyal_home": str(home),
    }


def ingest_synthetic(config: SyntheticConfig, home: Path) -> dict:
    """Generate a synthetic retailer and ingest it; its planted truth goes to LOYAL_HOME/ground_truth."""
    if config.customers < 1 or config.days < 1:
        raise LoyalError("synthetic: --customers and --days must be at least 1")
    if config.campaigns < 0:
        raise LoyalError(f"synthetic: --campaigns must be 0 or more, not {config.campaigns}")
    try:
        config.campaign_days()
    except ValueError as error:
        raise LoyalError(f"synthetic: --campaigns {config.campaigns}: {error}") from None
    world = build_world(config)
    with writing(home, "ingest"):
        return _commit_synthetic(world, config, home)


def _commit_synthetic(world, config: SyntheticConfig, home: Path) -> dict:
    staging = Staging(home)
    counts: dict[str, dict[str, int]] = {}

    def add(name: str, chunk: pa.Table) -> None:
        # Generated rows satisfy the contract by construction: all are kept.
        entry = counts.setdefault(name, {"rows_read": 0, "rows_kept": 0})
        entry["rows_read"] += chunk.num_rows
        entry["rows_kept"] += chunk.num_rows
        staging.add(name, chunk)

    browsing = BrowsingTruth(home)
    try:
        folded = fold(staging, home)
        add(s.CUSTOMERS.name, customers_table(world))
        add(s.ITEMS.name, items_table(world))
        for transactions, events, browsed in activity_blocks(world):
            add(s.TRANSACTIONS.name, transactions)
            add(s.EVENTS.name, events)
            browsing.write(browsed)
        merged = staging.commit()
    except BaseException:
        staging.abort()
        browsing.abort()
        raise
    browsing.commit()
    truth = ground_truth(world)
    if config.campaigns:
        append_contacts(home, campaign_history(world))
        truth |= campaign_truth(world)
    save_truth(truth, home)
    source = f"synthetic(customers={config.customers}, days={config.days}, seed={config.seed}" + (
        f", campaigns={config.campaigns})" if config.campaigns else ")")
    return _summary("synthetic", source, home, counts, {}, merged, []) | {"event_log": folded}


def fold_events(home: Path) -> dict[str, int]:
    """Fold the event log's new events into the canonical tables alone (`loyal retrain` without a file): what was
    folded, in counts."""
    with writing(home, "ingest"):
        staging = Staging(home)
        try:
            folded = fold(staging, home)
            staging.commit()
        except BaseException:
            staging.abort()
            raise
    return folded


def ingest_file(fmt: str, path: Path, home: Path, config: IngestConfig = IngestConfig()) -> dict:
    """Ingest one file (or, for `canonical`, a folder of table files) into the canonical tables under home."""
    if fmt == "online-retail":
        batches = [parse_online_retail(read_raw(path), path, config)]
    elif fmt == "canonical":
        if not path.exists():
            raise LoyalError(f"{path}: no such file or folder")
        batches = read_canonical(path, config)
    else:
        raise LoyalError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return commit(batches, fmt, str(path), home)
