"""The product rails, answered by one trained bundle that carries everything it needs (id maps included), so it
answers without the training run, the canonical tables or the feature store. Loading the registered bundle and
answering from it live here too, beside the MLflow pyfunc wrapper, so that the service, campaigns and `loyal
recommend` never load the training pipeline (nor Optuna).

- `for_you`: the re-ranker over every item; `discover`: the re-ranker trained on items new to the customer;
- `buy_again`: only items the customer bought, by time-decayed purchase frequency;
- `similar_items`: item to item (BM25 item-kNN), for a given item, or for a customer's latest purchase;
- `trending`: the most distinct buyers in the last week (the last month breaks ties). A customer the model does not
  know gets `trending` on every customer rail.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import mlflow
import numpy as np
import pandas as pd

from loyal.errors import LoyalError
from loyal.schema import CUSTOMER_ID, ITEM_ID
from loyal.suppression import Suppression
from loyal.tracking import client
from loyal.training import artifacts
from loyal.training.recommender.evaluate import Interactions, K, top_k
from loyal.training.recommender.ranker import Reranker, Stage
from loyal.training.recommender.models import from_recipe, recipe
from loyal.training.registry import champion_version, load_version

MODEL_NAME = "loyal-recommender"
ARTIFACT = "recommender"  # the saved bundle's folder among the registered model's artifacts
RAILS = ("for_you", "buy_again", "discover", "similar_items", "trending")
RERANKED = {"for_you": "all", "discover": "explore"}  # the rails a re-ranker answers, and the view it is judged in
TRENDING_DAYS = 7
COLUMNS = [CUSTOMER_ID, "rank", ITEM_ID, "score"]


class Recommender:
    """The two re-rankers on one stage (the sources fitted on all purchases before the training cutoff), and the
    baselines chosen to answer a re-ranked rail instead where they did better on the validation window (`served`:
    rail -> fitted baseline, fitted on the same purchases)."""

    def __init__(self, for_you: Reranker, discover: Reranker, served: Mapping[str, object] | None = None):
        if for_you.stage is not discover.stage:
            raise ValueError("both re-rankers must score with the same stage")
        stage: Stage = for_you.stage
        self.for_you, self.discover, self.stage = for_you, discover, stage
        self.served = dict(served or {})
        if not set(self.served) <= set(RERANKED):
            raise ValueError(f"only {' and '.join(RERANKED)} can be answered by a baseline")
        self.customers, self.items = stage.train.customers, stage.train.items
        self.cutoff = stage.train.cutoff
        purchases = stage.train.purchases
        week = np.bincount(
            purchases.loc[purchases["age_days"] <= TRENDING_DAYS, ["customer", "item"]].drop_duplicates()["item"],
            minlength=len(self.items),
        )
        month = np.bincount(
            purchases.loc[purchases["age_days"] <= 30, ["customer", "item"]].drop_duplicates()["item"],
            minlength=len(self.items),
        )
        self.trending_scores = week + month / (month.max() + 1.0)
        # The latest item each customer bought, for similar_items without an item.
        latest = purchases.sort_values("age_days").drop_duplicates("customer")
        self.latest_item = np.full(len(self.customers), -1)
        self.latest_item[latest["customer"].to_numpy()] = latest["item"].to_numpy()
        self.for_you.features = self.discover.features = None  # the bundle never reads the feature store again
        self.similarity = stage.sources["item_knn"].similarity  # row i: the items like item i (BM25 item-kNN)

    # ------------------------------------------------------------------------------------------- files
    def save(self, folder: Path) -> Path:
        """Write the bundle into a new folder, without pickle (training/artifacts.py)."""
        arrays = artifacts.Arrays()
        train = self.stage.train
        arrays.put_ids("customers", train.customers)
        arrays.put_ids("items", train.items)
        for column in ("customer", "item", "age_days"):
            arrays.put(f"purchases.{column}", train.purchases[column].to_numpy())
        config = {"kind": MODEL_NAME, "cutoff": self.cutoff.isoformat(), "sources": self.stage.save(arrays),
                  "for_you": self.for_you.save(arrays, "for_you"), "discover": self.discover.save(arrays, "discover"),
                  "served": {rail: recipe(model) for rail, model in self.served.items()}}
        for rail, model in self.served.items():
            model.save(arrays, f"served.{rail}")
        return artifacts.write(folder, config, arrays)

    @classmethod
    def load(cls, folder: Path) -> Recommender:
        """The bundle `save` wrote: it answers exactly as the one that was saved."""
        config, arrays = artifacts.read(folder, MODEL_NAME)
        purchases = pd.DataFrame({column: arrays[f"purchases.{column}"] for column in ("customer", "item", "age_days")})
        train = Interactions.of(arrays.ids("customers"), arrays.ids("items"), purchases, pd.Timestamp(config["cutoff"]))
        stage = Stage.load(train, config["sources"], arrays)
        served = {rail: from_recipe(made).load(train, arrays, f"served.{rail}")
                  for rail, made in config["served"].items()}
        return cls(Reranker.load(config["for_you"], arrays, "for_you", stage),
                   Reranker.load(config["discover"], arrays, "discover", stage), served)

    def recipes(self) -> dict[str, str]:
        """Which recipe answers each rail."""
        return {"for_you": self.served["for_you"].name if "for_you" in self.served else self.for_you.name,
                "discover": self.served["discover"].name if "discover" in self.served else self.discover.name,
                "buy_again": self.stage.sources["personal_frequency"].name,
                "similar_items": self.stage.sources["item_knn"].name, "trending": f"trending_{TRENDING_DAYS}d"}

    def items_bought(self) -> np.ndarray:
        """How many distinct items each known customer bought before the cutoff (by position): their activity."""
        return self.stage.customer_items

    # ------------------------------------------------------------------------------------------- scores
    def scores(self, positions: np.ndarray, rail: str) -> np.ndarray:
        """Whole-catalogue scores of known customers (positions) on one rail; -inf: never shown."""
        if rail in self.served:
            scores = np.asarray(self.served[rail].score(positions), dtype=np.float64)
            if RERANKED[rail] == "explore":  # as the re-ranker it stands in for: only items new to the customer
                scores[self.stage.bought(positions)] = -np.inf
            return scores
        if rail == "for_you":
            return self.for_you.score(positions)
        if rail == "discover":
            return self.discover.score(positions)
        if rail == "buy_again":
            personal = self.stage.sources["personal_frequency"].personal[positions].toarray()
            return np.where(personal > 0, personal, -np.inf)
        if rail == "trending":
            return np.tile(self.trending_scores, (len(positions), 1)).astype(np.float64)
        if rail == "similar_items":
            return self.similar(self.latest_item[positions])
        raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(RAILS)}")

    def similar(self, item_positions: np.ndarray) -> np.ndarray:
        """Item-to-item similarity rows (BM25 item-kNN); the item itself and unrelated items are never shown."""
        rows = self.similarity[np.maximum(item_positions, 0)].toarray().astype(np.float64)
        rows[rows <= 0] = -np.inf
        rows[np.arange(len(item_positions)), np.maximum(item_positions, 0)] = -np.inf
        rows[item_positions < 0] = -np.inf
        return rows

    # ------------------------------------------------------------------------------------------- answers
    def rank(self, positions: np.ndarray, rail: str, k: int, exclude: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Each customer's k best items on a rail, best first, and their scores ([n, k] item positions, -1 past the
        last shown). A customer at position -1 (unknown, or one who must be answered as unknown) gets `trending`.
        `exclude`: item positions never shown."""
        if rail not in RAILS:
            raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(RAILS)}")
        positions = np.asarray(positions, dtype=np.int64)
        exclude = np.asarray(exclude if exclude is not None else (), dtype=np.int64)
        k = min(k, len(self.items))
        ranked = np.full((len(positions), k), -1, dtype=np.int64)
        values = np.full((len(positions), k), -np.inf)
        known = positions >= 0
        if (~known).any():
            trending = self.trending_scores[None, :].astype(np.float64)
            ranked[~known], values[~known] = _cut(_without(trending, exclude), k)
        if known.any():
            ranked[known], values[known] = self._best(positions[known], rail, k, exclude)
        return ranked, values

    def rank_similar(self, item_positions: np.ndarray, k: int, exclude: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The k items most like each given item (similar_items for an item), as `rank` answers."""
        exclude = np.asarray(exclude if exclude is not None else (), dtype=np.int64)
        return _cut(_without(self.similar(np.asarray(item_positions, dtype=np.int64)), exclude),
                    min(k, len(self.items)))

    def anchor(self, position: int) -> int:
        """The item `similar_items` starts from for a customer: their latest purchase (-1 for a stranger)."""
        return int(self.latest_item[position]) if position >= 0 else -1

    def reasons(self, rail: str, position: int, anchor: int, items: np.ndarray) -> list[tuple[str, int]]:
        """Why each item is shown to the customer at `position`, as (kind, item it relates to or -1): "trending",
        "similar" (to `anchor`), "bought" (before), "because" (they bought the related item: the purchase most like
        it by BM25 item-kNN, the lowest position on a tie) or "like_you" (popular with customers like them)."""
        if rail == "similar_items" and anchor >= 0:
            return [("similar", anchor)] * len(items)
        if rail == "trending" or position < 0:
            return [("trending", -1)] * len(items)
        if rail == "buy_again":
            return [("bought", -1)] * len(items)
        # Column c of the CSC similarity holds the items similar to c.
        bought = self.stage.train.counts.tocsr()
        owned = np.zeros(len(self.items), dtype=bool)
        owned[bought.indices[bought.indptr[position] : bought.indptr[position + 1]]] = True
        similarity, reasons = self._similarity_by_column(), []
        for item in items:
            span = slice(similarity.indptr[item], similarity.indptr[item + 1])
            rows, values = similarity.indices[span], similarity.data[span]
            mine = owned[rows] & (values > 0)
            if owned[item]:
                reasons.append(("bought", -1))
            elif mine.any():
                reasons.append(("because", int(rows[mine][values[mine] == values[mine].max()].min())))
            else:
                reasons.append(("like_you", -1))
        return reasons

    def _similarity_by_column(self):
        # Built on first use, by the process that answers (not by training: the registered bundle stays small).
        if getattr(self, "_similarity_csc", None) is None:
            self._similarity_csc = self.similarity.tocsc()
        return self._similarity_csc

    # ------------------------------------------------------------------------------------------- lists
    def recommend(self, customer_ids, rail: str, k: int, block: int = 512, strangers=None) -> pd.DataFrame:
        """Rows (customer_id, rank, item_id, score), best first per customer, in the order the ids came.
        Unknown customers get `trending`, and so do `strangers` (a mask over the ids: customers erased since the
        model was trained, whom it must not answer as themselves)."""
        if rail not in RAILS:
            raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(RAILS)}")
        if not 1 <= k <= len(self.items):
            raise LoyalError(f"k must be between 1 and {len(self.items)}, not {k}")
        ids = pd.Index(pd.Series(customer_ids, dtype="string").astype(str))
        positions = self.customers.get_indexer(ids)
        if strangers is not None:
            positions[np.asarray(strangers, dtype=bool)] = -1

        def answer(start: int) -> pd.DataFrame:
            return self._frame(ids[start : start + block], *self.rank(positions[start : start + block], rail, k))

        starts = range(0, len(ids), block)
        if len(starts) < 2:
            frames = [answer(start) for start in starts]
        else:  # numpy's selections and sorts and torch release the GIL: blocks in threads use every core
            with ThreadPoolExecutor(min(len(starts), os.cpu_count() or 1)) as pool:
                frames = list(pool.map(answer, starts))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)

    def similar_to(self, item_ids, k: int) -> pd.DataFrame:
        """Rows (item_id of the query, rank, item_id, score) for the similar_items rail of given items."""
        ids = pd.Index(pd.Series(item_ids, dtype="string").astype(str))
        positions = self.items.get_indexer(ids)
        unknown = ids[positions < 0]
        if len(unknown):
            raise LoyalError(f"unknown item id(s): {', '.join(map(str, unknown[:5]))}")
        frame = self._frame(ids, *self.rank_similar(positions, k))
        return frame.rename(columns={CUSTOMER_ID: "query_item_id"})

    def _best(self, positions: np.ndarray, rail: str, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Known customers' k best items on a rail and their scores (-1 where a rail has fewer than k)."""
        reranker = {"for_you": self.for_you, "discover": self.discover}.get(rail)
        if reranker is None or rail in self.served:
            return _cut(_without(self.scores(positions, rail), exclude), k)
        # A re-ranked rail's k best are candidates wherever a customer has k of them left after the exclusions
        # (everything else ranks below every candidate): ranking the candidates alone spares scoring the whole
        # catalogue. Candidates are in item order, so ties fall as they would in the catalogue.
        items, scores = reranker.candidate_scores(positions)
        if len(exclude):
            scores = np.where(np.isin(items, exclude), np.float32(-np.inf), scores)
        if items.shape[1] < k:  # nobody has k candidates
            return _cut(_without(reranker.score(positions), exclude), k)
        ranked, values = _cut(scores, k)
        ranked = np.where(ranked >= 0, np.take_along_axis(items, np.maximum(ranked, 0), axis=1), -1)
        short = np.flatnonzero(np.isfinite(scores).sum(axis=1) < k)
        if len(short):
            ranked[short], values[short] = _cut(_without(reranker.score(positions[short]), exclude), k)
        return ranked, values

    def _frame(self, ids: pd.Index, ranked: np.ndarray, values: np.ndarray) -> pd.DataFrame:
        rows, ranks = np.nonzero(ranked >= 0)
        return pd.DataFrame({
            CUSTOMER_ID: ids.to_numpy()[rows],
            "rank": ranks + 1,
            ITEM_ID: self.items.to_numpy()[ranked[rows, ranks]],
            "score": values[rows, ranks],
        })


def _without(scores: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """Scores with the excluded item positions never shown (a copy where there are any)."""
    if not len(exclude):
        return scores
    scores = scores.copy()
    scores[:, exclude] = -np.inf
    return scores


def _cut(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best positions per row (-1 past the last shown) and their scores, as float64."""
    ranked = top_k(scores, k)
    return ranked, np.take_along_axis(scores, np.maximum(ranked, 0), axis=1).astype(np.float64)


# ------------------------------------------------------------------------------------------- answering
COLD_START_REASON = "popular this week"
# A rail ranked for every customer when a Rails is warmed (the service does, at start): the most-read answer then
# costs a lookup. Kept per customer: the most a request may ask (k <= 100) and room for exclusions; a request that
# excludes more is ranked live.
CACHED_ITEMS = 150
CACHED_CUSTOMERS = 200_000  # beyond this many customers, the most active ones


class UnknownItem(LoyalError):
    """similar_items was asked for an item the model has never seen."""


@dataclass(frozen=True)
class Answer:
    """One customer's rail: item ids best first, their scores, why each is shown (in words), and whether the
    customer was answered as a stranger."""
    items: list[str]
    scores: list[float]
    reasons: list[str]
    cold_start: bool


class Rails:
    """Every rail for every customer, the one way Loyal answers them: the service (a customer at a time, with
    exclusions and reasons), `loyal recommend` and campaign items (many at once) all ask a Rails. A customer on the
    suppression list is answered exactly as one the model never saw, here and only here."""

    def __init__(self, recommender: Recommender, suppression: Suppression,
                 descriptions: Mapping[str, str] | None = None):
        self.recommender, self.suppression = recommender, suppression
        self.descriptions = dict(descriptions or {})
        self.item_ids = recommender.items.to_numpy()
        self.cached: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # Dictionaries, not the model's pandas indexes: one id's position costs 0.1 µs, not 30. Made when a customer is
    # first answered alone (`table` needs neither).
    @functools.cached_property
    def customer_position(self) -> dict[str, int]:
        return {customer: i for i, customer in enumerate(self.recommender.customers)}

    @functools.cached_property
    def item_position(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    def positions(self, customer_ids) -> np.ndarray:
        """Each customer's position in the model, -1 for one it does not know or must not know (suppressed)."""
        positions = np.array([self.customer_position.get(c, -1) for c in customer_ids], dtype=np.int64)
        positions[self.suppression.contains(list(customer_ids))] = -1
        return positions

    def table(self, customer_ids, rail: str, k: int) -> pd.DataFrame:
        """Rows (customer_id, rank, item_id, score) for many customers: `loyal recommend`, campaign items."""
        ids = list(customer_ids)
        return self.recommender.recommend(ids, rail, k, strangers=self.suppression.contains(ids))[COLUMNS]

    def answer(self, customer_id: str, rail: str, k: int, exclude_item_ids=(), item_id: str | None = None) -> Answer:
        """One customer's rail, never showing `exclude_item_ids`; similar_items from `item_id` when given (an item the
        model does not know is UnknownItem), else from the customer's latest purchase."""
        r = self.recommender
        position = int(self.positions([customer_id])[0])
        exclude = np.array([p for p in (self.item_position.get(i, -1) for i in exclude_item_ids) if p >= 0],
                           dtype=np.int64)
        if rail == "similar_items" and item_id is not None:
            anchor = self.item_position.get(item_id, -1)
            if anchor < 0:
                raise UnknownItem(f"item_id {item_id!r} is not in the catalogue the model knows")
            (items,), (scores,) = r.rank_similar(np.array([anchor]), k, exclude)
            return self._answer(items, scores, r.reasons(rail, position, anchor, items[items >= 0]), False)
        cached = self._from_cache(rail, position, k, exclude)
        if cached is not None:
            items, scores = cached
        else:
            (items,), (scores,) = r.rank(np.array([position]), rail, k, exclude)
        shown = items[items >= 0]
        reasons = r.reasons(rail, position, r.anchor(position) if rail == "similar_items" else -1, shown)
        return self._answer(items, scores, reasons, position < 0)

    def warm(self, rail: str = "for_you", block: int = 1024) -> None:
        """Rank `rail` once for every customer (the CACHED_CUSTOMERS most active beyond that many), CACHED_ITEMS
        deep, so that `answer` looks it up; equal to ranking live (a test holds them equal)."""
        r = self.recommender
        customers = np.arange(len(r.customers))
        if len(customers) > CACHED_CUSTOMERS:
            customers = np.sort(np.argsort(-r.items_bought(), kind="stable")[:CACHED_CUSTOMERS])
        depth = min(CACHED_ITEMS, len(r.items))
        items = np.full((len(customers), depth), -1, dtype=np.int64)
        scores = np.full((len(customers), depth), -np.inf)
        for start in range(0, len(customers), block):
            part = customers[start : start + block]
            items[start : start + len(part)], scores[start : start + len(part)] = r.rank(part, rail, depth)
        row = np.full(len(r.customers), -1, dtype=np.int64)
        row[customers] = np.arange(len(customers))
        self.cached[rail] = (row, items, scores)

    def _from_cache(self, rail: str, position: int, k: int, exclude: np.ndarray):
        """(items, scores) from the cache, or None where the cache cannot answer for sure."""
        if rail not in self.cached or position < 0 or self.cached[rail][0][position] < 0:
            return None
        row, items, scores = self.cached[rail]
        items, scores = items[row[position]], scores[row[position]]
        keep = items >= 0
        if len(exclude):
            keep &= ~np.isin(items, exclude)
        full = (items >= 0).all()  # a full row may have more items beyond the cache
        if keep.sum() < k and full:
            return None
        chosen = np.flatnonzero(keep)[:k]
        return items[chosen], scores[chosen]

    def _answer(self, items: np.ndarray, scores: np.ndarray, reasons: list[tuple[str, int]], cold: bool) -> Answer:
        shown = items >= 0
        return Answer(items=[str(i) for i in self.item_ids[items[shown]]], scores=[float(x) for x in scores[shown]],
                      reasons=[self._words(kind, related) for kind, related in reasons], cold_start=cold)

    def _words(self, kind: str, related: int) -> str:
        if kind == "trending":
            return COLD_START_REASON
        if kind == "similar":
            return f"similar to {self._name(related)}"
        if kind == "bought":
            return "you bought this before"
        if kind == "because":
            return f"because you bought {self._name(related)}"
        return "popular with customers like you"

    def _name(self, item: int) -> str:
        item_id = self.item_ids[item]
        return self.descriptions.get(item_id) or f"item {item_id}"


# ------------------------------------------------------------------------------------------- registered
class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """`loyal-recommender` as an MLflow pyfunc: input a frame with `customer_id` (or, for similar_items given an
    item, `item_id`), params `rail` and `k`; output rows (customer_id, rank, item_id, score). Registered from code
    (training/model_code/recommender.py): loading it reads the saved bundle's arrays, never a pickle."""

    def load_context(self, context):
        self.model = Recommender.load(Path(context.artifacts[ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        rail, k = params.get("rail", "for_you"), int(params.get("k", K))
        if rail == "similar_items" and ITEM_ID in model_input.columns:
            return self.model.similar_to(model_input[ITEM_ID], k)
        return self.model.recommend(model_input[CUSTOMER_ID], rail, k)


def load_model(home: Path, version: str | None = None) -> Recommender:
    """The registered bundle that carries `champion` (or the given version), loaded from the registry."""
    registry = client(home)
    if version is None and champion_version(MODEL_NAME, registry) is None:
        raise LoyalError(f"no {MODEL_NAME} carries the alias champion yet: run `loyal train recommender` first")
    return load_version(MODEL_NAME, version, registry).unwrap_python_model().model


def recommend(home: Path, customer_ids: list[str], rail: str, k: int, version: str | None = None) -> pd.DataFrame:
    """Rows (customer_id, rank, item_id, score) from the champion, or from `version`."""
    if rail not in RAILS:
        raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(RAILS)}")
    return Rails(load_model(home, version), Suppression(home)).table(
        customer_ids, rail, int(k))
