"""The recommender evaluation protocol: metrics against hand-computed values, the split, and the baselines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from loyal.training.recommender.evaluate import bootstrap_interval, coverage, evaluate_scores, metrics_at_k, split, top_k
from loyal.training.recommender.models import PersonalFrequency, Popularity, PopularityConfig


def test_metrics_match_hand_computed_cases():
    ranked = np.array([
        [3, 1, 7, 8, 9, 10, 11, 12, 13, 14],  # one of two relevant items, at rank 2
        [5, 6, 7, 8, 9, 10, 11, 12, 13, 14],  # no hit
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  # twelve relevant, all ten slots hit
    ])
    relevant = [np.array([1, 5]), np.array([2]), np.arange(1, 13)]
    got = metrics_at_k(ranked, relevant, k=10)
    assert got["recall@10"] == pytest.approx([1 / 2, 0, 10 / 12])
    assert got["ndcg@10"] == pytest.approx([(1 / math.log2(3)) / (1 + 1 / math.log2(3)), 0, 1])
    assert got["hitrate@10"].tolist() == [1, 0, 1]


def test_ndcg_rewards_an_earlier_hit():
    relevant = [np.array([4])]
    first = metrics_at_k(np.array([[4, 0, 1]]), relevant, k=3)["ndcg@3"][0]
    third = metrics_at_k(np.array([[0, 1, 4]]), relevant, k=3)["ndcg@3"][0]
    assert first == 1.0 and third == pytest.approx(1 / math.log2(4))


def test_top_k_excludes_and_breaks_ties_by_position():
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0]])
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0]]))
    assert top_k(scores, 3, exclude).tolist() == [[0, 2, 3], [0, 1, 2]]
    assert top_k(np.array([[1.0, 2.0]]), 2, sp.csr_matrix(np.array([[1, 0]]))).tolist() == [[1, -1]]
    # Ties at the cut: the lowest positions win, however many items share the k-th score.
    assert top_k(np.ones((1, 50)), 3).tolist() == [[0, 1, 2]]
    assert top_k(np.r_[np.ones(40), 2.0][None, :], 2).tolist() == [[40, 0]]
    assert top_k(np.array([[3.0, 1.0, 3.0, 2.0, 3.0]]), 2).tolist() == [[0, 2]]
    # A score that is not a number is never shown; k beyond the catalogue gives the whole catalogue.
    assert top_k(np.array([[np.nan, 1.0, 2.0]]), 5).tolist() == [[2, 1, -1]]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 30), st.integers(1, 40), st.integers(1, 45), st.integers(0, 2**32 - 1))
def test_top_k_is_the_full_sort_cut_at_k(rows, catalogue, k, seed):
    """Against the plain definition: sort each row by score, best first, ties by position; -inf never shown. Few
    distinct values, so that ties at the cut are common."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(rows, catalogue)).astype(np.float64)
    scores[rng.random((rows, catalogue)) < 0.2] = -np.inf
    expected = np.full((rows, min(k, catalogue)), -1)
    for row in range(rows):
        order = np.lexsort((np.arange(catalogue), -scores[row]))[: min(k, catalogue)]
        shown = order[np.isfinite(scores[row, order])]
        expected[row, : len(shown)] = shown
    assert top_k(scores, k).tolist() == expected.tolist()


def test_coverage_and_bootstrap():
    assert coverage(np.array([[1, 2], [2, 3]]), catalogue_size=10) == pytest.approx(0.3)
    assert bootstrap_interval(np.full(50, 0.25)) == (0.25, 0.25)
    low, high = bootstrap_interval(np.r_[np.zeros(500), np.ones(500)])
    assert low < 0.5 < high and high - low < 0.08


