"""The offer service the web shop calls: BentoML 1.4 in front of `engine.Engine`.

`loyal serve --port P` starts it on 127.0.0.1:P (BentoML adds /livez, /readyz, /metrics and the OpenAPI page at
/docs). `guard.py` checks every request first: allowed host, bearer token (LOYAL_API_TOKEN), JSON body of bounded
size. Requests are then the strict Pydantic models of `schemas.py`, so a malformed one is a 400 that names the
field; an unknown item for similar_items is a 404; nothing a client sends gives a 500. Logs carry the route, status
and latency of each request, and the fields of a refused one, never a value: no customer id reaches them.

Readiness tells the truth: until both champions are loaded /readyz answers 503 with the reason. A worker that
cannot load them tries LOYAL_LOAD_ATTEMPTS times, then stops the server with one line naming the artifact, instead
of being restarted in a loop.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound
from pydantic.warnings import PydanticDeprecatedSince211

from loyal.events import EventLog
from loyal.features.repo import online_state
from loyal.home import OWNER_ONLY, loyal_home
from loyal.noise import silence_third_parties
from loyal.serving import schemas
from loyal.serving.engine import Engine
from loyal.serving.guard import AllowedHosts, Guard, log_client_errors_in_one_line, readiness
from loyal.training.recommender.rails import UnknownItem

logger = logging.getLogger("loyal.serving")
POLICY_ENV = "LOYAL_POLICY"  # another offer policy file than the one shipped
RELOAD_ENV = "LOYAL_RELOAD_SECONDS"  # how often to look for a new champion (default 30 s)
TRACING_ENV = "LOYAL_TRACING"  # set to 1 to trace the API routes (with an exporter in a BentoML config file)
ATTEMPTS_ENV = "LOYAL_LOAD_ATTEMPTS"  # tries at loading the models before the service stops (default 3)
RETRY_ENV = "LOYAL_LOAD_RETRY_SECONDS"  # between those tries (default 10)
API_ROUTES = ["/recommend", "/churn", "/offers", "/events"]
# BentoML 1.4 reads `model_fields` from each request's instance; Pydantic 2.11 warns about it on every request.
warnings.filterwarnings("ignore", category=PydanticDeprecatedSince211, module="_bentoml_impl")


def _load_attempts() -> int:
    return max(1, int(os.environ.get(ATTEMPTS_ENV, "3")))


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:500]


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
        os.umask(OWNER_ONLY)
        silence_third_parties()
        log_client_errors_in_one_line()
        policy = os.environ.get(POLICY_ENV)
        self.home, self.policy = loyal_home(), Path(policy) if policy else None
        self.event_log = EventLog(self.home)  # events need no model: taken even while the models load
        self.state = online_state(self.home)
        self.engine: Engine | None = None
        self.reload_seconds = float(os.environ.get(RELOAD_ENV, "30"))
        self._looked_at, self._reloading = time.monotonic(), threading.Lock()
        self._failed_version: str | None = None
        try:
            self._load()
        except Exception as error:  # noqa: BLE001 - whatever stops the models loading, say it and try again
            self._not_ready(error, attempt=1)
            threading.Thread(target=self._retry_loading, daemon=True).start()

    def _load(self) -> None:
        self.engine = Engine(self.home, self.policy)
        readiness.reason = None
        # Half a million objects loaded for good (models, Feast, MLflow): out of the collector's sight, so that a
        # full collection set off by a big /churn request does not rescan them (its slowest answers 580 -> 300 ms).
        gc.collect()
        gc.freeze()

    def _not_ready(self, error: Exception, attempt: int) -> None:
        readiness.reason = _one_line(error)
        logger.warning("models not loaded (attempt %d of %d): %s", attempt, _load_attempts(), readiness.reason)

    def _retry_loading(self) -> None:
        """A few more tries, LOYAL_LOAD_RETRY_SECONDS apart (the registry or the online store may be coming up);
        then the service stops, saying why, instead of restarting its workers in a loop."""
        for attempt in range(2, _load_attempts() + 1):
            time.sleep(float(os.environ.get(RETRY_ENV, "10")))
            try:
                self._load()
                logger.info("models loaded: %s", self.engine.model_versions)
                return
            except Exception as error:  # noqa: BLE001
                self._not_ready(error, attempt)
        logger.critical("loyal: stopping: the models could not be loaded in %d attempts: %s", _load_attempts(),
                        readiness.reason)
        os.kill(os.getppid(), signal.SIGTERM)  # the server process, which stops every worker

    def __is_ready__(self) -> bool:
        return self.engine is not None

    def _engine(self) -> Engine:
        """The engine a request uses from start to end. Every `reload_seconds` a thread asks the registry whether a
        champion moved (`loyal retrain`, `loyal train ...`); if so it builds a whole new engine and only then swaps
        it in, so a request never meets a half-loaded model and nobody restarts the service."""
        now = time.monotonic()
        if now - self._looked_at >= self.reload_seconds and self._reloading.acquire(blocking=False):
            self._looked_at = now
            threading.Thread(target=self._reload_if_a_champion_moved, daemon=True).start()
        return self.engine

    def _reload_if_a_champion_moved(self) -> None:
        try:
            moved = self.engine.champions_moved()
            if moved and moved != self._failed_version:
                try:
                    self.engine = Engine(self.home, self.policy)
                    logger.info("new champions loaded: %s", self.engine.model_versions)
                except Exception as error:  # noqa: BLE001 - keep serving the models that work
                    self._failed_version = moved
                    logger.warning("new champions not loaded, serving the models already loaded: %s",
                                   _one_line(error))
        except Exception as error:  # noqa: BLE001 - a registry hiccup keeps the engine; the next look tries again
            logger.warning("looking for new champions failed, serving the models already loaded: %s",
                           _one_line(error))
        finally:
            self._reloading.release()

    # /recommend and /offers answer in about a millisecond of CPU, on the event loop itself: handing them to a thread
    # (BentoML's way with a plain method) cost more than the answer. /churn, up to a thousand customers and 100 ms,
    # stays on a thread so that it does not hold up the small requests queued behind it.
    @bentoml.api(route="/recommend", input_spec=schemas.RecommendRequest, output_spec=schemas.RecommendResponse)
    async def recommend(self, **request: Any) -> schemas.RecommendResponse:
        """A product rail for one customer: for_you, buy_again, discover, similar_items or trending."""
        try:
            return self._engine().recommend(schemas.RecommendRequest(**request))
        except UnknownItem as error:
            raise NotFound(str(error)) from None

    @bentoml.api(route="/churn", input_spec=schemas.ChurnRequest, output_spec=schemas.ChurnResponse)
    def churn(self, **request: Any) -> schemas.ChurnResponse:
        """Churn risk, expected value, segment and top drivers for up to 1,000 customers."""
        return self._engine().churn_response(schemas.ChurnRequest(**request))

    @bentoml.api(route="/offers", input_spec=schemas.OfferRequest, output_spec=schemas.OfferResponse)
    async def offers(self, **request: Any) -> schemas.OfferResponse:
        """One personalised offer: recommended items and an incentive chosen by the offer policy."""
        return self._engine().offer(schemas.OfferRequest(**request))

    # A thread, not the event loop: the answer waits for the disk (the events are durable before it is sent).
    @bentoml.api(route="/events", input_spec=schemas.EventsRequest, output_spec=schemas.EventsResponse)
    def events(self, ctx: bentoml.Context, **request: Any) -> schemas.EventsResponse:
        """Up to 1,000 events (views, add-to-carts, purchases, returns), answered 202 once the accepted ones are on
        disk. A repeated event_id is a duplicate; a malformed event is rejected by index, the others kept."""
        receipt = self.event_log.append(schemas.EventsRequest(**request).events)
        if self.state is not None:  # the customers' state: the next answer follows what they just did
            self.state.append_events(receipt.kept)
        ctx.response.status_code = 202
        return schemas.EventsResponse(accepted=receipt.accepted, duplicates=receipt.duplicates,
                                      rejected=receipt.rejected, suppressed=receipt.suppressed)


# Outermost first: the host is checked before the token, the token before the body is read.
Loyal.add_asgi_middleware(AllowedHosts)
Loyal.add_asgi_middleware(Guard)
