"""One contract for every recommender, on a planted-signal matrix (implicit's checkerboard idea).

Twenty customers, twenty items: even customers buy even items, odd customers odd items, each missing one item of
their own parity. A model that learns from other customers must rank that missing item above every item of the
other parity; every model must score the whole catalogue, finitely, the same way twice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loyal.training.recommender.evaluate import Interactions
from loyal.training.recommender.ranker import RankerConfig, Reranker
from loyal.training.recommender.models import ALS, BASELINES, ALSConfig, PersonalFrequency, Popularity

N = 20
CUTOFF = pd.Timestamp("2024-03-01", tz="UTC")


def _held_out(customer: int) -> int:
    return (customer // 2 * 2 + 2 * (customer % 5)) % N + customer % 2


def _checkerboard() -> Interactions:
    rows = [
        # Purchases spread over 60 days, so that the re-ranker has a label window (the last 30) and a past.
        (f"c{u:02d}", f"i{i:02d}", CUTOFF - pd.Timedelta(days=1 + 3 * ((u + i) % 20)), 1)
        for u in range(N)
        for i in range(u % 2, N, 2)
        if i != _held_out(u)
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "quantity"])
    return Interactions.before(frame, CUTOFF)


@pytest.fixture(scope="module")
def train() -> Interactions:
    return _checkerboard()


# ALS with 8 factors, not its 64: over 20 items, 64 factors leave a customer's least-squares factors (solved from
# their history, as the rails solve them) underdetermined, and which of the near-zero scores comes first is noise.
MODELS = (*(make for make in BASELINES if make().name != "als"), lambda: ALS(ALSConfig(factors=8)),
          lambda: Reranker(RankerConfig(candidates_per_source=5)))


@pytest.mark.parametrize("make", MODELS, ids=lambda make: make().name)
def test_every_model_scores_the_whole_catalogue_the_same_way_twice(make, train):
    customers = np.arange(N)
    first = make().fit(train).score(customers)
    again = make().fit(train).score(customers)
    assert first.shape == (N, N) and np.isfinite(first).all()
    np.testing.assert_allclose(first, again, rtol=1e-5)
    # Scores near zero differ by float32 summation order between batch shapes: an absolute floor for those.
    np.testing.assert_allclose(make().fit(train).score(customers[::-1]), first[::-1], rtol=1e-5, atol=1e-6)


LEARN_FROM_OTHERS = ("item_knn_bm25", "ease", "als", "bpr", "reranker_for_you")


@pytest.mark.parametrize("make", [m for m in MODELS if m().name in LEARN_FROM_OTHERS], ids=lambda make: make().name)
def test_models_that_learn_from_others_find_the_missing_item(make, train):
    scores = make().fit(train).score(np.arange(N))
    for u in range(N):
        held_out = train.items.get_loc(f"i{_held_out(u):02d}")
        other_parity = [train.items.get_loc(f"i{i:02d}") for i in range(1 - u % 2, N, 2)]
        assert scores[u, held_out] > scores[u, other_parity].max(), u


def test_buy_again_puts_the_customers_own_items_first(train):
    scores = PersonalFrequency().fit(train).score(np.arange(N))
    for u in range(N):
        own = train.counts[u].indices
        others = np.setdiff1d(np.arange(len(train.items)), own)
        assert scores[u, own].min() > scores[u, others].max()


def test_popularity_gives_everyone_the_same_list(train):
    scores = Popularity().fit(train).score(np.arange(N))
    assert (scores == scores[0]).all()
