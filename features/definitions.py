"""The Feast feature repo: entities, sources, feature views and the FeatureServices models are trained and served on.

Schemas come from the feature catalogue in `compute.py`, so a feature's name is written once. Each
`loyal features build` writes its offline data to a folder of its own under $LOYAL_HOME/feast/offline and applies
these views pointed at that folder.
A view's `freshness_days` tag is how old its newest value may be before reading it gives a warning.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float64, Int64, String

from loyal.errors import LoyalError
from loyal.features.compute import (
    CUSTOMER_BEHAVIOUR,
    CUSTOMER_PROFILE,
    EVENT_TIMESTAMP,
    ITEM_STATISTICS,
)
from loyal.noise import silence_third_parties
from loyal.schema import COUNTRY, CUSTOMER_ID, ITEM_ID, LOYALTY_TIER

# Importing Feast makes every library's DeprecationWarnings visible (`warnings.simplefilter("once",
# DeprecationWarning)` in feast.feature_store, feature_view, ...): put the filters of third-party noise back in front.
silence_third_parties()

OFFLINE_DIR = "offline"
FEAST_TYPES = {"int": Int64, "float": Float64, "str": String, "bool": Bool}
UNBOUNDED = timedelta(0)  # Feast: no TTL. Every snapshot carries every known entity, so the latest row is fresh.


def _schema(catalogue: dict[str, str]) -> list[Field]:
    return [Field(name=name, dtype=FEAST_TYPES[kind]) for name, kind in catalogue.items()]


def file_source(view: str, path: str) -> FileSource:
    """A view's rows in a parquet file (the embedded engine's), which Feast's DuckDB offline store reads."""
    return FileSource(name=f"{view}_source", path=path, timestamp_field=EVENT_TIMESTAMP)


def _view(name: str, entity: Entity, catalogue: dict[str, str], description: str, freshness_days: int | None = None):
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=UNBOUNDED,
        schema=_schema(catalogue),
        source=file_source(name, f"{OFFLINE_DIR}/{name}.parquet"),
        description=description,
        tags={"freshness_days": str(freshness_days)} if freshness_days else {},
    )


customer = Entity(
    name="customer", join_keys=[CUSTOMER_ID], value_type=ValueType.STRING, description="A retailer's customer"
)
item = Entity(name="item", join_keys=[ITEM_ID], value_type=ValueType.STRING, description="A product (stock code)")

customer_behaviour = _view(
    "customer_behaviour",
    customer,
    CUSTOMER_BEHAVIOUR,
    "Recency, frequency, spend, returns, channels and browsing, as of each daily snapshot",
    freshness_days=2,
)
customer_profile = _view(
    "customer_profile", customer, CUSTOMER_PROFILE, "Country, loyalty tier and email consent (null where unknown)"
)
item_statistics = _view(
    "item_statistics",
    item,
    ITEM_STATISTICS,
    "Buyers, revenue, price, repeat rate and trend of each item, as of each daily snapshot",
    freshness_days=2,
)

VIEWS = (customer_behaviour, customer_profile, item_statistics)

churn_v1 = FeatureService(
    name="churn_v1",
    features=[customer_behaviour, customer_profile[[COUNTRY, LOYALTY_TIER]]],
    description="Churn and value models: a customer's behaviour and profile",
)
offers_v1 = FeatureService(
    name="offers_v1",
    features=[
        customer_behaviour[
            [
                "recency_days",
                "tenure_days",
                "orders_90d",
                "orders_365d",
                "spend_90d",
                "spend_365d",
                "avg_order_value_365d",
                "spend_trend",
                "views_30d",
                "add_to_carts_30d",
            ]
        ],
        customer_profile,
        item_statistics,
    ],
    description="Recommendation re-ranking and offers: rows are (customer, item) pairs",
)
SERVICES = (churn_v1, offers_v1)


def require_service(name: str) -> str:
    """`name` when it is one of the repo's FeatureServices; otherwise an error naming those there are."""
    known = [service.name for service in SERVICES]
    if name not in known:
        raise LoyalError(f"unknown feature service {name!r}: choose one of {', '.join(known)}")
    return name
CUSTOMER_VIEWS = (customer_behaviour, customer_profile)  # what a customer-only entity file can be joined with
