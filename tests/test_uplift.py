"""The uplift family: the past campaigns of a synthetic shop with planted effects, learnt from."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import trained_shop
from typer.testing import CliRunner

from loyal.app.cli import app
from loyal.errors import LoyalError
from loyal.synthetic import SyntheticConfig


@pytest.fixture(scope="module")
def campaigned(tmp_path_factory):
    """A synthetic shop with four past campaigns, its features built, churn and recommender carrying `champion`."""
    home = tmp_path_factory.mktemp("uplift") / "home"
    with trained_shop(home, SyntheticConfig(customers=3_000, days=365, seed=2, campaigns=4)):
        yield home


@pytest.fixture(scope="module")
def uplift_trained(campaigned):
    """The shop with loyal-uplift version 1 trained (held out: the latest campaign) and the summary of it."""
    from loyal.training.uplift.training import train_uplift

    patch = pytest.MonkeyPatch()
    patch.setenv("LOYAL_HOME", str(campaigned))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        yield campaigned, train_uplift(campaigned, draws=30)
    finally:
        patch.undo()


def test_each_measured_campaign_becomes_rows_with_features_from_before_it(campaigned):
    from loyal.contacts import append_contacts, contact_history
    from loyal.store import read_table
    from loyal.training.uplift.data import training_set

    history = contact_history(campaigned)
    rows = training_set(campaigned)
    assert len(rows) == len(history) and rows["treated"].eq(rows["group"] == "treatment").all()
    sales = read_table(campaigned, "transactions").query("quantity > 0")
    for _, row in rows.sample(40, random_state=0).iterrows():
        day = row["event_timestamp"]
        theirs = sales[sales["customer_id"] == row["customer_id"]]
        before = theirs[theirs["timestamp"] < day]
        after = theirs[(theirs["timestamp"] >= day) & (theirs["timestamp"] < day + pd.Timedelta(days=30))]
        # Features see only what happened before the campaign's day; outcomes are the 30 days from it.
        assert (pd.isna(row["orders_total"]) and before.empty) or row["orders_total"] == before["order_id"].nunique()
        assert row["orders"] == after["order_id"].nunique()
        assert row["revenue"] == pytest.approx((after["quantity"] * after["unit_price"]).sum())

    # A campaign whose window has not ended gives no rows, and asking for it is one line.
    end = read_table(campaigned, "transactions")["timestamp"].max().normalize().tz_localize(None)
    append_contacts(campaigned, pd.DataFrame({"campaign": "too-recent", "customer_id": ["C0000001"],
                                              "group": "treatment", "contacted_on": end, "incentive": "percent_off"}))
    assert "too-recent" not in set(training_set(campaigned)["campaign"])
    with pytest.raises(LoyalError, match="no complete 30-day outcome window"):
        training_set(campaigned, ["too-recent"])


def _experiment(rows: int, seed: int) -> pd.DataFrame:
    """Randomised rows where only one incentive works, and only for customers whose spend is falling."""
    import numpy as np

    from loyal.training.churn.model import LOG_FEATURES, RAW_FEATURES

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.gamma(2.0, 5.0, rows) for name in LOG_FEATURES})
    frame = frame.assign(**{name: rng.uniform(-1, 1, rows) for name in RAW_FEATURES})
    frame["treated"] = rng.random(rows) < 0.5
    frame["incentive"] = rng.choice(["percent_off", "free_shipping"], rows)
    falling = frame["spend_trend"] < 0
    effect = np.where(falling & (frame["incentive"] == "percent_off"), 30.0, 0.0)
    mean = 20.0 + 10.0 * (frame["spend_trend"] > 0.5) + effect * frame["treated"]
    frame["revenue"] = rng.exponential(mean)
    frame["bought"] = frame["revenue"] > 10
    frame["true_effect"] = effect
    return frame


def test_the_network_finds_whom_an_incentive_persuades_and_saves_without_pickle(tmp_path):
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from loyal.training.uplift.model import UpliftConfig, UpliftModel

    model = UpliftModel(UpliftConfig(epochs=30)).fit(_experiment(6_000, 1), _experiment(2_000, 2))
    test = _experiment(2_000, 3)
    predicted = model.predict(test)
    persuaded = test["true_effect"] > 0
    works = predicted["incremental_revenue_percent_off"]
    # Noisy revenue (exponential: its spread is its mean) from 1,500 rows per arm: the ranking, not the exact sum.
    assert roc_auc_score(persuaded, works) > 0.75 and works[persuaded].mean() - works[~persuaded].mean() > 8
    assert works[persuaded].mean() > predicted["incremental_revenue_free_shipping"][persuaded].mean() + 8
    assert predicted.filter(like="purchase").apply(lambda c: c.between(-1, 1)).all().all()
    folder = model.save(tmp_path / "uplift")
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.pickle"))
    again = type(model).load(folder).predict(test)
    np.testing.assert_array_equal(again.to_numpy(), predicted.to_numpy())


def test_uplift_trains_beside_its_baselines_registers_and_faces_the_gate(uplift_trained):
    import mlflow
    from mlflow import MlflowClient

    home, summary = uplift_trained
    assert summary["model"] == "loyal-uplift" and summary["version"] == "1"
    assert summary["campaigns"] == {"train": ["synthetic-1", "synthetic-2"], "validation": "synthetic-3",
                                    "test": "synthetic-4", "validation_folds": ["synthetic-2", "synthetic-3"]}
    for window in ("validation", "test"):
        qini = summary[window]["qini"]
        assert qini["best_baseline"] in {"t_learner", "x_learner", "churn_risk"}
        assert qini["beats_best_baseline"] == (qini["model"] > qini["baseline"])
        # The synthetic shop's truth judges every ranking too.
        assert set(summary[window]["true_qini"]["baselines"]) == {"t_learner", "x_learner", "churn_risk"}
    # Promoted only when it beats them all on the validation campaigns pooled, and random targeting. Each fold was
    # judged by what was fitted on the campaigns before it; the pool is their sum.
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{summary['run_id']}/evaluation.json"))
    folds = report["validation"]["folds"]
    assert [fold["campaign"] for fold in folds] == ["synthetic-2", "synthetic-3"]
    assert summary["validation"]["qini"]["model"] == pytest.approx(
        sum(fold["models"]["uplift_network"]["qini"]["value"] for fold in folds))
    validation = summary["validation"]["qini"]
    assert summary["champion"] == (validation["beats_best_baseline"] and validation["model_low"] > 0)
    assert "Qini" in summary["reason"]
    version = MlflowClient().get_model_version("loyal-uplift", "1")
    assert version.tags["trained_on_campaigns"] == "synthetic-1,synthetic-2"
    assert version.tags["held_out_campaign"] == "synthetic-4"

    # The registered pyfunc (from code, no pickle) answers what the campaign asks of it.
    from loyal.training.uplift.data import training_set

    rows = training_set(home, ["synthetic-4"]).head(50)
    loaded = mlflow.pyfunc.load_model("models:/loyal-uplift/1")
    inputs = loaded.metadata.get_input_schema().input_names()
    answered = loaded.predict(rows[inputs].astype({c: "float64" for c in inputs if c != "customer_id"
                                                   and pd.api.types.is_numeric_dtype(rows[c])}))
    assert {f"incremental_revenue_{k}" for k in ("percent_off", "free_shipping", "points_multiplier")} <= set(
        answered.columns)
    assert np.isfinite(answered.to_numpy()).all()


def test_uplift_needs_three_measured_campaigns():
    from loyal.training.uplift.training import split

    rows = pd.DataFrame({"campaign": ["a", "b"], "contacted_on": pd.to_datetime(["2024-01-01", "2024-03-01"])})
    with pytest.raises(LoyalError, match="needs three measured campaigns"):
        split(rows, None)
    with pytest.raises(LoyalError, match="is not a measured campaign"):
        split(rows, "c")


def test_uplift_targeting_picks_the_incentive_that_pays_and_ranks_by_return_on_cost():
    from loyal.serving.policy import load_policy
    from loyal.serving.targeting import by_risk, by_uplift, offer_costs

    policy = load_policy()
    uplift = pd.DataFrame({"incremental_revenue_percent_off": [40.0, 0.5, 9.0, 9.0, 30.0],
                           "incremental_revenue_free_shipping": [1.0, -2.0, 8.0, 8.0, 30.0]})
    risk = np.array([0.1, 0.9, 0.5, 0.5, 0.5])
    value = np.array([100.0, 100.0, 100.0, 100.0, 100.0])
    tiers = np.array([None, None, None, "staff", "gold"], dtype=object)
    offers = by_uplift(policy, uplift, risk, value, tiers)
    costs = offer_costs(policy, risk, value)
    # A customer at low risk the policy would never offer anything can be the best bet; a put-off one gets nothing.
    assert offers.loc[0, "incentive"] == "percent_off" and offers.loc[0, "percent"] == 10
    assert offers.loc[1, "incentive"] == "none" and np.isnan(offers.loc[1, "priority"])
    assert by_risk(policy, risk, value, tiers).loc[0, "incentive"] == "none"
    # The incentive whose gain over its cost is largest; points were never offered, so they are never chosen.
    assert offers.loc[2, "expected_gain"] == pytest.approx(max(9.0 - costs[2, 1], 8.0 - costs[2, 2]))
    assert "points_multiplier" not in set(offers["incentive"])
    assert offers.loc[3, "incentive"] == "none" and offers.loc[3, "reason_codes"] == ["TIER_NEVER_INCENTIVISED"]
    chosen = offers.loc[4]
    assert chosen["priority"] == pytest.approx(chosen["incremental_revenue"] / chosen["expected_cost"])


def test_value_at_a_budget_is_estimated_from_the_randomised_list_and_matches_the_truth():
    from loyal.training.uplift.evaluate import fill, value_at_budget

    rng = np.random.default_rng(0)
    rows = 20_000
    effect = np.where(rng.random(rows) < 0.3, 20.0, 0.0)
    frame = pd.DataFrame({"treated": rng.random(rows) < 0.5, "incentive": "free_shipping"})
    frame["revenue"] = rng.exponential(10.0, rows) + effect * frame["treated"]
    truth = pd.DataFrame({"true_incremental_revenue_free_shipping": effect})
    incentive = np.full(rows, "free_shipping", dtype=object)
    cost = np.ones(rows)
    knowing = value_at_budget(frame, incentive, effect + rng.random(rows), cost, 5_000, truth)
    guessing = value_at_budget(frame, incentive, rng.random(rows), cost, 5_000, truth)
    assert knowing["picked"] == guessing["picked"] == 5_000 and knowing["spent"] == 5_000
    assert knowing["true_incremental_revenue"] == pytest.approx(5_000 * 20.0)
    for judged in (knowing, guessing):
        estimate = judged["incremental_revenue"]
        assert estimate["low"] < judged["true_incremental_revenue"] < estimate["high"]
    assert guessing["true_incremental_revenue"] < 0.4 * knowing["true_incremental_revenue"]
    # One too dear is passed over for cheaper ones below; nobody with no priority is picked.
    assert fill(np.array([3.0, 2.0, 1.0, np.nan]), np.array([1.0, 5.0, 1.0, 0.0]), 2.5).tolist() == [0, 2]


def test_the_qini_interval_is_as_wide_as_the_estimate_really_varies():
    from loyal.training.uplift.evaluate import ranking_quality

    estimates, half_widths = [], []
    for seed in range(24):  # 24 campaigns drawn alike: how much does the estimate move, and what does it claim?
        rng = np.random.default_rng(100 + seed)
        rows = 2_000
        effect = np.where(rng.random(rows) < 0.3, 8.0, 0.0)
        treated = rng.random(rows) < 0.5
        revenue = rng.gamma(2.0, 20.0, rows) + effect * treated
        qini = ranking_quality(revenue, treated, {"knowing": effect + rng.random(rows)}, draws=40, seed=seed)
        estimates.append(qini["knowing"]["qini"]["value"])
        half_widths.append((qini["knowing"]["qini"]["high"] - qini["knowing"]["qini"]["low"]) / 2)
    claimed, actual = np.mean(half_widths) / 1.96, np.std(estimates, ddof=1)
    assert 0.7 < claimed / actual < 1.4, (claimed, actual)  # causalml's own half-sample figure: about 0.5


def test_taking_out_what_the_features_predict_keeps_the_estimates_and_narrows_their_intervals():
    from loyal.training.churn.model import LOG_FEATURES, RAW_FEATURES
    from loyal.training.uplift.evaluate import (
        ExpectedRevenue,
        ranking_quality,
        value_at_budget,
    )

    rng = np.random.default_rng(1)
    rows = 20_000
    spend = rng.gamma(2.0, 20.0, rows)  # what a customer spends anyway, which their past spending shows
    effect = np.where(rng.random(rows) < 0.3, 8.0, 0.0)
    frame = pd.DataFrame({"treated": rng.random(rows) < 0.5, "incentive": "free_shipping",
                          "spend_365d": spend * (1 + 0.1 * rng.standard_normal(rows))})
    frame = frame.assign(**{name: 0.0 for name in [*LOG_FEATURES, *RAW_FEATURES] if name != "spend_365d"})
    frame["revenue"] = spend + rng.normal(0, 5, rows) + effect * frame["treated"]
    # Learnt on the same customers' outcomes in another campaign, never on the rows judged.
    earlier = frame.assign(revenue=spend + rng.normal(0, 5, rows))
    expected = ExpectedRevenue().fit(earlier).predict(frame)
    score = {"knowing": effect + rng.random(rows)}
    raw = ranking_quality(frame["revenue"], frame["treated"], score, draws=50)["knowing"]["qini"]
    adjusted = ranking_quality(frame["revenue"], frame["treated"], score, draws=50,
                               expected=expected)["knowing"]["qini"]
    assert adjusted["high"] - adjusted["low"] < 0.5 * (raw["high"] - raw["low"])
    assert adjusted["low"] < raw["value"] < adjusted["high"] or raw["low"] < adjusted["value"] < raw["high"]
    truth = pd.DataFrame({"true_incremental_revenue_free_shipping": effect})
    incentive, cost = np.full(rows, "free_shipping", dtype=object), np.ones(rows)
    at = value_at_budget(frame, incentive, score["knowing"], cost, 5_000, truth, expected)
    estimate = at["incremental_revenue"]
    assert estimate["low"] < at["true_incremental_revenue"] < estimate["high"]
    assert estimate["high"] - estimate["low"] < 0.5 * at["true_incremental_revenue"]


def test_campaigns_target_by_uplift_once_there_is_a_champion_and_say_so_until_then(uplift_trained, tmp_path):
    from mlflow import MlflowClient

    _, summary = uplift_trained
    registry = MlflowClient()
    if summary["champion"]:
        registry.delete_registered_model_alias("loyal-uplift", "champion")
    runner = CliRunner()
    first = runner.invoke(app, ["campaign", "--name", "by-uplift-1", "--budget", "30", "--target", "uplift",
                                "--output", str(tmp_path / "first.csv")])
    assert first.exit_code == 0, first.output
    counts = json.loads(first.stdout)
    assert counts["target"] == "risk" and "no loyal-uplift champion" in counts["fallback"]

    registry.set_registered_model_alias("loyal-uplift", "champion", "1")
    second = runner.invoke(app, ["campaign", "--name", "by-uplift-2", "--budget", "30", "--target", "uplift",
                                 "--output", str(tmp_path / "second.csv")])
    assert second.exit_code == 0, second.output
    counts = json.loads(second.stdout)
    assert counts["target"] == "uplift" and "fallback" not in counts
    listed = pd.read_csv(tmp_path / "second.csv")
    treated = listed[listed["group"] == "treatment"]
    assert len(listed) > 0 and treated["expected_cost"].sum() <= 30 + 0.005 * len(treated)
    assert listed["reason"].str.contains("UPLIFT_TARGETED").all() and (listed["group"] == "control").any()
    bad = runner.invoke(app, ["campaign", "--name", "x", "--budget", "30", "--target", "luck",
                              "--output", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2 and "unknown target 'luck'" in bad.output and not (tmp_path / "x.csv").exists()


def test_evaluate_uplift_judges_three_targetings_on_the_held_out_campaign(uplift_trained):
    from loyal.home import Home

    home, _ = uplift_trained
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "uplift", "--budget", "40", "--draws", "20"])
    assert result.exit_code == 0, result.output
    report = json.loads((Home(home).reports / "uplift-synthetic-4.json").read_text())
    assert report["campaign"] == "synthetic-4" and report["truth_known"]
    for name in ("uplift", "risk", "random"):
        part = report[name]
        assert {"qini", "incremental_revenue", "true_incremental_revenue"} <= set(part)
        assert part["qini"]["low"] <= part["qini"]["value"] <= part["qini"]["high"]
        assert part["spent"] <= 40 + 1e-9 and part["picked"] > 0
    assert [point["budget"] for point in report["budget_curve"]] == [10.0, 20.0, 40.0, 80.0, 160.0]
    assert (Home(home).reports / "uplift-synthetic-4.md").exists()

    learnt = runner.invoke(app, ["evaluate", "uplift", "--budget", "40", "--campaign", "synthetic-2"])
    assert learnt.exit_code == 2 and "learnt from 'synthetic-2'" in learnt.output
    assert "Traceback" not in learnt.output
    negative = runner.invoke(app, ["evaluate", "uplift", "--budget", "-5"])
    assert negative.exit_code == 2 and "--budget must be a positive amount" in negative.output
