"""The product rails: one registered model that holds items only, and the customers' state it is given.

The model (`Recommender`) is item-side: item ids, each source's item parameters (popularity, BM25 item-kNN and EASE
similarities, ALS item factors), the re-rankers' networks, the trending list. A customer is their state, read when
they are answered: their purchase history and session (features/compute.py defines both; the online store keeps
them as events arrive, features/state.py) and their features. So a purchase shows in the next answer, a customer
first seen after training gets personal rails from their first purchase, and a forgotten customer, whose state is
erased, is a stranger at once: nothing about them is in the model to retrain away.

- `for_you`: the re-ranker over every item, moved towards what the customer's session (their latest views and
  add-to-carts) points at, by a weight chosen on the validation window; `discover`: the re-ranker trained on items
  new to the customer (each answered by a baseline instead where one did better on the validation window);
- `buy_again`: only items the customer bought, by time-decayed purchase frequency;
- `similar_items`: item to item (BM25 item-kNN), for a given item, or from the item the customer last viewed or
  bought;
- `trending`: the most distinct buyers in the last week before training (the last month breaks ties); a customer
  without a history gets it on every customer rail;
- `recently_viewed`: the session's items, latest first.

`Rails` answers them, the one way: the service from the online state, `loyal recommend` and campaigns from the
state as of a date (the same lines, from the canonical tables). Loading the registered model lives here too, beside
the MLflow pyfunc wrapper, so that none of them loads the training pipeline (nor Optuna).
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
import scipy.sparse as sp

from loyal.dates import utc
from loyal.errors import LoyalError
from loyal.features.compute import DAY_US
from loyal.features.engines import purchase_history, session
from loyal.features.online import OnlineReader
from loyal.features.repo import features_by_entity
from loyal.features.state import CustomerState
from loyal.schema import CUSTOMER_ID, ITEM_ID, TIMESTAMP
from loyal.store import day_after_last_purchase, read_table
from loyal.suppression import Suppression
from loyal.tracking import client
from loyal.training import artifacts
from loyal.training.recommender.evaluate import Interactions, K, top_k
from loyal.training.recommender.models import from_recipe, recipe
from loyal.training.recommender.ranker import CUSTOMER_FEATURES, Reranker, Stage, customer_features
from loyal.training.registry import champion_version, load_version

MODEL_NAME = "loyal-recommender"
ARTIFACT = "recommender"  # the saved bundle's folder among the registered model's artifacts
SCORED = ("for_you", "buy_again", "discover", "similar_items", "trending")  # the rails the model ranks
RAILS = (*SCORED, "recently_viewed")
SESSION_REASON_WEIGHT = 0.05  # a browse that weighs less (a view over four days old) no longer explains an item  # and the session's own: the items just viewed, latest first
RERANKED = {"for_you": "all", "discover": "explore"}  # the rails a re-ranker answers, and the view it is judged in
TRENDING_DAYS = 7
COLUMNS = [CUSTOMER_ID, "rank", ITEM_ID, "score"]
FEATURE_SERVICE = "offers_v1"  # the customer features the re-rankers read


class Recommender:
    """The two re-rankers on one stage, and the baselines chosen to answer a re-ranked rail instead where they did
    better on the validation window (`served`: rail -> fitted baseline). It holds items only: item ids, item-side
    parameters, the trending list. A customer is their state, given when they are scored: their history as
    `Interactions` over the model's items (`lines`) and their features (`features`, [n, F])."""

    def __init__(self, for_you: Reranker, discover: Reranker, served: Mapping[str, object] | None = None,
                 trending_scores: np.ndarray | None = None, cutoff: pd.Timestamp | None = None,
                 session_weight: float = 0.0):
        if for_you.stage is not discover.stage:
            raise ValueError("both re-rankers must score with the same stage")
        stage: Stage = for_you.stage
        self.for_you, self.discover, self.stage = for_you, discover, stage
        self.served = dict(served or {})
        if not set(self.served) <= set(RERANKED):
            raise ValueError(f"only {' and '.join(RERANKED)} can be answered by a baseline")
        self.items = stage.items
        self.cutoff = cutoff if cutoff is not None else stage.train.cutoff
        self.trending_scores = trending_scores if trending_scores is not None else _trending(stage.train)
        self.for_you.features = self.discover.features = None  # the model never reads the feature store itself
        self.similarity = stage.sources["item_knn"].similarity  # row i: the items like item i (BM25 item-kNN)
        # How far the session moves for_you: the weight of `session_affinity` (in [0, 1]) added to its scores.
        self.session_weight = float(session_weight)

    # ------------------------------------------------------------------------------------------- files
    def save(self, folder: Path) -> Path:
        """Write the model into a new folder, without pickle (training/artifacts.py): item ids and item-side arrays,
        no customer."""
        arrays = artifacts.Arrays()
        arrays.put_ids("items", self.items)
        arrays.put("trending", self.trending_scores)
        config = {"kind": MODEL_NAME, "cutoff": self.cutoff.isoformat(), "session_weight": self.session_weight,
                  "sources": self.stage.save(arrays),
                  "for_you": self.for_you.save(arrays, "for_you"), "discover": self.discover.save(arrays, "discover"),
                  "served": {rail: recipe(model) for rail, model in self.served.items()}}
        for rail, model in self.served.items():
            model.save(arrays, f"served.{rail}")
        return artifacts.write(folder, config, arrays)

    @classmethod
    def load(cls, folder: Path) -> Recommender:
        """The model `save` wrote: it answers exactly as the one that was saved."""
        config, arrays = artifacts.read(folder, MODEL_NAME)
        stage = Stage.load(arrays.ids("items"), config["sources"], arrays)
        served = {rail: from_recipe(made).load(arrays, f"served.{rail}") for rail, made in config["served"].items()}
        return cls(Reranker.load(config["for_you"], arrays, "for_you", stage),
                   Reranker.load(config["discover"], arrays, "discover", stage), served, arrays["trending"],
                   pd.Timestamp(config["cutoff"]), config.get("session_weight", 0.0))

    def recipes(self) -> dict[str, str]:
        """Which recipe answers each rail."""
        return {"for_you": self.served["for_you"].name if "for_you" in self.served else self.for_you.name,
                "discover": self.served["discover"].name if "discover" in self.served else self.discover.name,
                "buy_again": self.stage.sources["personal_frequency"].name,
                "similar_items": self.stage.sources["item_knn"].name, "trending": f"trending_{TRENDING_DAYS}d",
                "recently_viewed": "session"}

    # ------------------------------------------------------------------------------------------- state
    def lines(self, history: pd.DataFrame, customer_ids, at, session: pd.DataFrame | None = None) -> Interactions:
        """Customers' histories (compute.HISTORY columns) and sessions (compute.SESSION, if given) at the moment
        `at`, over the model's items: what the other methods score. Row i is customer_ids[i]; items the model never
        saw are left out."""
        lines = Interactions.of_history(history, pd.Index(pd.Series(customer_ids, dtype="string").astype(str)),
                                        self.items, at)
        return lines if session is None else lines.with_session(session)

    def session_affinity(self, lines: Interactions) -> np.ndarray | None:
        """[n, items] in [0, 1): what each customer's session points at, each browsed item and the items like it
        (its BM25 item-kNN row, scaled to 1 at its nearest), by the session's weights (Interactions.with_session),
        saturating: 1 - exp(-sum). A view just now gives its item 0.63, a cart 0.86; week-old browses next to
        nothing. None where there is nothing: no session given, or none browsed."""
        session = lines.session
        if session is None or not session.nnz:
            return None
        return -np.expm1(-(session + session @ self._similarity_scaled).toarray())

    def browsed(self, lines: Interactions) -> np.ndarray:
        """The items of the first customer's session recent enough to explain an item they are shown."""
        if lines.session is None or not lines.session.nnz:
            return np.array([], dtype=np.int64)
        row = lines.session[0]
        return row.indices[row.data >= SESSION_REASON_WEIGHT]

    @functools.cached_property
    def _similarity_scaled(self):
        nearest = self.similarity.max(axis=1).toarray().ravel()
        return sp.diags(np.where(nearest > 0, 1.0 / np.where(nearest > 0, nearest, 1.0), 0.0)) @ self.similarity

    def moved(self, lines: Interactions, rail: str) -> np.ndarray:
        """Which customers' session moves this rail."""
        if rail != "for_you" or lines.session is None or not self.session_weight:
            return np.zeros(len(lines.customers), dtype=bool)
        return np.diff(lines.session.indptr) > 0

    # ------------------------------------------------------------------------------------------- scores
    def scores(self, lines: Interactions, features: np.ndarray, rail: str) -> np.ndarray:
        """Whole-catalogue scores of customers with a history, on one rail; -inf: never shown. (similar_items: from
        each customer's latest purchase; for_you: moved by the session, `session_weight` × `session_affinity`.)"""
        scores = self._scores(lines, features, rail)
        affinity = self.session_affinity(lines) if rail == "for_you" and self.session_weight else None
        return scores if affinity is None else scores + self.session_weight * affinity

    def _scores(self, lines: Interactions, features: np.ndarray, rail: str) -> np.ndarray:
        if rail in self.served:
            scores = np.asarray(self.served[rail].score_lines(lines), dtype=np.float64)
            if RERANKED[rail] == "explore":  # as the re-ranker it stands in for: only items new to the customer
                scores[lines.counts.toarray() > 0] = -np.inf
            return scores
        if rail == "for_you":
            return self.for_you.score_lines(lines, features)
        if rail == "discover":
            return self.discover.score_lines(lines, features)
        if rail == "buy_again":
            personal = self.stage.sources["personal_frequency"].personal(lines)
            return np.where(personal > 0, personal, -np.inf)
        if rail == "trending":
            return np.tile(self.trending_scores, (len(lines.customers), 1)).astype(np.float64)
        if rail == "similar_items":
            return self.similar(self.latest(lines))
        raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(SCORED)}")

    def similar(self, item_positions: np.ndarray) -> np.ndarray:
        """Item-to-item similarity rows (BM25 item-kNN); the item itself and unrelated items are never shown."""
        rows = self.similarity[np.maximum(item_positions, 0)].toarray().astype(np.float64)
        rows[rows <= 0] = -np.inf
        rows[np.arange(len(item_positions)), np.maximum(item_positions, 0)] = -np.inf
        rows[item_positions < 0] = -np.inf
        return rows

    def latest(self, lines: Interactions) -> np.ndarray:
        """Each customer's latest purchase (item position; -1 without one): where similar_items starts."""
        latest = np.full(len(lines.customers), -1, dtype=np.int64)
        bought = lines.purchases.sort_values(["age_days", "item"], ascending=[False, False], kind="stable")
        latest[bought["customer"].to_numpy()] = bought["item"].to_numpy()  # the last assignment, the youngest, wins
        return latest

    # ------------------------------------------------------------------------------------------- answers
    def rank(self, lines: Interactions, features: np.ndarray, rail: str, k: int, exclude: np.ndarray | None = None,
             anchors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each customer's k best items on a rail, best first, and their scores ([n, k] item positions, -1 past the
        last shown). A customer without a history (a stranger, or one to be answered as one: give them no lines)
        gets `trending`, unless their session moves the rail (for_you: a first visit's views count at once). `exclude`: item positions never shown. similar_items starts from `anchors` (an item position
        per customer, -1 for none; default: their latest purchase), and a customer without one gets `trending`."""
        if rail not in SCORED:
            raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(SCORED)}")
        exclude = np.asarray(exclude if exclude is not None else (), dtype=np.int64)
        n, k = len(lines.customers), min(k, len(self.items))
        ranked = np.full((n, k), -1, dtype=np.int64)
        values = np.full((n, k), -np.inf)
        if rail == "similar_items":
            anchors = self.latest(lines) if anchors is None else np.asarray(anchors, dtype=np.int64)
            known = anchors >= 0
        else:
            known = (np.diff(lines.counts.indptr) > 0) | self.moved(lines, rail)
        if (~known).any():
            trending = self.trending_scores[None, :].astype(np.float64)
            ranked[~known], values[~known] = _cut(_without(trending, exclude), k)
        if known.any() and rail == "similar_items":
            ranked[known], values[known] = self.rank_similar(anchors[known], k, exclude)
        elif known.any():
            rows = np.flatnonzero(known)
            mine = lines.rows(rows) if len(rows) < n else lines
            ranked[known], values[known] = self._best(mine, features[known], rail, k, exclude)
        return ranked, values

    def rank_similar(self, item_positions: np.ndarray, k: int, exclude: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The k items most like each given item (similar_items for an item), as `rank` answers."""
        exclude = np.asarray(exclude if exclude is not None else (), dtype=np.int64)
        return _cut(_without(self.similar(np.asarray(item_positions, dtype=np.int64)), exclude),
                    min(k, len(self.items)))

    def reasons(self, rail: str, owned: np.ndarray, anchor: int, items: np.ndarray,
                browsed: np.ndarray = np.array([], dtype=np.int64)) -> list[tuple[str, int]]:
        """Why each item is shown to a customer who bought the items `owned` (positions; none: a stranger), as (kind,
        item it relates to or -1): "trending", "similar" (to `anchor`), "bought" (before), "because" (they bought the
        related item: the purchase most like it by BM25 item-kNN, the lowest position on a tie) or "like_you"
        (popular with customers like them). On for_you, where the session moves it, what the customer just browsed
        (`browsed`) explains first: "viewed" (the item itself) or "because_viewed" (the browsed item most like it)."""
        if rail == "similar_items" and anchor >= 0:
            return [("similar", anchor)] * len(items)
        seen = np.zeros(len(self.items), dtype=bool)
        if rail == "for_you" and self.session_weight:
            seen[browsed] = True
        if rail == "trending" or not (len(owned) or seen.any()):
            return [("trending", -1)] * len(items)
        if rail == "buy_again":
            return [("bought", -1)] * len(items)
        mask = np.zeros(len(self.items), dtype=bool)
        mask[owned] = True
        similarity, reasons = self._similarity_by_column(), []  # column c of the CSC: the items similar to c
        for item in items:
            span = slice(similarity.indptr[item], similarity.indptr[item + 1])
            rows, values = similarity.indices[span], similarity.data[span]
            if seen[item]:
                reasons.append(("viewed", -1))
            elif mask[item]:
                reasons.append(("bought", -1))
            elif (near := seen[rows] & (values > 0)).any():
                reasons.append(("because_viewed", _most_alike(rows, values, near)))
            elif (mine := mask[rows] & (values > 0)).any():
                reasons.append(("because", _most_alike(rows, values, mine)))
            else:
                reasons.append(("like_you", -1))
        return reasons

    def _similarity_by_column(self):
        # Built on first use, by the process that answers (not by training: the registered model stays small).
        if getattr(self, "_similarity_csc", None) is None:
            self._similarity_csc = self.similarity.tocsc()
        return self._similarity_csc

    # ------------------------------------------------------------------------------------------- lists
    def recommend(self, history: pd.DataFrame, customer_ids, rail: str, k: int, at,
                  features: pd.DataFrame | None = None, block: int = 512, anchors: np.ndarray | None = None,
                  session: pd.DataFrame | None = None) -> pd.DataFrame:
        """Rows (customer_id, rank, item_id, score), best first per customer, in the order the ids came, from their
        histories (compute.HISTORY columns) and sessions (compute.SESSION, if given) at `at` and their features (a
        frame of ranker.CUSTOMER_FEATURES indexed by id; absent: zeros). A customer without a history gets
        `trending`; `anchors` as `rank` takes them."""
        if rail not in SCORED:
            raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(SCORED)}")
        if not 1 <= k <= len(self.items):
            raise LoyalError(f"k must be between 1 and {len(self.items)}, not {k}")
        ids = pd.Index(pd.Series(customer_ids, dtype="string").astype(str))
        lines = self.lines(history, ids, at, session)
        matrix = customer_features(features if features is not None else pd.DataFrame(), ids)

        def answer(start: int) -> pd.DataFrame:
            part = np.arange(start, min(start + block, len(ids)))
            return self._frame(ids[part], *self.rank(lines.rows(part), matrix[part], rail, k,
                                                     anchors=None if anchors is None else anchors[part]))

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

    def _best(self, lines: Interactions, features: np.ndarray, rail: str, k: int, exclude: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """The k best items on a rail of customers with a history, and their scores (-1 where a rail has fewer)."""
        reranker = {"for_you": self.for_you, "discover": self.discover}.get(rail)
        moved = self.moved(lines, rail)
        if reranker is None or rail in self.served or moved.all():
            return _cut(_without(self.scores(lines, features, rail), exclude), k)
        # A re-ranked rail's k best are candidates wherever a customer has k of them left after the exclusions
        # (everything else ranks below every candidate) and no session moves them: ranking the candidates alone
        # spares scoring the whole catalogue. Candidates are in item order, so ties fall as they would in it.
        items, scores = reranker.candidate_scores(lines, features)
        if len(exclude):
            scores = np.where(np.isin(items, exclude), np.float32(-np.inf), scores)
        short = np.flatnonzero((np.isfinite(scores).sum(axis=1) < k) | moved)
        if len(short) == len(items):  # nobody has k candidates
            return _cut(_without(self.scores(lines, features, rail), exclude), k)
        ranked, values = _cut(scores, k)
        ranked = np.where(ranked >= 0, np.take_along_axis(items, np.maximum(ranked, 0), axis=1), -1)
        if len(short):
            ranked[short], values[short] = _cut(_without(self.scores(lines.rows(short), features[short], rail),
                                                         exclude), k)
        return ranked, values

    def _frame(self, ids: pd.Index, ranked: np.ndarray, values: np.ndarray) -> pd.DataFrame:
        rows, ranks = np.nonzero(ranked >= 0)
        return pd.DataFrame({
            CUSTOMER_ID: ids.to_numpy()[rows],
            "rank": ranks + 1,
            ITEM_ID: self.items.to_numpy()[ranked[rows, ranks]],
            "score": values[rows, ranks],
        })


def _most_alike(rows: np.ndarray, values: np.ndarray, among: np.ndarray) -> int:
    """The item of `rows` (where `among`) with the highest similarity, the lowest position on a tie."""
    return int(rows[among][values[among] == values[among].max()].min())


def _trending(train: Interactions) -> np.ndarray:
    """Distinct buyers of each item in the last TRENDING_DAYS before the cutoff; the last 30 days break ties."""
    purchases = train.purchases
    week = np.bincount(
        purchases.loc[purchases["age_days"] <= TRENDING_DAYS, ["customer", "item"]].drop_duplicates()["item"],
        minlength=len(train.items),
    )
    month = np.bincount(
        purchases.loc[purchases["age_days"] <= 30, ["customer", "item"]].drop_duplicates()["item"],
        minlength=len(train.items),
    )
    return week + month / (month.max() + 1.0)


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
VIEWED_REASON = "you viewed this"


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


@dataclass
class State:
    """Customers' state at a moment: histories and sessions (compute.HISTORY and compute.SESSION columns) and their
    features (ranker.CUSTOMER_FEATURES, a frame indexed by id; customers it lacks read zeros)."""
    history: pd.DataFrame
    session: pd.DataFrame
    features: pd.DataFrame
    at: pd.Timestamp
    # As the online store gave them: every feature column of every view (churn reads more than the re-rankers), and
    # whether each customer is there. Only the online state has them; the service reads them once per request.
    online_columns: dict[str, list] | None = None
    online_known: list[bool] | None = None


class OnlineState:
    """Customers' state as the online store holds it now: the history and session every event updates at once
    (features/state.py), and the features as last materialized. The service's."""

    def __init__(self, store, reader: OnlineReader | None = None):
        self.state, self.reader = CustomerState(store), reader or OnlineReader(store)

    def __call__(self, customer_ids: list[str], at=None) -> State:
        lines = self.state.read(customer_ids)
        columns, known = self.reader.read_many(CUSTOMER_ID, customer_ids)
        wanted = [name for name in CUSTOMER_FEATURES if name in columns]
        features = pd.DataFrame({name: columns[name] for name in wanted}, index=pd.Index(customer_ids))
        features = features[np.asarray(known, dtype=bool)]
        if at is None:  # now; or just after the latest line, where a client's clock runs ahead of this one's
            latest = max([int(frame[TIMESTAMP].max()) + 1 for frame in lines.values() if len(frame)], default=0)
            at = max(pd.Timestamp.now("UTC"), pd.Timestamp(latest, unit="us", tz="UTC"))
        return State(lines["history"], lines["session"], features, utc(at), columns, list(known))


class BatchState:
    """Customers' state as of a moment, from the canonical tables and the offline features: `loyal recommend`,
    campaign items, the evaluation. The same lines `compute` makes for the online store."""

    def __init__(self, home: Path, at):
        self.home, self.at = home, utc(at)

    @functools.cached_property
    def _lines(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        transactions = read_table(self.home, "transactions")
        if transactions is None:
            raise LoyalError(f"no transactions under {self.home} yet: ingest data first (`loyal ingest ...`)")
        return (purchase_history(transactions, self.at), session(read_table(self.home, "events"), self.at))

    def __call__(self, customer_ids: list[str], at=None) -> State:
        history, browsed = self._lines
        wanted = set(customer_ids)
        features = features_by_entity(self.home, FEATURE_SERVICE, self.at, {CUSTOMER_ID: pd.Index(customer_ids)})
        return State(history[history[CUSTOMER_ID].isin(wanted)], browsed[browsed[CUSTOMER_ID].isin(wanted)],
                     features[CUSTOMER_ID], self.at)


class Rails:
    """Every rail for every customer, the one way Loyal answers them: the service (a customer at a time, with
    exclusions and reasons, from the online state), `loyal recommend` and campaign items (many at once, from the
    state as of a date) all ask a Rails. A customer on the suppression list is answered exactly as a stranger, here
    and only here."""

    def __init__(self, recommender: Recommender, suppression: Suppression, state,
                 descriptions: Mapping[str, str] | None = None):
        self.recommender, self.suppression, self.state = recommender, suppression, state
        self.descriptions = dict(descriptions or {})
        self.item_ids = recommender.items.to_numpy()

    # A dictionary, not the model's pandas index: one id's position costs 0.1 µs, not 30.
    @functools.cached_property
    def item_position(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    def state_of(self, customer_ids: list[str], at=None) -> State:
        """Their state, with the suppressed answered as strangers (no history, no session, no features)."""
        state = self.state(customer_ids, at)
        gone = [c for c, erased in zip(customer_ids, self.suppression.contains(customer_ids)) if erased]
        if gone:
            state.history = state.history[~state.history[CUSTOMER_ID].isin(gone)]
            state.session = state.session[~state.session[CUSTOMER_ID].isin(gone)]
            state.features = state.features.drop(index=gone, errors="ignore")
        return state

    def table(self, customer_ids, rail: str, k: int) -> pd.DataFrame:
        """Rows (customer_id, rank, item_id, score) for many customers: `loyal recommend`, campaign items."""
        ids = [str(c) for c in customer_ids]
        state = self.state_of(ids)
        if rail == "recently_viewed":
            frames = [self._frame(c, *self._viewed(state, c, k, np.array([], dtype=np.int64))) for c in ids]
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
        anchors = self._anchors(state, ids) if rail == "similar_items" else None
        return self.recommender.recommend(state.history, ids, rail, k, state.at, state.features,
                                          anchors=anchors, session=state.session)[COLUMNS]

    def answer(self, customer_id: str, rail: str, k: int, exclude_item_ids=(), item_id: str | None = None,
               at=None, state: State | None = None) -> Answer:
        """One customer's rail, never showing `exclude_item_ids`; similar_items from `item_id` when given (an item the
        model does not know is UnknownItem), else from the item the customer last viewed or bought. `state`: theirs,
        from `state_of`, where the caller read it already."""
        r = self.recommender
        exclude = np.array([p for p in (self.item_position.get(i, -1) for i in exclude_item_ids) if p >= 0],
                           dtype=np.int64)
        if rail == "similar_items" and item_id is not None:
            anchor = self.item_position.get(item_id, -1)
            if anchor < 0:
                raise UnknownItem(f"item_id {item_id!r} is not in the catalogue the model knows")
            (items,), (scores,) = r.rank_similar(np.array([anchor]), k, exclude)
            return self._answer(items, scores, r.reasons(rail, np.array([], dtype=np.int64), anchor,
                                                         items[items >= 0]), False)
        state = state if state is not None else self.state_of([customer_id], at)
        lines = r.lines(state.history, [customer_id], state.at, state.session)
        owned = lines.counts.indices
        if rail == "recently_viewed":
            items, scores = self._viewed(state, customer_id, k, exclude)
            return self._answer(items, scores, [("viewed", -1)] * int((items >= 0).sum()), False)
        anchors = self._anchors(state, [customer_id]) if rail == "similar_items" else None
        features = customer_features(state.features, lines.customers)
        (items,), (scores,) = r.rank(lines, features, rail, k, exclude, anchors)
        shown = items[items >= 0]
        if anchors is not None:
            return self._answer(items, scores, r.reasons(rail, owned, int(anchors[0]), shown), anchors[0] < 0)
        cold = not len(owned) and not r.moved(lines, rail)[0]
        return self._answer(items, scores, r.reasons(rail, owned, -1, shown, r.browsed(lines)), cold)

    def _anchors(self, state: State, customer_ids: list[str]) -> np.ndarray:
        """Per customer, the item similar_items starts from: the latest they viewed, added to a cart or bought before
        the state's moment (the highest position on a tie), -1 for none."""
        moment = state.at.value // 1000
        lines = pd.concat([state.session[[CUSTOMER_ID, ITEM_ID, TIMESTAMP]],
                           state.history[[CUSTOMER_ID, ITEM_ID, TIMESTAMP]]], ignore_index=True)
        lines = lines.assign(position=lines[ITEM_ID].map(self.item_position).fillna(-1).astype(np.int64))
        lines = lines[(lines["position"] >= 0) & (lines[TIMESTAMP] < moment)]
        latest = lines.sort_values([TIMESTAMP, "position"], kind="stable").groupby(CUSTOMER_ID)["position"].last()
        return latest.reindex(customer_ids).fillna(-1).to_numpy(np.int64)

    def _viewed(self, state: State, customer_id: str, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """recently_viewed: the items of the customer's session, latest first, each once; scores: the view's age in
        days, negated (the latest scores highest)."""
        mine = state.session[(state.session[CUSTOMER_ID] == customer_id)
                             & (state.session[TIMESTAMP] < state.at.value // 1000)]
        mine = mine.sort_values(TIMESTAMP, ascending=False, kind="stable").drop_duplicates(ITEM_ID)
        positions = np.array([self.item_position.get(i, -1) for i in mine[ITEM_ID]], dtype=np.int64)
        ages = (state.at.value // 1000 - mine[TIMESTAMP].to_numpy(np.int64)) / DAY_US
        keep = (positions >= 0) & ~np.isin(positions, exclude)
        items, scores = np.full(k, -1, dtype=np.int64), np.full(k, -np.inf)
        chosen = np.flatnonzero(keep)[:k]
        items[: len(chosen)], scores[: len(chosen)] = positions[chosen], -ages[chosen]
        return items, scores

    def _frame(self, customer_id: str, items: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        shown = items >= 0
        return pd.DataFrame({CUSTOMER_ID: customer_id, "rank": np.arange(1, shown.sum() + 1),
                             ITEM_ID: self.item_ids[items[shown]], "score": scores[shown]})

    def _answer(self, items: np.ndarray, scores: np.ndarray, reasons: list[tuple[str, int]], cold: bool) -> Answer:
        shown = items >= 0
        return Answer(items=[str(i) for i in self.item_ids[items[shown]]], scores=[float(x) for x in scores[shown]],
                      reasons=[self._words(kind, related) for kind, related in reasons], cold_start=cold)

    def _words(self, kind: str, related: int) -> str:
        if kind == "trending":
            return COLD_START_REASON
        if kind == "viewed":
            return VIEWED_REASON
        if kind == "similar":
            return f"similar to {self._name(related)}"
        if kind == "bought":
            return "you bought this before"
        if kind == "because":
            return f"because you bought {self._name(related)}"
        if kind == "because_viewed":
            return f"because you viewed {self._name(related)}"
        return "popular with customers like you"

    def _name(self, item: int) -> str:
        item_id = self.item_ids[item]
        return self.descriptions.get(item_id) or f"item {item_id}"


# ------------------------------------------------------------------------------------------- registered
class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """`loyal-recommender` as an MLflow pyfunc. Input: customers' histories, one row per purchase line
    (customer_id, item_id, timestamp in microseconds since 1970 UTC, order_id), or, for similar_items given items, a
    frame of `item_id`; params `rail`, `k` and `at` (the moment, ISO 8601; default now). Output rows (customer_id,
    rank, item_id, score). The customers' features are not an input: the pyfunc ranks as for customers without
    any (the service and `loyal recommend` read them from the feature store). Registered from code
    (training/model_code/recommender.py): loading it reads the saved arrays, never a pickle."""

    def load_context(self, context):
        self.model = Recommender.load(Path(context.artifacts[ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        rail, k = params.get("rail", "for_you"), int(params.get("k", K))
        if rail == "similar_items" and TIMESTAMP not in model_input.columns:
            return self.model.similar_to(model_input[ITEM_ID], k)
        at = params.get("at") or pd.Timestamp.now("UTC")
        ids = pd.unique(model_input[CUSTOMER_ID].astype(str))
        return self.model.recommend(model_input, ids, rail, k, at)


def load_model(home: Path, version: str | None = None) -> Recommender:
    """The registered model that carries `champion` (or the given version), loaded from the registry."""
    registry = client(home)
    if version is None and champion_version(MODEL_NAME, registry) is None:
        raise LoyalError(f"no {MODEL_NAME} carries the alias champion yet: run `loyal train recommender` first")
    return load_version(MODEL_NAME, version, registry).unwrap_python_model().model


def recommend(home: Path, customer_ids: list[str], rail: str, k: int, at=None, version: str | None = None
              ) -> pd.DataFrame:
    """Rows (customer_id, rank, item_id, score) from the champion (or `version`), from the customers' state as of
    `at` in the canonical tables and the offline features (default: the day after the last purchase, the latest
    moment the tables describe)."""
    if rail not in RAILS:
        raise LoyalError(f"unknown rail {rail!r}: choose one of {', '.join(RAILS)}")
    at = at if at is not None else day_after_last_purchase(home)
    return Rails(load_model(home, version), Suppression(home), BatchState(home, at)).table(customer_ids, rail, int(k))
