"""The offer service the web shop calls: BentoML 1.4 in front of `engine.Engine`.

`loyal serve --port P` starts it on 127.0.0.1:P (BentoML adds /livez, /readyz, /metrics and the OpenAPI page at
/docs). Requests are the Pydantic models of `schemas.py`, so a malformed one is a 400 that names the field; an
unknown item for similar_items is a 404; nothing a client sends gives a 500. Logs carry the route, status and
latency of each request, never its body: no customer id reaches them.
"""

from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound
from pydantic.warnings import PydanticDeprecatedSince211

from loyal.serving import schemas
from loyal.serving.engine import Engine, UnknownItem

POLICY_ENV = "LOYAL_POLICY"  # another offer policy file than the one shipped
TRACING_ENV = "LOYAL_TRACING"  # set to 1 to trace the API routes (with an exporter in a BentoML config file)
API_ROUTES = ["/recommend", "/churn", "/offers"]
# BentoML 1.4 reads `model_fields` from each request's instance; Pydantic 2.11 warns about it on every request.
warnings.filterwarnings("ignore", category=PydanticDeprecatedSince211, module="_bentoml_impl")


@bentoml.service(
    name="loyal",
    workers=2,  # each worker loads every model; two use both cores of the 2-core machines we measure on
    traffic={"timeout": 10},
    # BentoML records no trace unless an exporter is configured, yet OpenTelemetry's middleware still builds a span
    # for every request: 0.4 ms of a 2 ms offer, and the cause of a quarter of its tail. Off for the API routes
    # unless asked for.
    tracing={} if os.environ.get(TRACING_ENV) == "1" else {"excluded_urls": API_ROUTES},
    logging={"access": {"enabled": True, "request_content_length": True, "request_content_type": True}},
)
class Loyal:
    def __init__(self) -> None:
        from loyal.home import loyal_home

        policy = os.environ.get(POLICY_ENV)
        self.engine = Engine(loyal_home(), Path(policy) if policy else None)
        # Half a million objects loaded for good (models, Feast, MLflow): out of the collector's sight, so that a
        # full collection set off by a big /churn request does not rescan them (its slowest answers 580 -> 300 ms).
        gc.collect()
        gc.freeze()

    # /recommend and /offers answer in about a millisecond of CPU, on the event loop itself: handing them to a thread
    # (BentoML's way with a plain method) cost more than the answer. /churn, up to a thousand customers and 100 ms,
    # stays on a thread so that it does not hold up the small requests queued behind it.
    @bentoml.api(route="/recommend", input_spec=schemas.RecommendRequest, output_spec=schemas.RecommendResponse)
    async def recommend(self, **request: Any) -> schemas.RecommendResponse:
        """A product rail for one customer: for_you, buy_again, discover, similar_items or trending."""
        try:
            return self.engine.recommend(schemas.RecommendRequest(**request))
        except UnknownItem as error:
            raise NotFound(str(error)) from None

    @bentoml.api(route="/churn", input_spec=schemas.ChurnRequest, output_spec=schemas.ChurnResponse)
    def churn(self, **request: Any) -> schemas.ChurnResponse:
        """Churn risk, expected value, segment and top drivers for up to 1,000 customers."""
        return self.engine.churn_response(schemas.ChurnRequest(**request))

    @bentoml.api(route="/offers", input_spec=schemas.OfferRequest, output_spec=schemas.OfferResponse)
    async def offers(self, **request: Any) -> schemas.OfferResponse:
        """One personalised offer: recommended items and an incentive chosen by the offer policy."""
        return self.engine.offer(schemas.OfferRequest(**request))
