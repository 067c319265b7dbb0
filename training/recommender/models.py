"""Recommenders: each is fitted on the purchases before a cutoff and scores the whole catalogue for customers.

Every model has the same two methods, so the evaluation, the rails and the contract test treat them alike:
`fit(train: Interactions) -> self` and `score(customers: positions) -> (customers, items) array`, higher is better.
A candidate source of the re-ranker also writes what it learnt into named arrays (`save(arrays, prefix)`) and takes
it back (`load(train, arrays, prefix)`, with the matrix it was fitted on): models are saved without pickle.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.nearest_neighbours import BM25Recommender
from threadpoolctl import threadpool_limits

from loyal.training.artifacts import Arrays
from loyal.training.recommender.evaluate import Interactions


def _buyers(train: Interactions, max_age_days: float | None = None) -> np.ndarray:
    """Distinct buyers of each item, over all history or the last `max_age_days` before the cutoff."""
    purchases = train.purchases
    if max_age_days is not None:
        purchases = purchases[purchases["age_days"] <= max_age_days]
    pairs = purchases[["customer", "item"]].drop_duplicates()
    return np.bincount(pairs["item"], minlength=len(train.items)).astype(np.float64)


@dataclass(frozen=True)
class PopularityConfig:
    recent_days: float | None = None  # None: all history (global popularity); else only the last N days


class Popularity:
    """The same list for everyone: items by their number of distinct buyers."""

    def __init__(self, config: PopularityConfig = PopularityConfig()):
        self.config = config
        self.name = "global_popularity" if config.recent_days is None else f"recent_popularity_{config.recent_days:g}d"

    def fit(self, train: Interactions) -> Popularity:
        self.buyers = _buyers(train, self.config.recent_days)
        return self

    def score(self, customers: np.ndarray) -> np.ndarray:
        return np.tile(self.buyers, (len(customers), 1))

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put(f"{prefix}.buyers", self.buyers)

    def load(self, train: Interactions, arrays: Arrays, prefix: str) -> Popularity:
        self.buyers = arrays[f"{prefix}.buyers"]
        return self


@dataclass(frozen=True)
class PersonalFrequencyConfig:
    half_life_days: float = 60.0  # a purchase's weight halves every this many days before the cutoff
    fill_recent_days: float = 30.0  # items never bought by the customer follow recent popularity


class PersonalFrequency:
    """"Buy it again": the customer's own purchases of each item, time-decayed; then recent popularity."""

    name = "personal_frequency"

    def __init__(self, config: PersonalFrequencyConfig = PersonalFrequencyConfig()):
        self.config = config

    def fit(self, train: Interactions) -> PersonalFrequency:
        weight = np.power(0.5, train.purchases["age_days"].to_numpy() / self.config.half_life_days)
        self.personal = sp.csr_matrix(
            (weight, (train.purchases["customer"], train.purchases["item"])),
            shape=(len(train.customers), len(train.items)),
        )
        recent = _buyers(train, self.config.fill_recent_days)
        # Below the smallest personal weight: the items a customer never bought follow, in popularity order.
        smallest = float(weight.min()) if len(weight) else 1.0
        self.fill = recent / (recent.max() + 1) * smallest
        return self

    def score(self, customers: np.ndarray) -> np.ndarray:
        personal = self.personal[customers].toarray()
        return np.where(personal > 0, personal, self.fill[None, :])

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put_sparse(f"{prefix}.personal", self.personal)
        arrays.put(f"{prefix}.fill", self.fill)

    def load(self, train: Interactions, arrays: Arrays, prefix: str) -> PersonalFrequency:
        self.personal, self.fill = arrays.sparse(f"{prefix}.personal"), arrays[f"{prefix}.fill"]
        return self


def _binary(train: Interactions):
    """Who bought what (1/0), as float32 CSR: the input of the item-item and factor models."""
    bought = train.counts.copy()
    bought.data[:] = 1.0
    return bought.astype(np.float32)


@dataclass(frozen=True)
class ItemKNNConfig:
    neighbours: int = 100
    k1: float = 1.2  # BM25 term-frequency saturation
    b: float = 0.75  # BM25 length normalisation


class ItemKNN:
    """Item-to-item nearest neighbours on BM25-weighted purchases (implicit's BM25Recommender)."""

    name = "item_knn_bm25"

    def __init__(self, config: ItemKNNConfig = ItemKNNConfig()):
        self.config = config

    def fit(self, train: Interactions) -> ItemKNN:
        self.user_items = train.counts.astype(np.float32).tocsr()
        model = BM25Recommender(K=self.config.neighbours, K1=self.config.k1, B=self.config.b, num_threads=1)
        with warnings.catch_warnings():
            # implicit weights the matrix into COO itself, then warns that it was not given CSR.
            warnings.filterwarnings("ignore", "Method expects CSR input", category=Warning)
            model.fit(self.user_items, show_progress=False)
        # Row i: the items like item i, by BM25 similarity (CSR, as implicit leaves it).
        self.similarity = sp.csr_matrix(model.similarity)
        return self

    def score(self, customers: np.ndarray) -> np.ndarray:
        # The user's purchases times the item-item similarity: implicit's own scoring, for the whole catalogue.
        return np.asarray((self.user_items[customers] @ self.similarity).todense())

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put_sparse(f"{prefix}.similarity", self.similarity)

    def load(self, train: Interactions, arrays: Arrays, prefix: str) -> ItemKNN:
        self.user_items = train.counts.astype(np.float32).tocsr()
        self.similarity = arrays.sparse(f"{prefix}.similarity")
        return self


