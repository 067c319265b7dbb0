"""Recommenders: each is fitted on the purchases before a cutoff and scores the whole catalogue for customers.

Every model has the same two methods, so the evaluation, the rails and the contract test treat them alike:
`fit(train: Interactions) -> self` and `score(customers: positions) -> (customers, items) array`, higher is better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loyal.training.evaluate import Interactions


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
        import scipy.sparse as sp

        weight = np.power(0.5, train.purchases["age_days"].to_numpy() / self.config.half_life_days)
        self.personal = sp.csr_matrix(
            (weight, (train.purchases["customer"], train.purchases["item"])),
            shape=(len(train.customers), len(train.items)),
        )
        recent = _buyers(train, self.config.fill_recent_days)
        # Scaled below the smallest personal weight, so popularity only orders what the customer never bought.
        self.fill = recent / (recent.max() + 1) * np.power(0.5, 10)
        self.fill_floor = float(weight.min()) if len(weight) else 1.0
        return self

    def score(self, customers: np.ndarray) -> np.ndarray:
        personal = self.personal[customers].toarray()
        return personal + self.fill[None, :] * self.fill_floor
