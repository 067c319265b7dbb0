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

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from loyal.errors import LoyalError
from loyal.suppression import suppressed
from loyal.tracking import use_home
from loyal.training.evaluate import K, top_k
from loyal.training.ranker import Reranker, Stage
from loyal.training.registry import champion_version, load_version

MODEL_NAME = "loyal-recommender"
RAILS = ("for_you", "buy_again", "discover", "similar_items", "trending")
TRENDING_DAYS = 7
COLUMNS = ["customer_id", "rank", "item_id", "score"]


class Recommender:
    """The two re-rankers on one stage (the sources fitted on all purchases before the training cutoff)."""

    def __init__(self, for_you: Reranker, discover: Reranker):
        if for_you.stage is not discover.stage:
            raise ValueError("both re-rankers must score with the same stage")
        stage: Stage = for_you.stage
        self.for_you, self.discover, self.stage = for_you, discover, stage
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

    # ------------------------------------------------------------------------------------------- scores
    def scores(self, positions: np.ndarray, rail: str) -> np.ndarray:
        """Whole-catalogue scores of known customers (positions) on one rail; -inf: never shown."""
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
        similarity = self.stage.sources["item_knn"].model.similarity.tocsr()
        rows = similarity[np.maximum(item_positions, 0)].toarray().astype(np.float64)
        rows[rows <= 0] = -np.inf
        rows[np.arange(len(item_positions)), np.maximum(item_positions, 0)] = -np.inf
        rows[item_positions < 0] = -np.inf
        return rows

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

        trending = top_k(self.trending_scores[None, :], k)

        def answer(start: int) -> pd.DataFrame:
            part = positions[start : start + block]
            known = part >= 0
            ranked = np.repeat(trending, len(part), axis=0)
            values = np.repeat(self.trending_scores[trending].astype(np.float64), len(part), axis=0)
            if known.any():
                ranked[known], values[known] = self._best(part[known], rail, k)
            return self._frame(ids[start : start + block], ranked, values)

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
        frame = self._rows(ids, self.similar(positions), k)
        return frame.rename(columns={"customer_id": "query_item_id"})

    def _best(self, positions: np.ndarray, rail: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Known customers' k best items on a rail and their scores (-1 where a rail has fewer than k)."""
        reranker = {"for_you": self.for_you, "discover": self.discover}.get(rail)
        if reranker is None:
            return _cut(self.scores(positions, rail), k)
        # A re-ranked rail's k best are candidates wherever a customer has k of them (everything else ranks below):
        # ranking the candidates alone spares scoring the whole catalogue. Candidates are in item order, so ties
        # fall as they would in the catalogue.
        items, scores = reranker.candidate_scores(positions)
        if items.shape[1] < k:  # nobody has k candidates
            return _cut(reranker.score(positions), k)
        ranked, values = _cut(scores, k)
        ranked = np.where(ranked >= 0, np.take_along_axis(items, np.maximum(ranked, 0), axis=1), -1)
        short = np.flatnonzero((items >= 0).sum(axis=1) < k)
        if len(short):
            ranked[short], values[short] = _cut(reranker.score(positions[short]), k)
        return ranked, values

    def _rows(self, ids: pd.Index, scores: np.ndarray, k: int) -> pd.DataFrame:
        return self._frame(ids, *_cut(scores, k))

    def _frame(self, ids: pd.Index, ranked: np.ndarray, values: np.ndarray) -> pd.DataFrame:
        rows, ranks = np.nonzero(ranked >= 0)
        return pd.DataFrame({
            "customer_id": ids.to_numpy()[rows],
            "rank": ranks + 1,
            "item_id": self.items.to_numpy()[ranked[rows, ranks]],
            "score": values[rows, ranks],
        })


def _cut(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best positions per row (-1 past the last shown) and their scores, as float64."""
    ranked = top_k(scores, k)
    return ranked, np.take_along_axis(scores, np.maximum(ranked, 0), axis=1).astype(np.float64)


# ------------------------------------------------------------------------------------------- registered
class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """`loyal-recommender` as an MLflow pyfunc: input a frame with `customer_id` (or, for similar_items given an
    item, `item_id`), params `rail` and `k`; output rows (customer_id, rank, item_id, score)."""

    def load_context(self, context):
        with open(context.artifacts["recommender"], "rb") as file:
            self.recommender: Recommender = pickle.load(file)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        rail, k = params.get("rail", "for_you"), int(params.get("k", K))
        if rail == "similar_items" and "item_id" in model_input.columns:
            return self.recommender.similar_to(model_input["item_id"], k)
        return self.recommender.recommend(model_input["customer_id"], rail, k)


def load_model(home: Path, version: str | None = None):
    """The registered pyfunc that carries `champion` (or the given version), loaded from the registry."""
    use_home(home)
    if version is None and champion_version(MODEL_NAME) is None:
        raise LoyalError(f"no {MODEL_NAME} carries the alias champion yet: run `loyal train recommender` first")
    return load_version(MODEL_NAME, version)


def recommend(home: Path, customer_ids: list[str], rail: str, k: int, version: str | None = None) -> pd.DataFrame:
    """Rows (customer_id, rank, item_id, score) from the champion, or from `version`."""
    if rail not in RAILS:
        raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(RAILS)}")
    recommender: Recommender = load_model(home, version).unwrap_python_model().recommender
    # A customer erased since the model was trained is answered exactly as one it never saw.
    rows = recommender.recommend(customer_ids, rail, int(k), strangers=suppressed(home, customer_ids))
    return rows[COLUMNS]
