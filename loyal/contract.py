"""The value rules of the canonical contract (DESIGN.md), declared once with pandera and applied by every ingest
adapter to its typed rows before they are kept.

Each rule's name is the quarantine reason of a row that breaks it. A row breaking several is set aside for the
first, in the order they are declared. Types are the adapters' job (`schema.py` holds them); this holds what a
well-typed value may be:

- timestamps between `earliest` (default 1990-01-01) and one day after the ingest (`*_out_of_range`): a row dated
  2199 would otherwise ask the feature build for a snapshot every day until then;
- unit prices and item prices at most `max_price` (default 100,000 a unit), quantities at most `max_quantity` units
  either way (default 10,000): `extreme_*`;
- ids (customer, item, order) of at most MAX_ID_LENGTH characters, the API's limit (`*_too_long`), without control
  characters (`bad_*`). An empty id, or one that spells a missing value ("NaN", "null", "None", "N/A"), is missing
  (`missing_*`);
- channels among schema.CHANNELS; common other names are mapped onto them first (online, website: web; mobile,
  ios, android: app; in-store, pos, shop: store), and any other is `unknown_channel`;
- free text (descriptions, categories, countries, loyalty tiers) is cut at MAX_TEXT_LENGTH characters, so that no
  one row can make every answer that shows it large.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pandera.pandas as pa

from loyal import schema as s

MISSING_WORDS = frozenset({"nan", "null", "none", "na", "n/a", "#n/a", "nil", "undefined"})
CHANNEL_NAMES = {
    "web": "web", "online": "web", "website": "web", "webshop": "web", "ecommerce": "web", "internet": "web",
    "desktop": "web",
    "app": "app", "mobile": "app", "mobileapp": "app", "ios": "app", "android": "app",
    "store": "store", "instore": "store", "shop": "store", "pos": "store", "retail": "store", "offline": "store",
}
ID_COLUMNS = (s.CUSTOMER_ID, s.ITEM_ID, s.ORDER_ID)
TEXT_COLUMNS = (s.DESCRIPTION, s.CATEGORY, s.COUNTRY, s.LOYALTY_TIER)
TIME_COLUMNS = (s.TIMESTAMP, s.SIGNUP_DATE)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Limits:
    """What a value may be. The defaults suit a retailer selling to people; a wholesaler may raise the caps."""
    earliest: datetime = datetime(1990, 1, 1, tzinfo=timezone.utc)
    latest: datetime = field(default_factory=lambda: _now() + timedelta(days=1))
    max_price: float = 100_000.0
    max_quantity: int = 10_000


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The rewrites the contract allows instead of setting a row aside: ids that spell a missing value become
    missing, channel names map onto the known ones, free text is cut to length. A new frame."""
    frame = frame.copy()
    for column in ID_COLUMNS:
        if column in frame:
            values = frame[column].astype("string").str.strip()
            frame[column] = values.mask(values.str.lower().isin(MISSING_WORDS).fillna(False) | (values == ""))
    for column in TEXT_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype("string").str.slice(0, s.MAX_TEXT_LENGTH)
    if s.CHANNEL in frame:
        raw = frame[s.CHANNEL].astype("string")
        key = raw.str.lower().str.replace(r"[\s_\-]", "", regex=True)
        frame[s.CHANNEL] = key.map(CHANNEL_NAMES).astype("string").fillna(raw)
    return frame


CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"  # never in an id: rows and events holding one are set aside


def _rules(table: s.Table, limits: Limits) -> pa.DataFrameSchema:
    """The table's rules as a pandera schema; each check named by its quarantine reason."""
    columns: dict[str, pa.Column] = {}
    for name in table.columns:
        checks = []
        if name in ID_COLUMNS:
            checks += [pa.Check(lambda v: v.str.len() <= s.MAX_ID_LENGTH, name=f"{name}_too_long"),
                       pa.Check(lambda v: ~v.str.contains(CONTROL_CHARACTERS, regex=True), name=f"bad_{name}")]
        if name in TIME_COLUMNS:
            checks.append(pa.Check.in_range(limits.earliest, limits.latest, error=f"{name}_out_of_range"))
        if name in (s.UNIT_PRICE, s.PRICE):
            checks.append(pa.Check.le(limits.max_price, error=f"extreme_{name}"))
        if name == s.QUANTITY:
            checks.append(pa.Check(lambda v: v.abs() <= limits.max_quantity, name="extreme_quantity"))
        if name == s.CHANNEL:
            checks.append(pa.Check.isin(s.CHANNELS, error="unknown_channel"))
        if checks:
            columns[name] = pa.Column(checks=checks, nullable=True, required=False)
    return pa.DataFrameSchema(columns)


def broken_rules(frame: pd.DataFrame, table: s.Table, limits: Limits) -> pd.Series:
    """Each row's first broken rule (its quarantine reason), or None where it keeps them all. The frame holds the
    table's columns, typed and normalised, with any index."""
    reasons = pd.Series(None, index=frame.index, dtype="object")
    if frame.empty:
        return reasons
    rules = _rules(table, limits)
    try:
        rules.validate(frame.reset_index(drop=True), lazy=True)
        return reasons
    except pa.errors.SchemaErrors as errors:
        failures = errors.failure_cases
    failures = failures[failures["index"].notna()]
    order = {str(check.error or check.name): rank for rank, check in
             enumerate(check for column in rules.columns.values() for check in column.checks)}
    first = (failures.assign(rank=failures["check"].map(order))
             .sort_values("rank").drop_duplicates("index"))
    positions = first["index"].astype(np.int64).to_numpy()
    reasons.iloc[positions] = first["check"].to_numpy()
    return reasons
