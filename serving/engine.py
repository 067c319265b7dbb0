"""What the offer service does, without the web server: the champion models, the online store and the offer policy,
loaded once, answering the three requests of `schemas.py`. `service.py` only puts this behind BentoML.

The champions are the registered versions carrying the MLflow alias `champion` when the engine starts; customer
features come from the Feast online store on every request (the churn model reads them as they are now, not as of
its training).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from loyal.errors import LoyalError
from loyal.schema import CUSTOMER_ID, DESCRIPTION, ITEM_ID, MAX_TEXT_LENGTH
from loyal.serving import schemas
from loyal.serving.policy import choose_columns, expires_at, load_policy
from loyal.suppression import SUPPRESSION, Suppression
from loyal.training.evaluate import top_k

RECOMMENDER = "loyal-recommender"
CHURN = "loyal-churn"
COLD_START_REASON = "popular this week"
# The for_you rail depends on the model alone (its features are frozen at training), so it is ranked once, in
# batches, when the engine starts: the most-read answer then costs a lookup. Kept per customer: the most a request
# may ask (k <= 100) and room for exclusions; a request that excludes more is ranked live.
CACHED_ITEMS = 150
CACHED_CUSTOMERS = 200_000  # beyond this many customers, the most active ones


def missing_champions() -> str:
    """The models the service needs that carry no `champion` alias in the current registry ("" when none)."""
    from loyal.training.registry import champion_version

    return " and ".join(name for name in (RECOMMENDER, CHURN) if champion_version(name) is None)


class UnknownItem(LoyalError):
    """similar_items was asked for an item the model has never seen."""


class Engine:
    def __init__(self, home: Path, policy: Path | None = None):
        from loyal.features.online import OnlineReader
        from loyal.features.repo import open_store
        from loyal.store import read_table
        from loyal.tracking import use_home
        from loyal.training import churn_scoring, rails
        from loyal.training.registry import champion_version

        torch.set_num_threads(1)  # one request is a few small matrix products; threads only contend
        use_home(home)
        missing = missing_champions()
        if missing:
            raise LoyalError(f"no champion for {missing}: train first (`loyal run`, or `loyal train recommender` "
                             "and `loyal train churn`)")
        recommender = rails.load_model(home).unwrap_python_model().recommender
        self.recommender = recommender
        self.churn = churn_scoring.load_model(home)
        versions = {name: champion_version(name) for name in (RECOMMENDER, CHURN)}
        self.model_versions = {name: str(version.version) for name, version in versions.items()}
        self.horizon_days = int(versions[CHURN].tags.get("horizon_days", 90))
        self.reader = OnlineReader(open_store(home))
        self.policy = load_policy(policy)
        items = read_table(home, "items")
        # Cut as ingest cuts them (a home ingested before the cut may hold longer ones): answers stay small.
        self.descriptions: dict[str, str] = (
            {} if items is None else
            items.dropna(subset=[DESCRIPTION]).set_index(ITEM_ID)[DESCRIPTION].str.slice(0, MAX_TEXT_LENGTH).to_dict()
        )
        stage = recommender.stage
        self.bought = stage.train.counts.tocsr()  # customers x items, purchase counts before the training cutoff
        self.similarity = stage.sources["item_knn"].model.similarity.tocsc()
        self.item_ids = recommender.items.to_numpy()
        # Dictionaries, not the model's pandas indexes: one id's position costs 0.1 µs, not 30.
        self.customer_position = {customer: i for i, customer in enumerate(recommender.customers)}
        self.item_position = {item: i for i, item in enumerate(self.item_ids)}
        self.cached_position, self.cached_items, self.cached_scores = self._rank_for_you()
        self.suppression = home / SUPPRESSION
        self._suppressed_at, self._suppressed = None, None

    def champions_moved(self) -> str | None:
        """The versions `champion` now names ("loyal-recommender 3, loyal-churn 5") where they are not the ones
        loaded; None where nothing moved."""
        from loyal.training.registry import champion_version

        now = {name: champion_version(name) for name in (RECOMMENDER, CHURN)}
        if not any(version is not None and str(version.version) != self.model_versions[name]
                   for name, version in now.items()):
            return None
        return ", ".join(f"{name} {version.version if version else 'none'}" for name, version in now.items())

    def forgotten(self, customer_ids: list[str]) -> np.ndarray:
        """Whether each id was erased by `loyal forget`: answered as a stranger from then on, without a restart (the
        models trained before still know the id; the suppression list, re-read when it changes, masks it)."""
        try:
            stamp = self.suppression.stat().st_mtime_ns
        except FileNotFoundError:
            return np.zeros(len(customer_ids), dtype=bool)
        if stamp != self._suppressed_at:
            self._suppressed = Suppression(self.suppression.parent)
            self._suppressed_at = stamp
        return self._suppressed.contains(customer_ids)

    # ------------------------------------------------------------------------------------------- /recommend
    def recommend(self, request: schemas.RecommendRequest) -> schemas.RecommendResponse:
        items, cold_start = self._rail(request.customer_id, request.rail, request.k, request.exclude_item_ids,
                                       request.item_id)
        return schemas.RecommendResponse(customer_id=request.customer_id, rail=request.rail, cold_start=cold_start,
                                         items=items, model_versions={RECOMMENDER: self.model_versions[RECOMMENDER]})

    def _rank_for_you(self, block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row in the cache of each customer position or -1, items [rows, CACHED_ITEMS], their scores)."""
        r = self.recommender
        customers = np.arange(len(r.customers))
        if len(customers) > CACHED_CUSTOMERS:
            customers = np.sort(np.argsort(-np.diff(self.bought.indptr), kind="stable")[:CACHED_CUSTOMERS])
        items = np.full((len(customers), CACHED_ITEMS), -1, dtype=np.int32)
        scores = np.full((len(customers), CACHED_ITEMS), -np.inf, dtype=np.float64)
        for start in range(0, len(customers), block):
            part = customers[start : start + block]
            part_scores = r.scores(part, "for_you")
            ranked = top_k(part_scores, CACHED_ITEMS)
            items[start : start + len(part)] = ranked
            scores[start : start + len(part)] = np.take_along_axis(part_scores, np.maximum(ranked, 0), axis=1)
        row = np.full(len(r.customers), -1, dtype=np.int64)
        row[customers] = np.arange(len(customers))
        return row, items, scores

    def _cached_for_you(self, position: int, k: int, exclude: list[str]):
        """(items, scores) from the cache, or None where the cache cannot answer for sure."""
        if position < 0 or self.cached_position[position] < 0:
            return None
        row = self.cached_position[position]
        items, scores = self.cached_items[row], self.cached_scores[row]
        keep = items >= 0
        if exclude:
            keep &= ~np.isin(items, self._item_positions(exclude))
        full = (items >= 0).all()  # a full row may have more items beyond the cache
        if keep.sum() < k and full:
            return None
        chosen = np.flatnonzero(keep)[:k]
        return items[chosen].astype(np.int64), scores[chosen]

    def _rail(self, customer_id: str, rail: str, k: int, exclude: list[str], item_id: str | None = None):
        """(items of the answer, cold_start)."""
        r = self.recommender
        position = -1 if self.forgotten([customer_id])[0] else self.customer_position.get(customer_id, -1)
        cached = self._cached_for_you(position, k, exclude) if rail == "for_you" else None
        if cached is not None:
            chosen, scores = cached
            return self._items(chosen, scores, self._reasons(rail, position, -1, chosen)), False
        anchor = -1
        if rail == "similar_items" and item_id is not None:
            anchor = self.item_position.get(item_id, -1)
            if anchor < 0:
                raise UnknownItem(f"item_id {item_id!r} is not in the catalogue the model knows")
            all_scores, cold_start = r.similar(np.array([anchor])), False
        elif position < 0:
            all_scores, cold_start = r.trending_scores[None, :].astype(np.float64), True
        else:
            all_scores, cold_start = r.scores(np.array([position]), rail), False
        if rail == "similar_items" and anchor < 0 and position >= 0:
            anchor = int(r.latest_item[position])
        if exclude:
            all_scores = all_scores.copy()
            all_scores[0, self._item_positions(exclude)] = -np.inf
        chosen = top_k(all_scores, k)[0]
        chosen = chosen[chosen >= 0]
        reasons = self._reasons(rail if not cold_start else "trending", position, anchor, chosen)
        return self._items(chosen, all_scores[0, chosen], reasons), cold_start

    def _item_positions(self, item_ids: list[str]) -> np.ndarray:
        """Positions of the items the model knows (others dropped)."""
        positions = [self.item_position.get(item, -1) for item in item_ids]
        return np.array([p for p in positions if p >= 0], dtype=np.int64)

    def _items(self, chosen: np.ndarray, scores: np.ndarray, reasons: list[str]) -> list[schemas.Item]:
        return [schemas.Item(item_id=self.item_ids[i], description=self.descriptions.get(self.item_ids[i]),
                             score=float(score), reason=reason) for i, score, reason in zip(chosen, scores, reasons)]

    def _reasons(self, rail: str, customer: int, anchor: int, chosen: np.ndarray) -> list[str]:
        if rail == "trending" or len(chosen) == 0:
            return [COLD_START_REASON] * len(chosen)
        if rail == "similar_items":
            return [f"similar to {self._name(anchor)}"] * len(chosen)
        if rail == "buy_again":
            return ["you bought this before"] * len(chosen)
        # for_you and discover: the customer's purchase most like each item (BM25 item-kNN; the lowest position on a
        # tie), where there is one. Column c of the CSC similarity holds the items similar to c.
        owned = np.zeros(len(self.item_ids), dtype=bool)
        owned[self.bought.indices[self.bought.indptr[customer] : self.bought.indptr[customer + 1]]] = True
        similarity, reasons = self.similarity, []
        for item in chosen:
            span = slice(similarity.indptr[item], similarity.indptr[item + 1])
            rows, values = similarity.indices[span], similarity.data[span]
            mine = owned[rows] & (values > 0)
            if owned[item]:
                reasons.append("you bought this before")
            elif mine.any():
                best = rows[mine][values[mine] == values[mine].max()].min()
                reasons.append(f"because you bought {self._name(best)}")
            else:
                reasons.append("popular with customers like you")
        return reasons

    def _name(self, item: int) -> str:
        item_id = self.item_ids[item]
        return self.descriptions.get(item_id) or f"item {item_id}"

    # ------------------------------------------------------------------------------------------- /churn
    def _features(self, customer_ids: list[str]) -> tuple[dict[str, list], np.ndarray]:
        """The customer views' features from the online store, as columns; whether each customer is there."""
        columns, known = self.reader.read_many(CUSTOMER_ID, customer_ids)
        known = np.asarray(known, dtype=bool) & ~self.forgotten(customer_ids)
        return {CUSTOMER_ID: list(customer_ids)} | columns, known

    def churn_scores(self, customer_ids: list[str], drivers: bool = True) -> dict[str, np.ndarray]:
        """Per id: known, churn_probability, expected_value (NaN where unknown), risk_segment, loyalty_tier and,
        when asked, top_drivers (lists of texts)."""
        from loyal.training.churn_explain import top_drivers
        from loyal.training.churn_scoring import risk_segment

        columns, known = self._features(customer_ids)
        n = len(customer_ids)
        out = {"known": known, "churn_probability": np.full(n, np.nan), "expected_value": np.full(n, np.nan),
               "risk_segment": np.full(n, "unknown", dtype=object),
               "loyalty_tier": np.asarray(columns.get("loyalty_tier", [None] * n), dtype=object),
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
        scores = self.churn_scores([request.customer_id], drivers=False)
        known = bool(scores["known"][0])
        probability, value = scores["churn_probability"][0], scores["expected_value"][0]
        decision = {name: column[0] for name, column in
                    choose_columns(self.policy, [probability], [value], [scores["loyalty_tier"][0]]).items()}
        items, cold_start = self._rail(request.customer_id, "for_you", request.k, [])
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
