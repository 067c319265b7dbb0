"""The recommender evaluation protocol of DESIGN.md, and the metric code (the project's own, tested by hand).

Split by calendar date: train on purchases before the cutoff, test on the purchases of the following 30 days by
customers seen in training. Every model ranks the whole training catalogue. Two views:
- "all": every item the customer bought in the test window counts (repurchases dominate retail);
- "explore": only items new to the customer count, and the customer's past items are removed from the model's list
  before it is cut at k; customers with no new item in the window are left out of this view.

Per customer, at k: Recall = hits / relevant items; NDCG = DCG / ideal DCG with gains 1 / log2(rank + 1);
HitRate = 1 if any hit. Coverage: the share of the catalogue that appears in anyone's list. Intervals are 95%
percentile bootstraps over customers; a difference between two models resamples the same customers for both.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from loyal.dates import utc
from loyal.features.compute import DAY_US
from loyal.features.engines import purchase_history
from loyal.schema import CUSTOMER_ID, EVENT_TYPE, ITEM_ID, QUANTITY, TIMESTAMP

TEST_DAYS = 30
K = 10
CURVE_K = 50  # recall@k is drawn up to this k
# A session's views and add-to-carts as weights over the items: a cart says more than a view, and a browse loses
# half its weight every SESSION_HALF_LIFE_HOURS (what a customer looked at an hour ago says more about this visit
# than what they looked at last week). How far the weights move `for_you` is tuned on the validation window.
SESSION_TYPE_WEIGHT = {"view": 1.0, "add_to_cart": 2.0}
SESSION_HALF_LIFE_HOURS = 24.0
SESSION_MIN_WEIGHT = 1e-3  # ten half-lives: a browse that old moves nothing and is left out (ranking stays fast)
HOUR_US = 3_600_000_000


@dataclass
class Interactions:
    """Customers' purchase histories as a customer × item matrix, with the id maps that turn rows back into ids: those
    before a training cutoff, or any customers' as they are at a moment (what a model scores).

    `counts[u, i]`: purchase lines of item i by customer u; `purchases`: the underlying lines (customer and item as
    positions, and their age in days at `cutoff`, for time decay). A line is one of the customer's history as
    `features.sql` defines it (engines.purchase_history), the same for training, batch answers and the online state."""

    customers: pd.Index
    items: pd.Index
    counts: sp.csr_matrix
    purchases: pd.DataFrame  # columns: customer (position), item (position), age_days (float, > 0)
    cutoff: pd.Timestamp
    session: sp.csr_matrix | None = None  # the customers' session weights over the items (`with_session`), if given

    @classmethod
    def before(cls, transactions: pd.DataFrame, cutoff: pd.Timestamp) -> Interactions:
        history = purchase_history(transactions, cutoff)
        customers = pd.Index(np.sort(history[CUSTOMER_ID].unique()))
        items = pd.Index(np.sort(history[ITEM_ID].unique()))
        return cls.of_history(history, customers, items, cutoff)

    @classmethod
    def of_history(cls, history: pd.DataFrame, customers: pd.Index, items: pd.Index, at) -> Interactions:
        """These customers' histories (compute.HISTORY columns) at the moment `at`, over these items: lines of other
        customers, of items outside the catalogue or from `at` on are left out."""
        at = utc(at)
        rows = customers.get_indexer(history[CUSTOMER_ID])
        cols = items.get_indexer(history[ITEM_ID])
        age = (at.value // 1000 - history[TIMESTAMP].to_numpy(np.int64)) / DAY_US
        keep = (rows >= 0) & (cols >= 0) & (age > 0)
        return cls.of(customers, items, pd.DataFrame({"customer": rows[keep], "item": cols[keep],
                                                      "age_days": age[keep]}), at)

    @classmethod
    def of(cls, customers: pd.Index, items: pd.Index, purchases: pd.DataFrame, cutoff: pd.Timestamp) -> Interactions:
        """The matrix of these purchases (positions and ages)."""
        counts = sp.csr_matrix((np.ones(len(purchases), dtype=np.float32), (purchases["customer"], purchases["item"])),
                               shape=(len(customers), len(items)))
        counts.sum_duplicates()
        return cls(customers, items, counts, purchases, cutoff)

    def rows(self, positions) -> Interactions:
        """These customers' histories alone (row i: the customer at positions[i]), over the same items."""
        positions = np.asarray(positions, dtype=np.int64)
        order, starts = self._by_customer
        lengths = starts[positions + 1] - starts[positions]
        picked = order[np.repeat(starts[positions], lengths) + np.arange(lengths.sum())
                       - np.repeat(np.cumsum(lengths) - lengths, lengths)]
        chosen = Interactions.of(self.customers[positions], self.items, pd.DataFrame({
            "customer": np.repeat(np.arange(len(positions)), lengths),
            "item": self.purchases["item"].to_numpy()[picked],
            "age_days": self.purchases["age_days"].to_numpy()[picked]}), self.cutoff)
        return chosen if self.session is None else replace(chosen, session=self.session[positions])

    def with_session(self, session: pd.DataFrame, at_us=None) -> Interactions:
        """The same histories with the customers' sessions (compute.SESSION rows: views and add-to-carts) as weights
        over the items, as of the cutoff (or `at_us`, a moment per session row in microseconds): each browse before
        it weighs SESSION_TYPE_WEIGHT, halved every SESSION_HALF_LIFE_HOURS; a customer's weights on one item add
        up. Rows of other customers, of items outside the catalogue, from the moment on or older than
        SESSION_MIN_WEIGHT allows are left out."""
        rows = self.customers.get_indexer(session[CUSTOMER_ID])
        cols = self.items.get_indexer(session[ITEM_ID])
        at = self.cutoff.value // 1000 if at_us is None else np.asarray(at_us, dtype=np.int64)
        hours = (at - session[TIMESTAMP].to_numpy(np.int64)) / HOUR_US
        kind = session[EVENT_TYPE].map(SESSION_TYPE_WEIGHT).fillna(0.0).to_numpy(np.float64)
        keep = (rows >= 0) & (cols >= 0) & (hours > 0) & (kind > 0)
        weights = kind * 0.5 ** (np.maximum(hours, 0.0) / SESSION_HALF_LIFE_HOURS)
        keep &= weights >= SESSION_MIN_WEIGHT
        matrix = sp.csr_matrix((weights[keep], (rows[keep], cols[keep])), shape=self.counts.shape)
        matrix.sum_duplicates()
        return replace(self, session=matrix)

    @functools.cached_property
    def _by_customer(self) -> tuple[np.ndarray, np.ndarray]:
        """The purchase lines' order by customer, and where each customer's start in it."""
        customer = self.purchases["customer"].to_numpy(np.int64)
        order = np.argsort(customer, kind="stable")
        starts = np.zeros(len(self.customers) + 1, dtype=np.int64)
        starts[1:] = np.cumsum(np.bincount(customer, minlength=len(self.customers)))
        return order, starts

    def earlier(self, days: float) -> tuple[Interactions, pd.DataFrame]:
        """The same customers and items as they stood `days` before the cutoff, and the purchases of those days.

        Positions stay the same (customers and items first seen later have empty rows and columns), so a model fitted
        on the earlier matrix scores the same positions. The second value holds the purchases (customer, item) in
        [cutoff - days, cutoff): the labels a re-ranker learns from, never reaching the earlier matrix."""
        old = self.purchases["age_days"] > days
        earlier = self.purchases[old].assign(age_days=lambda p: p["age_days"] - days).reset_index(drop=True)
        later = self.purchases.loc[~old, ["customer", "item"]].drop_duplicates()
        return (Interactions.of(self.customers, self.items, earlier, self.cutoff - pd.Timedelta(days=days)),
                later.reset_index(drop=True))


