"""What the offer service takes and gives, as Pydantic models: BentoML validates requests against them (a bad one is
a 400 naming the field) and writes the OpenAPI page from their descriptions and examples."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from loyal.events import MAX_BATCH, Event
from loyal.schema import Id

Rail = Literal["for_you", "buy_again", "discover", "similar_items", "trending", "recently_viewed"]
Channel = Literal["web", "app", "store", "email"]
MAX_K = 100
MAX_CHURN_IDS = 1_000
MAX_EXCLUDED = 1_000


class _Request(BaseModel):
    # A misspelt field is an error, not silently ignored; and JSON's types are taken as they are: "5" is not a
    # number, nor true a 1.
    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(_Request):
    customer_id: Id = Field(description="The retailer's customer id; one without a history gets trending items.",
                            examples=["17850"])
    rail: Rail = Field("for_you", description="Which product rail.")
    item_id: Optional[Id] = Field(None, description="For similar_items: the item to find similar ones to "
                                  "(default: the item the customer last viewed or bought).", examples=["85123A"])
    k: int = Field(10, ge=1, le=MAX_K, description="How many items, 1 to 100.")
    exclude_item_ids: list[Id] = Field([], max_length=MAX_EXCLUDED,
                                       description="Items never to show (already in the basket, out of stock).")
    channel: Channel = Field("web", description="Where the rail is shown.")

    # OpenAPI 3.0's singular `example` (BentoML's spec model takes no `examples` at the top of a schema).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "example": {"customer_id": "17850", "rail": "for_you", "k": 5, "exclude_item_ids": [], "channel": "web"}})


class Item(BaseModel):
    item_id: str
    description: Optional[str] = Field(None, description="The product's name, where the retailer gave one.")
    score: float = Field(description="The model's score; higher is better, comparable within one answer only.")
    reason: str = Field(description="Why it is shown, in words for the shopper.",
                        examples=["because you bought WHITE HANGING HEART T-LIGHT HOLDER", "popular this week"])


class RecommendResponse(BaseModel):
    customer_id: str
    rail: Rail
    cold_start: bool = Field(description="True when the customer is unknown and got trending items instead.")
    items: list[Item]
    model_versions: dict[str, str] = Field(description="Registered model and version that answered.",
                                           examples=[{"loyal-recommender": "3"}])


class ChurnRequest(_Request):
    customer_ids: list[Id] = Field(min_length=1, max_length=MAX_CHURN_IDS,
                                   description="Up to 1,000 customer ids.", examples=[["17850", "13047"]])


class ChurnScore(BaseModel):
    customer_id: str
    known: bool = Field(description="False when the online store has no features for the customer.")
    churn_probability: Optional[float] = Field(None, description="P(no purchase in the model's horizon).")
    expected_value: Optional[float] = Field(None, description="Expected spend over the horizon, currency units.")
    risk_segment: Literal["high", "medium", "low", "unknown"]
    top_drivers: list[str] = Field(description="What moves the risk most, with signed percentage points.",
                                   examples=[["days since the last purchase +16 pts", "country (France) +6 pts"]])


class ChurnResponse(BaseModel):
    customers: list[ChurnScore]
    horizon_days: int
    model_versions: dict[str, str]


class OfferRequest(_Request):
    customer_id: Id = Field(description="The retailer's customer id.", examples=["17850"])
    channel: Channel = Field("web", description="Where the offer is shown.")
    k: int = Field(5, ge=1, le=MAX_K, description="How many recommended items come with the offer.")


class Incentive(BaseModel):
    type: Literal["none", "percent_off", "free_shipping", "points_multiplier"]
    percent: Optional[int] = Field(None, description="For percent_off.")
    multiplier: Optional[float] = Field(None, description="For points_multiplier.")
    expected_gain: float = Field(description="The policy's expected gain of this incentive, currency units.")


class OfferResponse(BaseModel):
    customer_id: str
    cold_start: bool
    items: list[Item]
    incentive: Incentive
    reason_codes: list[str] = Field(examples=[["HIGH_CHURN_RISK", "LARGEST_EXPECTED_GAIN"]])
    churn_probability: Optional[float] = None
    expected_value: Optional[float] = None
    expires_at: datetime
    model_versions: dict[str, str]


class EventsRequest(_Request):
    events: list[Any] = Field(min_length=1, max_length=MAX_BATCH, description=(
        "Up to 1,000 events, each checked alone (see Event): a malformed one is rejected by its index, the others "
        f"are kept. Each event: {', '.join(Event.model_fields)}."))

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"example": {"events": [
        {"event_id": "e-1", "customer_id": "17850", "item_id": "85123A", "type": "view",
         "timestamp": "2026-12-01T10:15:00Z", "channel": "web"},
        {"event_id": "e-2", "customer_id": "17850", "item_id": "85123A", "type": "purchase", "quantity": 2,
         "unit_price": 2.55, "timestamp": "2026-12-01T10:17:00Z", "order_id": "o-9"}]}})


class Rejection(BaseModel):
    index: int = Field(description="The event's position in the request, from 0.")
    error: str = Field(description="The field and what is wrong with it.",
                       examples=["quantity: required for a purchase"])


class EventsResponse(BaseModel):
    accepted: int = Field(description="Events now in the log, on disk.")
    duplicates: int = Field(description="Events whose event_id the log already held (or held twice): not kept again.")
    rejected: list[Rejection]
    suppressed: int = Field(description="Events of customers erased by `loyal forget`: not kept.")
