"""The canonical data contract (DESIGN.md): every column name lives here and nowhere else.

Adapters turn a retailer's files into these tables; features, training and serving read them. Importing the
names from this module instead of writing the strings keeps them from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pyarrow as pa
from pydantic import StringConstraints

CUSTOMER_ID = "customer_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
QUANTITY = "quantity"  # negative = a return
UNIT_PRICE = "unit_price"
ORDER_ID = "order_id"
CHANNEL = "channel"
EVENT_TYPE = "event_type"
COUNTRY = "country"
SIGNUP_DATE = "signup_date"
EMAIL_OPT_IN = "email_opt_in"
LOYALTY_TIER = "loyalty_tier"
DESCRIPTION = "description"
CATEGORY = "category"
PRICE = "price"

DEFAULT_CHANNEL = "web"
CHANNELS = ("web", "app", "store")  # where a purchase or a visit happened
EVENT_TYPES = ("view", "add_to_cart")
# The longest id (customer, item, order) that ingest keeps and the service accepts: ids are keys, not text.
MAX_ID_LENGTH = 64
# An id as the API and the event log take it: 1 to MAX_ID_LENGTH characters.
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
# Free text (an item's description, a category) is cut to this many characters at ingest: every answer that shows
# it stays small whatever one row of a file held.
MAX_TEXT_LENGTH = 200

# Timestamps are stored in UTC; a naive input timestamp is taken to be UTC already.
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Table:
    """One canonical table: its arrow schema, the columns a file must have, and how new rows merge in.

    `key` set: rows are entities (one per key) and a later ingest updates their attributes.
    `key` None: rows are facts; a row identical to one already stored is not added again.
    """

    name: str
    schema: pa.Schema
    required: tuple[str, ...]
    key: tuple[str, ...] | None = None

    @property
    def columns(self) -> list[str]:
        return self.schema.names


TRANSACTIONS = Table(
    "transactions",
    pa.schema(
        [
            (CUSTOMER_ID, pa.string()),
            (ITEM_ID, pa.string()),
            (TIMESTAMP, TIMESTAMP_TYPE),
            (QUANTITY, pa.int64()),
            (UNIT_PRICE, pa.float64()),
            (ORDER_ID, pa.string()),
            (CHANNEL, pa.string()),
        ]
    ),
    required=(CUSTOMER_ID, ITEM_ID, TIMESTAMP, QUANTITY, UNIT_PRICE),
)
EVENTS = Table(
    "events",
    pa.schema(
        [
            (CUSTOMER_ID, pa.string()),
            (ITEM_ID, pa.string()),
            (TIMESTAMP, TIMESTAMP_TYPE),
            (EVENT_TYPE, pa.string()),
            (CHANNEL, pa.string()),
        ]
    ),
    required=(CUSTOMER_ID, ITEM_ID, TIMESTAMP, EVENT_TYPE),
)
CUSTOMERS = Table(
    "customers",
    pa.schema(
        [
            (CUSTOMER_ID, pa.string()),
            (COUNTRY, pa.string()),
            (SIGNUP_DATE, TIMESTAMP_TYPE),
            (EMAIL_OPT_IN, pa.bool_()),
            (LOYALTY_TIER, pa.string()),
        ]
    ),
    required=(CUSTOMER_ID,),
    key=(CUSTOMER_ID,),
)
ITEMS = Table(
    "items",
    pa.schema(
        [
            (ITEM_ID, pa.string()),
            (DESCRIPTION, pa.string()),
            (CATEGORY, pa.string()),
            (PRICE, pa.float64()),
        ]
    ),
    required=(ITEM_ID,),
    key=(ITEM_ID,),
)

TABLES: dict[str, Table] = {t.name: t for t in (TRANSACTIONS, EVENTS, CUSTOMERS, ITEMS)}
