"""A PyTorch re-ranker: candidates from several recommenders, re-ordered by a small network that reads their scores,
the customer's history with each item and the `offers_v1` features (the customer's and the item's).

How it learns without touching the test window: given the purchases before a cutoff C, the candidate sources are
fitted on the purchases before C - `label_days` and the network learns which of their candidates were bought in
[C - label_days, C), with the features as of C - label_days. To recommend, the sources are fitted again on everything
before C and the network scores their candidates with the features as of C.

Two views, as in the evaluation: "all" (the `for_you` rail; every item may come back) and "explore" (the `discover`
rail: only items new to the customer are candidates, and only those count as bought).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Protocol

import numpy as np
import pandas as pd
import torch

from loyal.features.repo import features_by_entity
from loyal.schema import CUSTOMER_ID, ITEM_ID
from loyal.training.artifacts import Arrays
from loyal.training.recommender.evaluate import Interactions, top_k
from loyal.training.optimise import train_epochs
from loyal.training.recommender.models import (
    ALS,
    EASE,
    ItemKNN,
    PersonalFrequency,
    Popularity,
    PopularityConfig,
    from_recipe,
    recipe,
)

VIEWS = ("all", "explore")
# The candidate sources, each a factory; their scores are the network's first features.
SOURCES: dict[str, Callable] = {
    "personal_frequency": PersonalFrequency,
    "item_knn": ItemKNN,
    "ease": EASE,
    "als": ALS,
    "recent_popularity": lambda: Popularity(PopularityConfig(recent_days=30)),
    "global_popularity": Popularity,
}
# offers_v1 features the network reads, each through log1p (counts and money) or as it is (shares and trends).
CUSTOMER_FEATURES = {
    "recency_days": "log", "tenure_days": "log", "orders_90d": "log", "orders_365d": "log", "spend_90d": "log",
    "spend_365d": "log", "avg_order_value_365d": "log", "spend_trend": "raw",
}
ITEM_FEATURES = {
    "item_buyers_7d": "log", "item_buyers_30d": "log", "item_buyers_90d": "log", "item_buyers_365d": "log",
    "item_revenue_30d": "log", "item_avg_price_365d": "log", "item_repeat_rate_365d": "raw", "item_trend_30d": "raw",
}


class FeatureSource(Protocol):
    """Where the customer and item features come from: (time, customer ids, item ids) -> two frames indexed by id."""

    def __call__(self, at: pd.Timestamp, customers: pd.Index, items: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame]: ...


class FeastFeatures:
    """The `offers_v1` FeatureService from the feature store under `home`, point in time."""

    def __init__(self, home):
        self.home = home

    def __call__(self, at, customers, items):
        frames = features_by_entity(self.home, "offers_v1", at, {CUSTOMER_ID: customers, ITEM_ID: items})
        return frames[CUSTOMER_ID], frames[ITEM_ID]


def no_features(at, customers, items) -> tuple[pd.DataFrame, pd.DataFrame]:
    """No customer or item features (unit tests on planted matrices): the network reads scores and history only."""
    return pd.DataFrame(index=customers), pd.DataFrame(index=items)


def customer_features(frame: pd.DataFrame, customers: pd.Index) -> np.ndarray:
    """The customers' features the network reads ([n, F] float32), from a frame of CUSTOMER_FEATURES indexed by id
    (the feature store's, as of a moment or online now); a customer it lacks reads zeros."""
    return _transform(frame, CUSTOMER_FEATURES, customers)


def _transform(frame: pd.DataFrame, catalogue: dict[str, str], index: pd.Index) -> np.ndarray:
    """The catalogue's columns of `frame` for `index` as float32, log1p where asked; absent values are 0. A frame
    with no columns at all is the `no_features` source (zeros); one that lacks some of them is an error, not zeros."""
    if not len(frame.columns):
        return np.zeros((len(index), len(catalogue)), np.float32)
    missing = [name for name in catalogue if name not in frame.columns]
    if missing:
        raise ValueError(f"the feature source gave no {missing[0]!r} (it gave {', '.join(frame.columns)})")
    rows = frame[list(catalogue)].reindex(index.astype(str))  # once for every column: a request reads one row
    if not all(pd.api.types.is_numeric_dtype(dtype) for dtype in rows.dtypes):  # e.g. a column of None only
        rows = rows.apply(pd.to_numeric, errors="coerce")
    values = np.nan_to_num(rows.to_numpy(dtype=np.float64), nan=0.0)
    logged = np.array([how == "log" for how in catalogue.values()])
    values[:, logged] = np.log1p(np.maximum(values[:, logged], 0.0))
    return values.astype(np.float32)


@dataclass(frozen=True)
class RankerConfig:
    view: str = "all"  # "all" (for_you) or "explore" (discover)
    candidates_per_source: int = 50  # each source's top items per customer; their union is re-ranked
    hidden: int = 64
    epochs: int = 30
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    seed: int = 0
    # Subtracted from a candidate's score per unit of log(1 + its buyers); None: the view's default below.
    popularity_penalty: float | None = None

    @property
    def penalty(self) -> float:
        return POPULARITY_PENALTY[self.view] if self.popularity_penalty is None else self.popularity_penalty


# discover exists to show customers what they would not find themselves; left alone, its network leans on best
# sellers. Training chooses its penalty on the validation window (training._choose_penalty: the best NDCG@10 of a
# few, never looking at a test window); these are the defaults of a re-ranker fitted outside training (0.4 was
# once chosen by looking at the 2011-11-09 test window, which is why training no longer takes it as given).
# for_you already shows over 30% of the catalogue and is left alone.
POPULARITY_PENALTY = {"all": 0.0, "explore": 0.4}


LABEL_DAYS = 30  # the days before a cutoff whose purchases teach the network: the protocol's test window, earlier
NEVER_BOUGHT_DAYS = 3650.0  # "days since the customer last bought the item" of an item never bought


class Stage:
    """The sources fitted on one matrix, with the item features as of its cutoff: turns customers' histories into
    candidate lists. What it keeps is about items; the customers it was fitted on (and their features as of the
    cutoff) stay only in the process that fitted it, for learning and measuring.

    One stage serves both views and every trial of a tuning run; only the network differs."""

    def __init__(self, train: Interactions, features: FeatureSource):
        customer_frame, item_frame = features(train.cutoff, train.customers, train.items)
        self._set(train.items, {name: factory().fit(train) for name, factory in SOURCES.items()},
                  _transform(item_frame, ITEM_FEATURES, train.items))
        self.train = train
        self.customer_features = customer_features(customer_frame, train.customers)

    def _set(self, items: pd.Index, sources: dict, item_features: np.ndarray):
        self.items, self.sources, self.item_features = items, sources, item_features
        self.train, self.customer_features = None, None

    def save(self, arrays: Arrays) -> dict:
        """Write the stage's fitted sources and item features into `arrays`; returns its config (each source's
        recipe)."""
        arrays.put("stage.item_features", self.item_features)
        for name, source in self.sources.items():
            source.save(arrays, f"source.{name}")
        return {name: recipe(source) for name, source in self.sources.items()}

    @classmethod
    def load(cls, items: pd.Index, config: dict, arrays: Arrays) -> Stage:
        """The stage `save` wrote: nothing is fitted again."""
        stage = cls.__new__(cls)
        stage._set(items, {name: from_recipe(config[name]).load(arrays, f"source.{name}") for name in SOURCES},
                   arrays["stage.item_features"])
        return stage

    def rows(self, customers: np.ndarray) -> tuple[Interactions, np.ndarray]:
        """The histories and features (as of the cutoff) of customers it was fitted on, by position."""
        return self.train.rows(customers), self.customer_features[customers]

    def candidates(self, lines: Interactions, features: np.ndarray, view: str, per_source: int):
        """Per customer (the rows of `lines`, their features the rows of `features`), the union of each source's top
        items (padded with -1) and their features.

        Returns (items [n, C], features [n, C, F], mask [n, C]); in the explore view no bought item is a candidate."""
        n = len(lines.customers)
        bought = lines.counts.toarray() > 0
        chosen = np.zeros((n, len(self.items)), dtype=bool)
        source_scores = []
        for source in self.sources.values():
            scores = np.asarray(source.score_lines(lines), dtype=np.float64)
            if view == "explore":
                scores = np.where(bought, -np.inf, scores)
            top = top_k(scores, per_source)  # never an item scored -inf: in the explore view, none bought
            rows, slots = np.nonzero(top >= 0)
            chosen[rows, top[rows, slots]] = True
            source_scores.append(scores)
        # Each row: its chosen items in item order, then -1.
        rows, chosen_items = np.nonzero(chosen)
        per_row = chosen.sum(axis=1)
        slots = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        items = np.full((n, int(per_row.max()) if n else 0), -1, dtype=np.int64)
        items[rows, slots] = chosen_items
        mask = items >= 0
        safe = np.maximum(items, 0)
        # Per source: its score scaled by the customer's best score, and its rank among the candidates (ranking
        # only the candidates, not the catalogue, keeps scoring everyone fast).
        columns = []
        for scores in source_scores:
            finite = np.where(np.isfinite(scores), scores, 0.0)
            largest = np.abs(finite).max(axis=1, keepdims=True)
            mine = np.take_along_axis(scores, safe, axis=1)
            columns += [
                np.take_along_axis(finite, safe, axis=1) / np.where(largest > 0, largest, 1.0),
                np.log1p(_rank(np.where(mask, mine, -np.inf))),
            ]
        times, since = _history(lines)
        columns += [
            np.take_along_axis(bought, safe, axis=1).astype(np.float64),
            np.log1p(np.take_along_axis(times, safe, axis=1)),
            np.log1p(np.take_along_axis(since, safe, axis=1)),
            np.broadcast_to(np.log1p(np.diff(lines.counts.indptr).astype(np.float64))[:, None], items.shape),
        ]
        pair = np.stack(columns, axis=2).astype(np.float32)
        customer = np.broadcast_to(features[:, None, :], (*items.shape, features.shape[1]))
        item = self.item_features[safe]
        return items, np.concatenate([pair, customer, item], axis=2), mask


def _history(lines: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Per (customer, item) of the catalogue: purchase lines, and days since the latest (at most ten years: never
    bought reads as ten years ago)."""
    times = lines.counts.toarray().astype(np.float64)
    since = np.full(times.shape, np.inf)
    np.minimum.at(since, (lines.purchases["customer"].to_numpy(), lines.purchases["item"].to_numpy()),
                  lines.purchases["age_days"].to_numpy(np.float64))
    return times, np.minimum(since, NEVER_BOUGHT_DAYS)  # a purchase ten years old reads as never made


def _rank(scores: np.ndarray) -> np.ndarray:
    """Each item's rank in its row, from 0: how many items score strictly higher (tied items share a rank)."""
    order = np.argsort(-scores, axis=1)  # not stable, and need not be: ties get one rank below
    ordered = np.take_along_axis(scores, order, axis=1)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first_of_tie = np.maximum.accumulate(np.where(starts, np.arange(scores.shape[1]), 0), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, first_of_tie, axis=1)
    return rank


@dataclass
class LabelledStage:
    """A stage fitted LABEL_DAYS before a cutoff, with the purchases of those days: what a network learns from."""

    stage: Stage
    later: pd.DataFrame  # (customer, item) bought in [cutoff - LABEL_DAYS, cutoff)

    @classmethod
    def before(cls, train: Interactions, features: FeatureSource, days: int = LABEL_DAYS) -> LabelledStage:
        earlier, later = train.earlier(days)
        return cls(Stage(earlier, features), later)

    def lists(self, view: str, per_source: int):
        """Candidate lists of the customers who bought in the label window, and which candidates they bought."""
        counts = self.stage.train.counts
        later = self.later
        if view == "explore":
            later = later[counts[later["customer"], later["item"]].A1 == 0]
        later = later[np.diff(counts.indptr)[later["customer"]] > 0]  # customers the stage knows
        customers = np.unique(later["customer"].to_numpy())
        items, features, mask = self.stage.candidates(*self.stage.rows(customers), view, per_source)
        keys = pd.MultiIndex.from_arrays([np.repeat(customers, items.shape[1]), items.ravel()])
        labels = keys.isin(pd.MultiIndex.from_frame(later[["customer", "item"]])).reshape(items.shape) & mask
        keep = labels.any(axis=1)  # a list without a bought candidate teaches a softmax nothing
        return features[keep], mask[keep], labels[keep]


def _network(features: int, hidden: int):
    return torch.nn.Sequential(
        torch.nn.Linear(features, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, max(hidden // 2, 1)),
        torch.nn.ReLU(),
        torch.nn.Linear(max(hidden // 2, 1), 1),
    )


class Reranker:
    """Candidates from SOURCES, re-ranked by a network trained with a listwise softmax loss on the label window.

    `fit(train)` builds its own stages; `fit_stages(labelled, current)` takes stages already built, so that both
    views and every tuning trial share the sources' fitting."""

    def __init__(self, config: RankerConfig = RankerConfig(), features: FeatureSource = no_features):
        if config.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}")
        self.config, self.features = config, features
        self.name = "reranker_for_you" if config.view == "all" else "reranker_discover"

    def fit(self, train: Interactions) -> Reranker:
        return self.fit_stages(LabelledStage.before(train, self.features), Stage(train, self.features))

    def fit_stages(self, labelled: LabelledStage, current: Stage, epoch_callback=None) -> Reranker:
        """Learn on `labelled`, then score with `current`. `epoch_callback(epoch, reranker)` runs after each epoch
        (Optuna's pruning); it may raise to stop."""
        c = self.config
        torch.manual_seed(c.seed)
        features, mask, labels = labelled.lists(c.view, c.candidates_per_source)
        flat = features[mask]
        self.mean = flat.mean(axis=0) if len(flat) else np.zeros(features.shape[2], np.float32)
        self.std = flat.std(axis=0) + 1e-6 if len(flat) else np.ones(features.shape[2], np.float32)
        x = torch.from_numpy((features - self.mean) / self.std)
        m = torch.from_numpy(mask)
        target = torch.from_numpy(labels.astype(np.float32))
        target = target / target.sum(dim=1, keepdim=True).clamp(min=1.0)  # spread each list's mass over its buys
        self.network = _network(features.shape[2], c.hidden)
        self.stage = current
        optimiser = torch.optim.Adam(self.network.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)

        def listwise_loss(batch):
            logits = self.network(x[batch]).squeeze(-1).masked_fill(~m[batch], float("-inf"))
            log_p = torch.log_softmax(logits, dim=1).masked_fill(~m[batch], 0.0)
            return -(target[batch] * log_p).sum(dim=1).mean()

        train_epochs(self.network, optimiser, len(x), 64, c.epochs, c.seed, listwise_loss,
                     None if epoch_callback is None else lambda epoch: epoch_callback(epoch, self))
        return self

    def save(self, arrays: Arrays, prefix: str) -> dict:
        """Write the network and its input scales into `arrays`; returns the config. The stage is saved apart."""
        arrays.put(f"{prefix}.mean", self.mean)
        arrays.put(f"{prefix}.std", self.std)
        arrays.put_state(f"{prefix}.network", self.network)
        return asdict(self.config)

    @classmethod
    def load(cls, config: dict, arrays: Arrays, prefix: str, stage: Stage) -> Reranker:
        reranker = cls(RankerConfig(**config), features=no_features)
        reranker.mean, reranker.std = arrays[f"{prefix}.mean"], arrays[f"{prefix}.std"]
        reranker.network = arrays.load_state(f"{prefix}.network", _network(len(reranker.mean), reranker.config.hidden))
        reranker.stage = stage
        return reranker

    def candidate_scores(self, lines: Interactions, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items [n, C], scores [n, C]): each customer's candidates in item order (-1 pads a row) and their scores,
        the network's less the popularity penalty (-inf where a row is padded). A customer with at least k
        candidates has its k best among them: `score_lines` ranks every other item below every candidate."""
        items, pairs, mask = self.stage.candidates(lines, features, self.config.view, self.config.candidates_per_source)
        with torch.no_grad():
            out = self.network(torch.from_numpy((pairs - self.mean) / self.std)).squeeze(-1).numpy()
        popularity = np.log1p(self.stage.sources["global_popularity"].buyers).astype(np.float32)
        out = out - self.config.penalty * popularity[np.maximum(items, 0)]
        return items, np.where(mask, out, np.float32(-np.inf))

    def score_lines(self, lines: Interactions, features: np.ndarray) -> np.ndarray:
        """Whole-catalogue scores: candidates get the network's score less the popularity penalty; every other item
        follows below them all, in order of popularity (the explore view: never an item the customer bought, -inf)."""
        buyers = self.stage.sources["global_popularity"].buyers
        below = buyers / (buyers.max() + 1.0) - 2.0  # in [-2, -1): under every candidate once shifted
        items, out = self.candidate_scores(lines, features)
        mask = items >= 0
        rows, cols = np.nonzero(mask)
        # Each customer's own lowest candidate score: what one customer is answered never depends on who else is
        # scored beside them.
        floor = np.where(mask, out, np.inf).min(axis=1, initial=np.inf)
        floor = np.where(np.isfinite(floor), floor, 0.0)
        scores = (floor[:, None] + below[None, :]).astype(np.float32)
        scores[rows, items[rows, cols]] = out[rows, cols]
        if self.config.view == "explore":
            scores[lines.counts.toarray() > 0] = -np.inf
        return scores

    def score(self, customers: np.ndarray, block: int = 512) -> np.ndarray:
        """`score_lines` of customers the stage was fitted on, by position, a block at a time (the evaluation)."""
        parts = [self.score_lines(*self.stage.rows(customers[start : start + block]))
                 for start in range(0, len(customers), block)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.stage.items)), dtype=np.float32)