@dataclass
class TestSet:
    """The test window's purchases of customers seen in training, as sets of item positions per test customer."""

    customers: np.ndarray  # positions in Interactions.customers
    relevant_all: list[np.ndarray]
    relevant_new: list[np.ndarray]  # the items the customer had not bought before the cutoff


def split(transactions: pd.DataFrame, cutoff, days: int = TEST_DAYS) -> tuple[Interactions, TestSet]:
    """Train before `cutoff`; test on purchases in [cutoff, cutoff + days) by customers seen in training."""
    cutoff = utc(cutoff)
    train = Interactions.before(transactions, cutoff)
    window = transactions[
        (transactions[QUANTITY] > 0)
        & (transactions[TIMESTAMP] >= cutoff)
        & (transactions[TIMESTAMP] < cutoff + pd.Timedelta(days=days))
    ]
    rows = train.customers.get_indexer(window[CUSTOMER_ID])
    cols = train.items.get_indexer(window[ITEM_ID])
    # An item first sold in the test window cannot be ranked, but it was bought: it stays relevant (and unreachable)
    # under a position past the catalogue, so that recall and NDCG count it as missed.
    unseen = cols < 0
    cols[unseen] = len(train.items) + pd.factorize(window[ITEM_ID].to_numpy()[unseen])[0]
    seen_customer = rows >= 0
    pairs = pd.DataFrame({"customer": rows[seen_customer], "item": cols[seen_customer]})
    return train, test_set(train, pairs)


