"""Churn labels, training snapshots, metrics against hand-computed cases, and the baselines on synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loyal.errors import LoyalError
from loyal.training.churn.data import labels, snapshot, training_cutoffs
from loyal.training.churn.evaluate import (
    churn_metrics,
    difference,
    expected_calibration_error,
    top_decile_lift,
    with_intervals,
)


def _transactions(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "quantity", "unit_price"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["item_id"] = "i"
    return frame


def test_labels_know_customers_by_purchases_before_the_cutoff_and_churn_by_the_window_after():
    tx = _transactions([
        ("stays", "2024-01-05", 2, 10.0),
        ("stays", "2024-02-03", 1, 10.0),      # in [2024-02-01, 2024-03-02): not churned, spends 10
        ("returns", "2024-01-10", 1, 5.0),
        ("returns", "2024-02-10", -1, 5.0),    # only a return in the window: churned, spend 0, never negative
        ("leaves", "2024-01-20", 1, 7.0),
        ("newcomer", "2024-02-05", 1, 3.0),    # first bought after the cutoff: not known at it
        ("stays", "2024-03-02", 1, 99.0),      # the day the window ends: outside it
    ])
    got = labels(tx, "2024-02-01", horizon_days=30).set_index("customer_id")
    assert list(got.index) == ["leaves", "returns", "stays"]
    assert got["churned"].to_dict() == {"leaves": True, "returns": True, "stays": False}
    assert got["future_spend"].to_dict() == {"leaves": 0.0, "returns": 0.0, "stays": 10.0}


def test_labels_refuse_a_window_the_data_do_not_reach():
    tx = _transactions([("a", "2024-01-05", 1, 1.0), ("a", "2024-02-10", 1, 1.0)])
    with pytest.raises(LoyalError, match="labels are unknown"):
        labels(tx, "2024-02-01", horizon_days=90)


def test_training_cutoffs_keep_every_label_window_before_train_end():
    tx = _transactions([("a", "2023-01-01", 1, 1.0), ("a", "2024-06-01", 1, 1.0)])
    cutoffs = training_cutoffs(tx, "2024-06-01", horizon_days=90)
    assert cutoffs == sorted(cutoffs) and len(cutoffs) == 6
    assert all(c + pd.Timedelta(days=90) <= pd.Timestamp("2024-06-01", tz="UTC") for c in cutoffs)
    assert cutoffs[-1] == pd.Timestamp("2024-03-03", tz="UTC")
    with pytest.raises(LoyalError, match="choose a later date"):
        training_cutoffs(tx, "2023-06-15", horizon_days=90)


def test_calibration_error_and_lift_by_hand():
    # Two bins: p = 0.1 with half churned (|0.5 - 0.1| x 1/2) and p = 0.9 with all churned (|1 - 0.9| x 1/2).
    assert expected_calibration_error(np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9])) == pytest.approx(0.25)
    # The top 10% (one of ten) holds a churner; two of ten churn overall: lift 1 / 0.2.
    churned = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert top_decile_lift(churned, np.linspace(1, 0, 10)) == pytest.approx(5.0)
    perfect = churn_metrics(churned.astype(bool), churned * 0.8 + 0.1)
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0
    assert perfect["brier"] == pytest.approx(0.01)


def test_rank_metrics_equal_scikit_learns_with_and_without_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from loyal.training.churn.evaluate import average_precision, roc_auc

    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(2, 60))
        truth = rng.random(n) < rng.uniform(0.1, 0.9)
        score = rng.integers(0, 5, n) / 4 if case % 2 else rng.random(n)  # odd cases: many ties
        if truth.all() or not truth.any():
            assert np.isnan(roc_auc(truth, score))
            continue
        assert roc_auc(truth, score) == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
        assert average_precision(truth, score) == pytest.approx(average_precision_score(truth, score), abs=1e-12)


def test_calibration_and_lift_curves_by_hand():
    from loyal.training.churn.evaluate import calibration_curve, lift_curve

    curve = calibration_curve(np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9]))
    assert curve == {"predicted": [0.1, 0.9], "observed": [0.5, 1.0], "customers": [2, 2]}
    churned = np.array([1, 1, 0, 0])  # the two riskiest churn: the top half holds all of them
    assert lift_curve(churned, np.array([0.9, 0.8, 0.2, 0.1]), points=2) == {"share": [0.5, 1.0], "lift": [2.0, 1.0]}


def test_intervals_hold_their_value_and_a_better_model_differs_above_zero():
    rng = np.random.default_rng(0)
    churned = rng.random(2000) < 0.4
    good = np.clip(churned * 0.5 + rng.random(2000) * 0.5, 0, 1)
    poor = rng.random(2000)
    figures = with_intervals(churn_metrics, churned, good, draws=100)
    for figure in figures.values():
        assert figure["low"] <= figure["value"] <= figure["high"]
    gap = difference("roc_auc", churned, good, poor, draws=100)
    assert gap["low"] > 0.3


@pytest.fixture(scope="module")
def synthetic_home(tmp_path_factory):
    from loyal.features.repo import build
    from loyal.ingest import ingest_synthetic
    from loyal.synthetic import SyntheticConfig

    home = tmp_path_factory.mktemp("churn")
    ingest_synthetic(SyntheticConfig(customers=400, days=400, seed=7), home)
    build(home)
    return home


def test_snapshots_carry_churn_v1_features_and_the_baselines_rank_churners(synthetic_home):
    from loyal.store import read_table
    from loyal.training.churn.baselines import BGNBD, LastSpend, Recency, RFMLogistic
    from loyal.training.churn.evaluate import value_metrics

    tx = read_table(synthetic_home, "transactions")
    end = tx["timestamp"].max().normalize() + pd.Timedelta(days=1)
    cutoffs = training_cutoffs(tx, end - pd.Timedelta(days=30), horizon_days=60)
    train = pd.concat([snapshot(synthetic_home, tx, c, horizon_days=60) for c in cutoffs], ignore_index=True)
    test = snapshot(synthetic_home, tx, end - pd.Timedelta(days=60), horizon_days=60)
    assert {"recency_days", "spend_90d", "country", "loyalty_tier"} <= set(test.columns)
    assert "email_opt_in" not in test.columns and "item_buyers_7d" not in test.columns  # churn_v1 only
    assert test["customer_id"].is_unique and test["recency_days"].notna().all()
    for model in (Recency(), RFMLogistic(), BGNBD()):
        probability = model.fit(train).predict(test, tx, 60)["churn_probability"].to_numpy()
        assert ((probability >= 0) & (probability <= 1)).all()
        assert churn_metrics(test["churned"].to_numpy(), probability)["roc_auc"] > 0.6, model.name
    for model in (LastSpend(), BGNBD()):
        value = model.fit(train).predict(test, tx, 60)["expected_value"].to_numpy()
        assert value_metrics(test["future_spend"].to_numpy(), value)["spearman"] > 0.2, model.name


def test_train_churn_registers_the_model_and_score_churn_answers_from_it(home, tmp_path):
    import optuna
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from loyal.app.cli import app
    from loyal.features.repo import build
    from loyal.ingest import ingest_synthetic
    from loyal.store import read_table
    from loyal.synthetic import SyntheticConfig

    ingest_synthetic(SyntheticConfig(customers=400, days=400, seed=7), home)
    build(home)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "churn", "--train-end", "2024-12-01", "--horizon-days", "60",
                                 "--trials", "3", "--draws", "50"])
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    version = client.get_model_version("loyal-churn", "1")
    run = client.get_run(version.run_id)
    assert run.data.params["trials"] == "3"
    study = optuna.load_study(study_name="churn-2024-12-01-h60", storage=f"sqlite:///{home / 'optuna.db'}")
    assert len(study.trials) == 3
    assert version.tags["feature_service"] == "churn_v1" and version.tags["horizon_days"] == "60"
    assert version.tags["train_window_end"] == "2024-12-01" and version.tags["training_cutoffs"]
    assert version.tags["champion_decision"] in ("promoted", "kept") and version.tags["champion_reason"]
    assert "validation.churn_network.roc_auc.value" in run.data.metrics
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/calibration.png", "plots/lift.png"}
    assert "validation.bg_nbd.roc_auc.value" in run.data.metrics and "test.churn_network.ece.value" in run.data.metrics

    too_early = runner.invoke(app, ["train", "churn", "--train-end", "2024-05-01"])
    assert too_early.exit_code == 2 and "choose a later date" in too_early.stderr

    # Scoring: the champion if there is one, else the version asked for; one row per customer known before.
    output = tmp_path / "churn.csv"
    asked = [] if version.tags["champion_decision"] == "promoted" else ["--version", "1"]
    scored = runner.invoke(app, ["score", "churn", "--as-of", "2024-12-01", "--output", str(output), *asked])
    assert scored.exit_code == 0, scored.output
    rows = pd.read_csv(output, dtype={"customer_id": str}, keep_default_na=False)
    assert list(rows.columns) == ["customer_id", "churn_probability", "expected_value", "risk_segment",
                                  "top_drivers"]
    tx = read_table(home, "transactions")
    known = tx.loc[(tx["timestamp"] < pd.Timestamp("2024-12-01", tz="UTC")) & (tx["quantity"] > 0), "customer_id"]
    assert sorted(rows["customer_id"]) == sorted(known.unique())
    assert rows["churn_probability"].between(0, 1).all() and (rows["expected_value"] >= 0).all()
    assert set(rows["risk_segment"]) <= {"high", "medium", "low"}
    assert (rows["top_drivers"].str.contains(" pts")).mean() > 0.9
    for bad, message in ((["--output", str(tmp_path / "x.txt")], ".csv or .parquet"),
                         (["--output", str(tmp_path / "x.csv"), "--version", "99"], "no version 99")):
        failed = runner.invoke(app, ["score", "churn", "--as-of", "2024-12-01", *bad])
        assert failed.exit_code == 2 and message in failed.stderr, failed.output
        assert not (tmp_path / "x.csv").exists()
