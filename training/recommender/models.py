"""Recommenders: each is fitted on the purchases before a cutoff and scores the whole catalogue for customers.

What a model learns is about items only (popularity, item-item similarities, item factors); a customer is their
purchase history, given at scoring time. So every model has the same three methods, and the evaluation, the rails
and the contract test treat them alike:
- `fit(train: Interactions) -> self`;
- `score_lines(lines: Interactions) -> (customers, items) array`, higher is better: any customers' histories (the
  rows of `lines`), as they are now, in the model's item positions;
- `score(customers: positions)`: the rows of the customers it was fitted on, scored as above (the evaluation).
A model writes what it learnt into named arrays (`save(arrays, prefix)`) and takes it back (`load(arrays, prefix)`):
models are saved without pickle, and without a customer.
"""

from __future__ import annotations

import functools
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


class _Scored:
    """`score(customers)` of a fitted model: the histories it was fitted on, scored as any others."""

    train: Interactions

    def score(self, customers: np.ndarray) -> np.ndarray:
        return self.score_lines(self.train.rows(customers))


class Popularity(_Scored):
    """The same list for everyone: items by their number of distinct buyers."""

    def __init__(self, config: PopularityConfig = PopularityConfig()):
        self.config = config
        self.name = "global_popularity" if config.recent_days is None else f"recent_popularity_{config.recent_days:g}d"

    def fit(self, train: Interactions) -> Popularity:
        self.train, self.buyers = train, _buyers(train, self.config.recent_days)
        return self

    def score_lines(self, lines: Interactions) -> np.ndarray:
        return np.tile(self.buyers, (len(lines.customers), 1))

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put(f"{prefix}.buyers", self.buyers)

    def load(self, arrays: Arrays, prefix: str) -> Popularity:
        self.buyers = arrays[f"{prefix}.buyers"]
        return self


FILL_BELOW_DAYS = 36_500.0  # items never bought score below a purchase this old (and above 0: no underflow)


@dataclass(frozen=True)
class PersonalFrequencyConfig:
    half_life_days: float = 60.0  # a purchase's weight halves every this many days before the cutoff
    fill_recent_days: float = 30.0  # items never bought by the customer follow recent popularity


class PersonalFrequency(_Scored):
    """"Buy it again": the customer's own purchases of each item, time-decayed; then recent popularity."""

    name = "personal_frequency"

    def __init__(self, config: PersonalFrequencyConfig = PersonalFrequencyConfig()):
        self.config = config

    def fit(self, train: Interactions) -> PersonalFrequency:
        self.train = train
        recent = _buyers(train, self.config.fill_recent_days)
        # Below the weight of any purchase of the last hundred years: the items a customer never bought follow, in
        # popularity order. (A fixed floor, not the training data's smallest weight: the same history scores the
        # same whatever else the model was fitted on, and a history read years after training too.)
        self.fill = recent / (recent.max() + 1) * np.power(0.5, FILL_BELOW_DAYS / self.config.half_life_days)
        return self

    def personal(self, lines: Interactions) -> np.ndarray:
        """Each customer's own purchases of each item, time-decayed (0 where never bought)."""
        weight = np.power(0.5, lines.purchases["age_days"].to_numpy() / self.config.half_life_days)
        return sp.csr_matrix((weight, (lines.purchases["customer"], lines.purchases["item"])),
                             shape=(len(lines.customers), len(lines.items))).toarray()

    def score_lines(self, lines: Interactions) -> np.ndarray:
        personal = self.personal(lines)
        return np.where(personal > 0, personal, self.fill[None, :])

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put(f"{prefix}.fill", self.fill)

    def load(self, arrays: Arrays, prefix: str) -> PersonalFrequency:
        self.fill = arrays[f"{prefix}.fill"]
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


class ItemKNN(_Scored):
    """Item-to-item nearest neighbours on BM25-weighted purchases (implicit's BM25Recommender)."""

    name = "item_knn_bm25"

    def __init__(self, config: ItemKNNConfig = ItemKNNConfig()):
        self.config = config

    def fit(self, train: Interactions) -> ItemKNN:
        self.train = train
        model = BM25Recommender(K=self.config.neighbours, K1=self.config.k1, B=self.config.b, num_threads=1)
        with warnings.catch_warnings():
            # implicit weights the matrix into COO itself, then warns that it was not given CSR.
            warnings.filterwarnings("ignore", "Method expects CSR input", category=Warning)
            model.fit(train.counts.astype(np.float32).tocsr(), show_progress=False)
        # Row i: the items like item i, by BM25 similarity (CSR, as implicit leaves it).
        self.similarity = sp.csr_matrix(model.similarity)
        return self

    def score_lines(self, lines: Interactions) -> np.ndarray:
        # The customer's purchases times the item-item similarity: implicit's own scoring, for the whole catalogue.
        return np.asarray((lines.counts.astype(np.float32) @ self.similarity).todense())

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put_sparse(f"{prefix}.similarity", self.similarity)

    def load(self, arrays: Arrays, prefix: str) -> ItemKNN:
        self.similarity = arrays.sparse(f"{prefix}.similarity")
        return self