def test_set(train: Interactions, pairs: pd.DataFrame) -> TestSet:
    """The test lists from (customer, item) positions bought after `train`'s cutoff, for customers with a purchase
    in `train` (a customer with an empty row is a stranger to every model)."""
    pairs = pairs[np.diff(train.counts.indptr)[pairs["customer"]] > 0].drop_duplicates()
    customers, relevant_all, relevant_new = [], [], []
    for customer, group in pairs.groupby("customer", sort=True):
        items = np.sort(group["item"].to_numpy())
        past = train.counts.indices[train.counts.indptr[customer] : train.counts.indptr[customer + 1]]
        customers.append(customer)
        relevant_all.append(items)
        relevant_new.append(np.setdiff1d(items, past))
    return TestSet(np.asarray(customers, dtype=np.int64), relevant_all, relevant_new)


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """The k best item positions per row, best first; items marked in `exclude` (same rows) never appear.

    Ties are broken by item position, also at the cut, so a ranking does not depend on the sort's mood."""
    scores = np.asarray(scores, dtype=np.float64)
    if exclude is not None or np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
        if exclude is not None:
            rows, cols = exclude.nonzero()
            scores[rows, cols] = -np.inf
    n, catalogue = scores.shape
    k = min(k, catalogue)
    if n == 0 or k == 0:
        return np.full((n, k), -1, dtype=np.int64)
    # A partial selection instead of a full sort: the k best of each row, in position order, so that the stable sort
    # of their scores below breaks ties by position. Where items tied at the k-th value do not all fit, the
    # selection may have picked any of them: those rows take the lowest positions instead.
    part = np.argpartition(scores, catalogue - k, axis=1)
    picked = np.sort(part[:, catalogue - k:], axis=1)
    kth = np.take_along_axis(scores, part[:, [catalogue - k]], axis=1)
    cut = np.flatnonzero((scores == kth).sum(axis=1) > (np.take_along_axis(scores, picked, axis=1) == kth).sum(axis=1))
    if len(cut):
        above, tied = scores[cut] > kth[cut], scores[cut] == kth[cut]
        tied &= np.cumsum(tied, axis=1) <= (k - above.sum(axis=1))[:, None]
        picked[cut] = np.nonzero(above | tied)[1].reshape(len(cut), k)
    best_first = np.argsort(-np.take_along_axis(scores, picked, axis=1), axis=1, kind="stable")
    ranked = np.take_along_axis(picked, best_first, axis=1)
    return np.where(np.isfinite(np.take_along_axis(scores, ranked, axis=1)), ranked, -1)