@dataclass(frozen=True)
class EASEConfig:
    l2: float = 200.0  # DESIGN.md's anchor uses λ = 200


class EASE:
    """EASE (Steck, 2019): a closed-form item-item regression with a zero diagonal."""

    name = "ease"

    def __init__(self, config: EASEConfig = EASEConfig()):
        self.config = config

    def fit(self, train: Interactions) -> EASE:
        self.bought = _binary(train)
        gram = (self.bought.T @ self.bought).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        precision = np.linalg.inv(gram)
        self.weights = (precision / -np.diag(precision)).astype(np.float32)  # float32 halves the stored model
        self.weights[np.diag_indices_from(self.weights)] = 0.0
        return self

    def score(self, customers: np.ndarray) -> np.ndarray:
        return self.bought[customers] @ self.weights

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put(f"{prefix}.weights", self.weights)

    def load(self, train: Interactions, arrays: Arrays, prefix: str) -> EASE:
        self.bought, self.weights = _binary(train), arrays[f"{prefix}.weights"]
        return self


@dataclass(frozen=True)
class ALSConfig:
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 1.0  # confidence scaling of purchase counts
    iterations: int = 15
    seed: int = 0


class _Factors:
    """A matrix factorisation fitted by implicit: a customer's score for an item is the dot product of their factors."""

    user_factors: np.ndarray
    item_factors: np.ndarray

    def score(self, customers: np.ndarray) -> np.ndarray:
        # In float64: float32 products come out of BLAS differently for different batch shapes (2e-7 here), enough to
        # flip which items make a customer's candidate cut, so that their answer would depend on who else is scored.
        return self.user_factors[customers].astype(np.float64) @ self.item_factors.T.astype(np.float64)

    def _keep(self, model) -> None:
        self.user_factors, self.item_factors = np.asarray(model.user_factors), np.asarray(model.item_factors)

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put(f"{prefix}.user_factors", self.user_factors)
        arrays.put(f"{prefix}.item_factors", self.item_factors)

    def load(self, train: Interactions, arrays: Arrays, prefix: str):
        self.user_factors, self.item_factors = arrays[f"{prefix}.user_factors"], arrays[f"{prefix}.item_factors"]
        return self


class ALS(_Factors):
    """Implicit-feedback matrix factorisation (implicit's AlternatingLeastSquares, CPU)."""

    name = "als"

    def __init__(self, config: ALSConfig = ALSConfig()):
        self.config = config

    def fit(self, train: Interactions) -> ALS:
        c = self.config
        # implicit parallelises itself; BLAS threads on top of it only contend (implicit checks and warns).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=c.factors, regularization=c.regularization, alpha=c.alpha, iterations=c.iterations,
                random_state=c.seed, num_threads=1,
            )
            model.fit(train.counts.astype(np.float32).tocsr(), show_progress=False)
        self._keep(model)
        return self


@dataclass(frozen=True)
class BPRConfig:
    factors: int = 64
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 0


class BPR(_Factors):
    """Bayesian personalised ranking (implicit's BayesianPersonalizedRanking, CPU): pairwise, bought over not."""

    name = "bpr"

    def __init__(self, config: BPRConfig = BPRConfig()):
        self.config = config

    def fit(self, train: Interactions) -> BPR:
        c = self.config
        # One thread: implicit's BPR updates shared factors lock-free, so more threads give a different model each run.
        model = BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, random_state=c.seed, num_threads=1,
        )
        model.fit(_binary(train), show_progress=False)
        self._keep(model)
        return self


# Every baseline is a recipe: its class and config name it, so that one chosen to answer a rail is saved and
# served like the re-rankers (see Recommender.served).
RECIPES = {cls.__name__: cls for cls in (Popularity, PersonalFrequency, ItemKNN, EASE, ALS, BPR)}


def recipe(model) -> dict:
    """What makes `model` again: its class, config and name (a tuned baseline's says which tuning)."""
    return {"class": type(model).__name__, "config": asdict(model.config), "name": model.name}


def from_recipe(made: dict):
    """An unfitted model from `recipe`'s answer."""
    cls = RECIPES[made["class"]]
    model = cls(type(cls().config)(**made["config"]))
    model.name = made.get("name", model.name)
    return model


BASELINES = (
    lambda: Popularity(),
    lambda: Popularity(PopularityConfig(recent_days=30)),
    lambda: PersonalFrequency(),
    lambda: ItemKNN(),
    lambda: EASE(),
    lambda: ALS(),
    lambda: BPR(),
)
