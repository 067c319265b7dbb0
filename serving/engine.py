"""What the offer service does, without the web server: the champion models, the online store and the offer policy,
loaded once, answering the three requests of `schemas.py`. `service.py` only puts this behind BentoML.

The champions are the registered versions carrying the MLflow alias `champion` when the engine starts; customer
features come from the Feast online store on every request (the churn model reads them as they are now, not as of
its training). Rails are answered by `training.recommender.rails.Rails`, the one path `loyal recommend` and campaigns
take too, from each customer's state in the online store as it is at the request: their history and session, which
every event updates at once, and their features.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient

from loyal.errors import LoyalError
from loyal.features.online import OnlineReader
from loyal.features.repo import open_store
from loyal.schema import CUSTOMER_ID, DESCRIPTION, ITEM_ID, LOYALTY_TIER, MAX_TEXT_LENGTH
from loyal.serving import schemas
from loyal.serving.policy import choose_columns, expires_at, load_policy
from loyal.store import read_table
from loyal.suppression import Suppression
from loyal.tracking import client
from loyal.training.churn import scoring as churn_scoring
from loyal.training.recommender import rails
from loyal.training.churn.explain import top_drivers
from loyal.training.churn.scoring import risk_segment
from loyal.training.recommender.rails import OnlineState, Rails
from loyal.training.registry import champion_version

RECOMMENDER = rails.MODEL_NAME
CHURN = churn_scoring.MODEL_NAME


def missing_champions(registry: MlflowClient | None = None) -> str:
    """The models the service needs that carry no `champion` alias in `registry` (default: this process's) ("" when
    none)."""
    return " and ".join(name for name in (RECOMMENDER, CHURN) if champion_version(name, registry) is None)


class Engine:
    def __init__(self, home: Path, policy: Path | None = None):
        torch.set_num_threads(1)  # one request is a few small matrix products; threads only contend
        self.registry = client(home)  # explicit: serving changes no process-wide MLflow setting
        missing = missing_champions(self.registry)
        if missing:
            raise LoyalError(f"no champion for {missing}: train first (`loyal run`, or `loyal train recommender` "
                             "and `loyal train churn`)")
        recommender = rails.load_model(home)
        self.churn = churn_scoring.load_model(home)
        versions = {name: champion_version(name, self.registry) for name in (RECOMMENDER, CHURN)}
        self.model_versions = {name: str(version.version) for name, version in versions.items()}
        self.horizon_days = int(versions[CHURN].tags.get("horizon_days", 90))
        store = open_store(home)
        self.reader = OnlineReader(store)
        self.policy = load_policy(policy)
        self.suppression = Suppression(home)
        items = read_table(home, "items")
        # Cut as ingest cuts them (a home ingested before the cut may hold longer ones): answers stay small.
        descriptions = (
            {} if items is None else
            items.dropna(subset=[DESCRIPTION]).set_index(ITEM_ID)[DESCRIPTION].str.slice(0, MAX_TEXT_LENGTH).to_dict()
        )
        self.rails = Rails(recommender, self.suppression, OnlineState(store, self.reader), descriptions)

    def champions_moved(self) -> str | None:
        """The versions `champion` now names ("loyal-recommender 3, loyal-churn 5") where they are not the ones
        loaded; None where nothing moved."""
        now = {name: champion_version(name, self.registry) for name in (RECOMMENDER, CHURN)}
        if not any(version is not None and str(version.version) != self.model_versions[name]
                   for name, version in now.items()):
            return None
        return ", ".join(f"{name} {version.version if version else 'none'}" for name, version in now.items())

    def forgotten(self, customer_ids: list[str]) -> np.ndarray:
        """Whether each id was erased by `loyal forget`: answered as a stranger from then on, without a restart (the
        models trained before still know the id; the suppression list, re-read when it changes, masks it)."""
        return self.suppression.contains(customer_ids)

    # ------------------------------------------------------------------------------------------- /recommend
    def recommend(self, request: schemas.RecommendRequest) -> schemas.RecommendResponse:
        items, cold_start = self._rail(request.customer_id, request.rail, request.k, request.exclude_item_ids,
                                       request.item_id)
        return schemas.RecommendResponse(customer_id=request.customer_id, rail=request.rail, cold_start=cold_start,
                                         items=items, model_versions={RECOMMENDER: self.model_versions[RECOMMENDER]})

    def _rail(self, customer_id: str, rail: str, k: int, exclude: list[str], item_id: str | None = None,
              state: rails.State | None = None):
        """(items of the answer, cold_start)."""
        answer = self.rails.answer(customer_id, rail, k, exclude, item_id, state=state)
        items = [schemas.Item(item_id=item, description=self.rails.descriptions.get(item), score=score, reason=reason)
                 for item, score, reason in zip(answer.items, answer.scores, answer.reasons)]
        return items, answer.cold_start

    # ------------------------------------------------------------------------------------------- /churn
    def _features(self, customer_ids: list[str], read: tuple[dict, list] | None = None
                  ) -> tuple[dict[str, list], np.ndarray]:
        """The customer views' features from the online store, as columns (`read`: as read already); whether each
        customer is there."""
        columns, known = read if read is not None else self.reader.read_many(CUSTOMER_ID, customer_ids)
        known = np.asarray(known, dtype=bool) & ~self.forgotten(customer_ids)
        return {CUSTOMER_ID: list(customer_ids)} | columns, known

    def churn_scores(self, customer_ids: list[str], drivers: bool = True, read: tuple[dict, list] | None = None
                     ) -> dict[str, np.ndarray]:
        """Per id: known, churn_probability, expected_value (NaN where unknown), risk_segment, loyalty_tier and,
        when asked, top_drivers (lists of texts). `read`: their features as the online store gave them already."""
        columns, known = self._features(customer_ids, read)
        n = len(customer_ids)
        out = {"known": known, "churn_probability": np.full(n, np.nan), "expected_value": np.full(n, np.nan),
               "risk_segment": np.full(n, "unknown", dtype=object),
               LOYALTY_TIER: np.asarray(columns.get(LOYALTY_TIER, [None] * n), dtype=object),
               "top_drivers": [[] for _ in range(n)]}
        if known.any():
            seen = columns if known.all() else {name: [v for v, k in zip(values, known) if k]
                                                 for name, values in columns.items()}
            probability, value = self.churn.predict_arrays(seen)
            out["churn_probability"][known] = probability
            out["expected_value"][known] = value
            out["risk_segment"][known] = risk_segment(probability)
            if drivers:
                texts = iter(top_drivers(self.churn, pd.DataFrame(seen)).to_numpy())
                out["top_drivers"] = [[t for t in next(texts).split("; ") if t] if is_known else []
                                      for is_known in known]
        return out

    def churn_response(self, request: schemas.ChurnRequest) -> schemas.ChurnResponse:
        scores = self.churn_scores(request.customer_ids)
        customers = [
            schemas.ChurnScore(customer_id=customer_id, known=bool(scores["known"][i]),
                               churn_probability=_number(scores["churn_probability"][i], 4),
                               expected_value=_number(scores["expected_value"][i], 2),
                               risk_segment=scores["risk_segment"][i], top_drivers=scores["top_drivers"][i])
            for i, customer_id in enumerate(request.customer_ids)
        ]
        return schemas.ChurnResponse(customers=customers, horizon_days=self.horizon_days,
                                     model_versions={CHURN: self.model_versions[CHURN]})

    # ------------------------------------------------------------------------------------------- /offers
    def offer(self, request: schemas.OfferRequest, now: datetime | None = None) -> schemas.OfferResponse:
        now = now or datetime.now(timezone.utc)
        # One read of the online store: the state the rail ranks from holds the features churn scores too.
        state = self.rails.state_of([request.customer_id])
        scores = self.churn_scores([request.customer_id], drivers=False,
                                   read=(state.online_columns, state.online_known))
        known = bool(scores["known"][0])
        probability, value = scores["churn_probability"][0], scores["expected_value"][0]
        decision = {name: column[0] for name, column in
                    choose_columns(self.policy, [probability], [value], [scores[LOYALTY_TIER][0]]).items()}
        items, cold_start = self._rail(request.customer_id, "for_you", request.k, [], state=state)
        kind = decision["incentive"]
        incentive = schemas.Incentive(
            type=kind,
            percent=int(decision["percent"]) if kind == "percent_off" else None,
            multiplier=float(decision["multiplier"]) if kind == "points_multiplier" else None,
            expected_gain=round(float(decision["expected_gain"]), 2),
        )
        return schemas.OfferResponse(
            customer_id=request.customer_id, cold_start=cold_start or not known, items=items,
            incentive=incentive, reason_codes=decision["reason_codes"],
            churn_probability=_number(probability, 4), expected_value=_number(value, 2),
            expires_at=expires_at(self.policy, now), model_versions=dict(self.model_versions),
        )


def _number(value, digits: int) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)