@dataclass(frozen=True)
class EASEConfig:
    l2: float = 200.0  # DESIGN.md's anchor uses λ = 200


class EASE(_Scored):
    """EASE (Steck, 2019): a closed-form item-item regression with a zero diagonal."""

    name = "ease"

    def __init__(self, config: EASEConfig = EASEConfig()):
        self.config = config

    def fit(self, train: Interactions) -> EASE:
        self.train = train
        bought = _binary(train)
        gram = (bought.T @ bought).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        precision = np.linalg.inv(gram)
        self.weights = (precision / -np.diag(precision)).astype(np.float32)  # float32 halves the stored model
        self.weights[np.diag_indices_from(self.weights)] = 0.0
        return self

    def score_lines(self, lines: Interactions) -> np.ndarray:
        return _binary(lines) @ self.weights

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put(f"{prefix}.weights", self.weights)

    def load(self, arrays: Arrays, prefix: str) -> EASE:
        self.weights = arrays[f"{prefix}.weights"]
        return self


@dataclass(frozen=True)
class ALSConfig:
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 1.0  # confidence scaling of purchase counts
    iterations: int = 15
    seed: int = 0


class _Factors(_Scored):
    """A matrix factorisation fitted by implicit: a customer's score for an item is the dot product of their factors
    and the item's. Only the item factors are kept; a customer's are solved from their history when scored."""

    item_factors: np.ndarray

    def score_lines(self, lines: Interactions) -> np.ndarray:
        # In float64: float32 products come out of BLAS differently for different batch shapes (2e-7 here), enough to
        # flip which items make a customer's candidate cut, so that their answer would depend on who else is scored.
        return self.user_factors(lines).astype(np.float64) @ self.item_factors.T.astype(np.float64)

    def save(self, arrays: Arrays, prefix: str) -> None:
        arrays.put(f"{prefix}.item_factors", self.item_factors)

    def load(self, arrays: Arrays, prefix: str):
        self.item_factors = arrays[f"{prefix}.item_factors"]
        return self


class ALS(_Factors):
    """Implicit-feedback matrix factorisation (implicit's AlternatingLeastSquares, CPU). A customer's factors are
    implicit's own least-squares solution against the item factors (`recalculate_user`), from their history now."""

    name = "als"

    def __init__(self, config: ALSConfig = ALSConfig()):
        self.config = config

    def _model(self) -> AlternatingLeastSquares:
        c = self.config
        return AlternatingLeastSquares(factors=c.factors, regularization=c.regularization, alpha=c.alpha,
                                       iterations=c.iterations, random_state=c.seed, num_threads=1)

    def fit(self, train: Interactions) -> ALS:
        self.train = train
        # implicit parallelises itself; BLAS threads on top of it only contend (implicit checks and warns).
        with threadpool_limits(1, "blas"):
            model = self._model()
            model.fit(train.counts.astype(np.float32).tocsr(), show_progress=False)
        self.item_factors = np.asarray(model.item_factors)
        return self

    def user_factors(self, lines: Interactions) -> np.ndarray:
        return self._solver.recalculate_user(np.arange(len(lines.customers)), lines.counts.astype(np.float32).tocsr())

    @functools.cached_property
    def _solver(self) -> AlternatingLeastSquares:
        """implicit's model around the item factors, made once: it keeps their Gram matrix (YtY) for every customer
        solved after. (threadpoolctl's limit costs 4 ms a call: it is taken once, here, where implicit checks BLAS.)"""
        with threadpool_limits(1, "blas"):
            model = self._model()
            model.item_factors = self.item_factors
            model.YtY  # noqa: B018 - computed and kept now, not by the first request
        return model


@dataclass(frozen=True)
class BPRConfig:
    factors: int = 64
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 0


class BPR(_Factors):
    """Bayesian personalised ranking (implicit's BayesianPersonalizedRanking, CPU): pairwise, bought over not. implicit
    cannot solve a customer's factors from a history, so they are folded in: the mean factors of the items bought
    (with the item-bias column's weight 1)."""

    name = "bpr"

    def __init__(self, config: BPRConfig = BPRConfig()):
        self.config = config

    def fit(self, train: Interactions) -> BPR:
        c = self.config
        self.train = train
        # One thread: implicit's BPR updates shared factors lock-free, so more threads give a different model each run.
        model = BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, random_state=c.seed, num_threads=1,
        )
        model.fit(_binary(train), show_progress=False)
        self.item_factors = np.asarray(model.item_factors)
        return self

    def user_factors(self, lines: Interactions) -> np.ndarray:
        bought = _binary(lines)
        sizes = np.maximum(np.diff(bought.indptr), 1).astype(np.float32)
        users = np.asarray(bought @ self.item_factors) / sizes[:, None]
        users[:, -1] = 1.0  # implicit's last item factor is the item's bias
        return users


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