def metrics_at_k(ranked: np.ndarray, relevant: list[np.ndarray], k: int = K) -> dict[str, np.ndarray]:
    """Per-customer Recall, NDCG and HitRate at k for ranked item positions (-1 = an empty slot)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg, hit = (np.zeros(len(relevant)) for _ in range(3))
    for row, items in enumerate(relevant):
        hits = np.isin(ranked[row, :k], items)
        dcg = discounts[: hits.size][hits].sum()
        ideal = discounts[: min(len(items), k)].sum()
        recall[row] = hits.sum() / len(items)
        ndcg[row] = dcg / ideal
        hit[row] = float(hits.any())
    return {f"recall@{k}": recall, f"ndcg@{k}": ndcg, f"hitrate@{k}": hit}


def coverage(ranked: np.ndarray, catalogue_size: int) -> float:
    """The share of the catalogue that appears in at least one list."""
    shown = np.unique(ranked[ranked >= 0])
    return len(shown) / catalogue_size


def bootstrap_interval(values: np.ndarray, draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean, resampling customers."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(draws, len(values)))
    means = values[index].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def difference_interval(
    model: np.ndarray, baseline: np.ndarray, draws: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The mean difference model - baseline over the same customers, with its paired 95% bootstrap interval: each
    draw resamples customers once and takes both models' values for them."""
    difference = np.asarray(model, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    low, high = bootstrap_interval(difference, draws, seed)
    return {"value": round(float(difference.mean()), 4), "low": round(low, 4), "high": round(high, 4)}


def evaluate_scores(
    scores: np.ndarray, train: Interactions, test: TestSet, k: int = K
) -> dict[str, dict[str, np.ndarray | float]]:
    """Both views of one model's scores for the test customers (rows of `scores` follow test.customers)."""
    past = train.counts[test.customers]
    ranked_all = top_k(scores, k)
    has_new = np.array([len(items) > 0 for items in test.relevant_new])
    ranked_new = top_k(scores[has_new], k, exclude=past[has_new])
    views = {
        "all": metrics_at_k(ranked_all, test.relevant_all, k),
        "explore": metrics_at_k(ranked_new, [r for r, keep in zip(test.relevant_new, has_new) if keep], k),
    }
    views["all"]["coverage"] = coverage(ranked_all, len(train.items))
    views["explore"]["coverage"] = coverage(ranked_new, len(train.items))
    return views


def summarise(views: dict, draws: int = 1000) -> dict:
    """Means with bootstrap intervals, per view and metric, ready for a report."""
    summary = {}
    for view, metrics in views.items():
        summary[view] = {}
        for name, values in metrics.items():
            if isinstance(values, float):
                summary[view][name] = {"value": round(values, 4)}
                continue
            low, high = bootstrap_interval(values, draws)
            summary[view][name] = {"value": round(float(values.mean()), 4), "low": round(low, 4),
                                   "high": round(high, 4), "customers": len(values)}
    return summary


def recall_curve(ranked: np.ndarray, relevant: list[np.ndarray]) -> list[float]:
    """Mean recall at every k from 1 to the lists' length."""
    hits = np.array([np.isin(ranked[row], items) for row, items in enumerate(relevant)], dtype=np.float64)
    sizes = np.array([len(items) for items in relevant], dtype=np.float64)
    return [round(float(v), 4) for v in (np.cumsum(hits, axis=1) / sizes[:, None]).mean(axis=0)]


def mean_popularity(ranked: np.ndarray, buyers: np.ndarray) -> float:
    """Popularity bias: the mean number of distinct training buyers of the items in the lists."""
    shown = ranked[ranked >= 0]
    return round(float(buyers[shown].mean()), 2) if shown.size else 0.0


def evaluate_recommenders(
    train: Interactions, test: TestSet, models: dict, draws: int = 1000
) -> tuple[dict, dict]:
    """Fit each model on `train` and measure it on `test`, both views (a model fitted elsewhere makes `fit` a no-op).

    Returns the report (means with intervals per model, view and metric) and the per-customer values, from which
    paired differences between models are drawn."""
    results, values = {}, {}
    buyers = np.diff((train.counts > 0).tocsc().indptr)  # distinct buyers per item
    for name, model in models.items():
        began = time.perf_counter()
        model.fit(train)
        scores = model.score(test.customers)
        views = evaluate_scores(scores, train, test)
        values[name] = views
        results[name] = summarise(views, draws)
        ranked = top_k(scores, CURVE_K)
        results[name]["recall_curve_all"] = recall_curve(ranked, test.relevant_all)
        results[name]["mean_buyers_of_top_10"] = mean_popularity(ranked[:, :K], buyers)
        results[name]["seconds"] = round(time.perf_counter() - began, 2)
    report = {
        "cutoff": str(train.cutoff.date()),
        "test_days": TEST_DAYS,
        "train_customers": int((np.diff(train.counts.indptr) > 0).sum()),
        "catalogue": len(train.items),
        "test_customers": {"all": len(test.customers), "explore": sum(len(r) > 0 for r in test.relevant_new)},
        "bootstrap_draws": draws,
        "models": results,
    }
    return report, values


def report_markdown(result: dict) -> str:
    """The evaluation as a Markdown table per view, each figure with its 95% interval, the best per column bold."""
    lines = [
        f"# Recommenders at cutoff {result['cutoff']}",
        "",
        f"Train: purchases before the cutoff ({result['train_customers']} customers, {result['catalogue']} items). "
        f"Test: the next {result['test_days']} days, customers seen in training "
        f"(all: {result['test_customers']['all']}, explore: {result['test_customers']['explore']}). "
        f"Whole-catalogue ranking; 95% bootstrap intervals over customers ({result['bootstrap_draws']} draws).",
    ]
    metrics = [f"recall@{K}", f"ndcg@{K}", f"hitrate@{K}", "coverage"]
    for view in ("all", "explore"):
        best = {m: max(r[view][m]["value"] for r in result["models"].values()) for m in metrics}
        lines += ["", f"## View: {view}", "", "| model | " + " | ".join(metrics) + " | seconds |",
                  "|---" * (len(metrics) + 2) + "|"]
        for name, r in result["models"].items():
            cells = []
            for m in metrics:
                figure = r[view][m]
                text = f"{figure['value']:.3f}"
                if "low" in figure:
                    text += f" [{figure['low']:.3f}, {figure['high']:.3f}]"
                cells.append(f"**{text}**" if figure["value"] == best[m] else text)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['seconds']} |")
    return "\n".join(lines) + "\n"
