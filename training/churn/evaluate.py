"""Churn and value metrics, each with a bootstrap 95% interval over customers (DESIGN.md's protocol).

Churn: ROC-AUC, PR-AUC (average precision), Brier score, expected calibration error and top-decile lift. Value:
Spearman correlation of the predicted with the actual spend in the window (SciPy). ROC-AUC and average precision
are our own few lines of NumPy, tested equal to scikit-learn's: the bootstrap computes them thousands of times, and
scikit-learn's input checks cost more than the metrics. ECE and lift are tested against hand-computed cases.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr

LEAKAGE_AUC = 0.90  # on transaction data an AUC above this means the future leaked in, not a great model
ECE_BINS = 10


def expected_calibration_error(churned: np.ndarray, probability: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |observed rate - mean predicted probability| over equal-width probability bins, weighted by their size."""
    churned, probability = np.asarray(churned, dtype=float), np.asarray(probability, dtype=float)
    which = np.minimum((probability * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(which):
        members = which == b
        error += members.mean() * abs(churned[members].mean() - probability[members].mean())
    return float(error)


def top_decile_lift(churned: np.ndarray, score: np.ndarray) -> float:
    """The churn rate among the 10% highest scores over the overall rate (ties at the cut: by position)."""
    churned = np.asarray(churned, dtype=float)
    top = np.argsort(-np.asarray(score, dtype=float), kind="stable")[: max(int(np.ceil(len(churned) / 10)), 1)]
    overall = churned.mean()
    return float(churned[top].mean() / overall) if overall > 0 else float("nan")


def calibration_curve(churned: np.ndarray, probability: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """Per non-empty equal-width bin (the ECE's): mean predicted probability, observed churn rate, customers."""
    churned, probability = np.asarray(churned, dtype=float), np.asarray(probability, dtype=float)
    which = np.minimum((probability * bins).astype(int), bins - 1)
    present = np.unique(which)
    return {
        "predicted": [round(float(probability[which == b].mean()), 4) for b in present],
        "observed": [round(float(churned[which == b].mean()), 4) for b in present],
        "customers": [int((which == b).sum()) for b in present],
    }


def lift_curve(churned: np.ndarray, score: np.ndarray, points: int = 20) -> dict[str, list]:
    """Cumulative lift: the churn rate among the top x% by score over the overall rate, for x = 5%, 10%, ... 100%."""
    churned = np.asarray(churned, dtype=float)[np.argsort(-np.asarray(score, dtype=float), kind="stable")]
    shares = np.linspace(1 / points, 1.0, points)
    overall = churned.mean() if len(churned) else float("nan")
    lift = [float(churned[: max(int(np.ceil(share * len(churned))), 1)].mean() / overall) for share in shares]
    return {"share": [round(float(x), 4) for x in shares], "lift": [round(x, 4) for x in lift]}


def roc_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """The probability that a random positive scores above a random negative, ties counting half (Mann-Whitney)."""
    truth = np.asarray(truth, dtype=bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(score)  # average ranks over ties
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    """Sum over distinct score thresholds, highest first, of (recall gained) x (precision there): PR-AUC."""
    truth = np.asarray(truth, dtype=bool)
    if not truth.any():
        return float("nan")
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    score, truth = np.asarray(score, dtype=float)[order], truth[order]
    last_of_tie = np.r_[score[1:] != score[:-1], True]  # a threshold takes every tied score at once
    true_positives = np.cumsum(truth)[last_of_tie]
    predicted = np.flatnonzero(last_of_tie) + 1
    recall_gained = np.diff(true_positives, prepend=0) / true_positives[-1]
    return float(np.sum(recall_gained * true_positives / predicted))


def churn_metrics(churned: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    churned = np.asarray(churned, dtype=bool)
    probability = np.asarray(probability, dtype=float)
    both = churned.any() and not churned.all()
    return {
        "roc_auc": roc_auc(churned, probability) if both else float("nan"),
        "pr_auc": average_precision(churned, probability) if both else float("nan"),
        "brier": float(np.mean((probability - churned) ** 2)),
        "ece": expected_calibration_error(churned, probability),
        "top_decile_lift": top_decile_lift(churned, probability),
    }


def value_metrics(future_spend: np.ndarray, expected_value: np.ndarray) -> dict[str, float]:
    return {"spearman": float(spearmanr(future_spend, expected_value).statistic)}


def _draws(n: int, draws: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


def with_intervals(metric, *columns: np.ndarray, draws: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """`metric(*columns)` -> {name: value}, each value with the 2.5 and 97.5 percentiles over bootstrap resamples of
    the rows (customers)."""
    point = metric(*columns)
    samples = [metric(*(c[index] for c in columns)) for index in _draws(len(columns[0]), draws, seed)]
    out = {}
    for name, value in point.items():
        values = np.array([s[name] for s in samples])
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan)
        out[name] = {"value": round(value, 4), "low": round(float(low), 4), "high": round(float(high), 4)}
    return out


RANKING = {  # the metrics a difference is asked of, each alone (the bootstrap recomputes it a thousand times)
    "roc_auc": roc_auc,
    "pr_auc": average_precision,
    "spearman": lambda truth, score: spearmanr(truth, score).statistic,
}


def difference(metric_name: str, truth: np.ndarray, model: np.ndarray, baseline: np.ndarray,
               draws: int = 1000, seed: int = 0) -> dict[str, float]:
    """Model minus baseline on one metric of RANKING, with the paired bootstrap 95% interval (the same customers in
    each draw)."""
    metric = RANKING[metric_name]

    def gap(index):
        return float(metric(truth[index], model[index]) - metric(truth[index], baseline[index]))

    values = np.array([gap(index) for index in _draws(len(truth), draws, seed)])
    low, high = np.percentile(values[np.isfinite(values)], [2.5, 97.5])
    return {"value": round(gap(np.arange(len(truth))), 4), "low": round(float(low), 4),
            "high": round(float(high), 4)}