def _tx(rows: str) -> pd.DataFrame:
    frame = pd.DataFrame([r.split(",") for r in rows.split()], columns=["customer_id", "item_id", "timestamp", "quantity"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["quantity"] = frame["quantity"].astype(int)
    return frame


def test_split_keeps_the_test_window_out_of_training():
    transactions = _tx("""
        A,x,2024-01-01,1  A,y,2024-01-05,1  B,x,2024-01-07,2  A,z,2024-01-09,-1
        A,x,2024-01-10,1  A,w,2024-01-20,1  B,y,2024-02-15,1  C,x,2024-01-12,1
    """)
    train, test = split(transactions, "2024-01-10", days=30)
    assert list(train.customers) == ["A", "B"] and list(train.items) == ["x", "y"]
    assert train.counts.toarray().tolist() == [[1, 1], [1, 0]]  # the return and everything from the cutoff are out
    # Only A bought in the window (B's purchase is after it, C is new); A's w was never sold before: unreachable.
    assert test.customers.tolist() == [0]
    assert test.relevant_all[0].tolist() == [0, 2] and test.relevant_new[0].tolist() == [2]


def test_baselines_on_a_known_history():
    transactions = _tx("""
        A,x,2024-01-01,1  A,x,2024-01-02,1  B,y,2024-01-03,1  C,y,2024-01-04,1  C,z,2024-01-09,1
        A,x,2024-01-15,1  B,z,2024-01-15,1  C,z,2024-01-15,1
    """)
    train, test = split(transactions, "2024-01-10", days=30)
    everyone = np.arange(len(train.customers))
    assert Popularity().fit(train).score(everyone[:1]).tolist() == [[1, 2, 1]]
    assert Popularity(PopularityConfig(recent_days=3)).fit(train).score(everyone[:1]).tolist() == [[0, 0, 1]]
    personal = PersonalFrequency().fit(train)
    # C bought y six days and z one day before the cutoff: the decay puts z first.
    assert top_k(personal.score(everyone), 1).ravel().tolist() == [0, 1, 2]
    views = evaluate_scores(personal.score(test.customers), train, test, k=1)
    # The window: A rebuys x (hit), B buys z, new to B (miss), C rebuys z (hit).
    assert views["all"]["hitrate@1"].tolist() == [1.0, 0.0, 1.0]
    # Explore: only B bought something new. Without y, B's list is the recent-popularity fill: x before z (tie,
    # broken by position), so z is missed.
    assert views["explore"]["hitrate@1"].tolist() == [0.0]


@pytest.mark.integration
def test_popularity_baselines_reproduce_the_design_anchors(real_data, home):
    """DESIGN.md measured these outside the project on the same protocol (cutoff 2011-11-09, 30 days)."""
    from loyal.ingest import ingest_file
    from loyal.store import read_table

    ingest_file("online-retail", real_data, home)
    train, test = split(read_table(home, "transactions"), "2011-11-09")
    anchors = {"global_popularity": (0.081, 0.034), "recent_popularity_30d": (0.144, 0.084)}
    for model in (Popularity(), Popularity(PopularityConfig(recent_days=30))):
        views = evaluate_scores(model.fit(train).score(test.customers), train, test)
        measured = (views["all"]["ndcg@10"].mean(), views["explore"]["ndcg@10"].mean())
        assert np.round(measured, 3).tolist() == list(anchors[model.name]), model.name
    # "Buy it again" (60-day half-life, then recent popularity): the anchor is for the "all" view.
    views = evaluate_scores(PersonalFrequency().fit(train).score(test.customers), train, test)
    assert round(views["all"]["ndcg@10"].mean(), 3) == 0.317


def test_evaluate_command_writes_a_report_with_every_baseline_beside_the_rails(home, tmp_path):
    import json

    from typer.testing import CliRunner

    from loyal.app.cli import app
    from loyal.features.repo import build
    from loyal.ingest import ingest_synthetic
    from loyal.synthetic import SyntheticConfig

    ingest_synthetic(SyntheticConfig(customers=400, days=150, seed=2), home)
    build(home)
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "recommender", "--cutoff", "2024-04-15", "--output", str(tmp_path),
                                 "--draws", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "recommender-2024-04-15.json").read_text())
    test = report["test"]
    assert list(test["models"]) == ["global_popularity", "recent_popularity_30d", "personal_frequency",
                                    "item_knn_bm25", "ease", "als", "bpr", "for_you", "discover"]
    for figures in test["models"].values():
        ndcg = figures["all"]["ndcg@10"]
        assert 0 <= ndcg["low"] <= ndcg["value"] <= ndcg["high"] <= 1
    # One list for everyone covers ten items of the catalogue; personal lists cover far more.
    models = test["models"]
    assert models["global_popularity"]["all"]["coverage"]["value"] == round(10 / test["catalogue"], 4)
    assert models["personal_frequency"]["all"]["coverage"]["value"] > 0.1
    for rail, view in (("for_you", "all"), ("discover", "explore")):
        comparison = test["comparison"][rail]
        best = max((n for n in models if n not in ("for_you", "discover")),
                   key=lambda n: models[n][view]["ndcg@10"]["value"])
        assert comparison["best_baseline"] == best
        difference = comparison["difference"]
        assert difference["low"] <= difference["value"] <= difference["high"]
        assert difference["value"] == pytest.approx(comparison["model"] - comparison["baseline"], abs=2e-4)
    assert "| personal_frequency |" in (tmp_path / "recommender-2024-04-15.md").read_text()
    # The same plots a training run logs, in an MLflow run of its own.
    from mlflow import MlflowClient

    run_id = json.loads(result.stdout)["mlflow_run_id"]
    plots = {a.path for a in MlflowClient().list_artifacts(run_id, "plots")}
    assert plots == {"plots/recall_at_k.png", "plots/coverage.png", "plots/popularity_bias.png"}
    assert MlflowClient().get_run(run_id).data.tags["loyal.kind"] == "evaluation"

    outside = runner.invoke(app, ["evaluate", "recommender", "--cutoff", "2030-01-01", "--output", str(tmp_path)])
    assert outside.exit_code == 2 and "the data runs from" in outside.stderr
