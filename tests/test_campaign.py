"""Email campaigns on a synthetic shop with both models trained: consent, suppression, budget, control group,
frequency cap, the record in MLflow and the contact history, and bad input in one line."""

from __future__ import annotations

import hashlib
import json
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loyal.app.cli import app
from conftest import trained_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A synthetic shop (60% opted in to email), its features built and both models carrying `champion`."""
    from loyal.synthetic import SyntheticConfig

    home = tmp_path_factory.mktemp("campaigns") / "home"
    with trained_shop(home, SyntheticConfig(customers=600, days=400, seed=5)):
        yield home


def _campaign(*options: str):
    return CliRunner().invoke(app, ["campaign", *options])


def test_a_campaign_emails_only_the_opted_in_within_budget_with_its_control_share(shop, tmp_path):
    from loyal.suppression import suppress
    from loyal.store import read_table

    customers = read_table(shop, "customers")
    opted_in = set(customers.loc[customers["email_opt_in"].fillna(False).astype(bool), "customer_id"])
    # Two opted-in customers asked never to be contacted again.
    suppressed = sorted(opted_in)[:2]
    suppress(shop, set(suppressed))

    output = tmp_path / "spring.csv"
    result = _campaign("--name", "spring", "--budget", "60", "--control-fraction", "0.2", "--output", str(output))
    assert result.exit_code == 0, result.output
    listed = pd.read_csv(output, dtype={"customer_id": str})
    assert list(listed.columns[:3]) == ["customer_id", "group", "incentive"]
    assert {"items", "expected_value", "reason"} <= set(listed.columns)
    assert len(listed) > 20 and listed["customer_id"].is_unique
    assert set(listed["customer_id"]) <= opted_in - set(suppressed)
    treatment = listed[listed["group"] == "treatment"]
    assert treatment["expected_cost"].sum() <= 60 + 0.005 * len(treatment)  # costs are written to the cent
    assert abs((listed["group"] == "control").mean() - 0.2) <= 0.01
    assert (listed["incentive"] != "none").all()
    # Four items for each emailed customer; the control group is sent nothing, so it gets none.
    assert treatment["items"].str.count(";").eq(3).all()
    assert listed.loc[listed["group"] == "control", "items"].isna().all()
    # Ranked by expected retained value, best first.
    assert listed["expected_gain"].is_monotonic_decreasing

    from mlflow import MlflowClient

    runs = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()], "tags.campaign = 'spring'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["list_sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert run.data.metrics["budget_spent"] <= 60
    assert run.data.metrics["control"] == (listed["group"] == "control").sum()

    # The next campaign's frequency cap skips everyone emailed by this one, and only them.
    later = tmp_path / "later.parquet"
    result = _campaign("--name", "spring-2", "--budget", "60", "--min-days-since-contact", "14",
                       "--output", str(later))
    assert result.exit_code == 0, result.output
    second = pd.read_parquet(later)
    assert not set(second["customer_id"]) & set(treatment["customer_id"])
    assert set(second["customer_id"]) & set(listed.loc[listed["group"] == "control", "customer_id"])
    # Its outcomes are not in yet: nothing to measure.
    early = CliRunner().invoke(app, ["campaign", "measure", "--name", "spring"])
    assert early.exit_code == 2 and "are not all in" in early.output


def test_measuring_recovers_a_planted_offer_effect(home, tmp_path):
    # 6,000 customers emailed or held out on 2024-06-01. Over the next 30 days a held-out customer buys with
    # probability 0.20, an emailed one 0.26, and a buyer spends 50 on average: +0.06 purchases and +3.0 revenue
    # per customer are planted.
    from loyal.home import Home
    from loyal.ingest import ingest_file

    rng = np.random.default_rng(11)
    n = 6000
    ids = np.array([f"P{i:05d}" for i in range(n)])
    group = np.where(rng.random(n) < 0.5, "treatment", "control")
    home.mkdir(parents=True)
    pd.DataFrame({"campaign": "planted", "customer_id": ids, "group": group,
                  "contacted_on": pd.Timestamp("2024-06-01")}).to_parquet(Home(home).contacts)
    bought = rng.random(n) < np.where(group == "treatment", 0.26, 0.20)
    buyers = np.flatnonzero(bought)
    when = pd.Timestamp("2024-06-01") + pd.to_timedelta(rng.integers(0, 30 * 24, len(buyers)), unit="h")
    purchases = pd.DataFrame({"customer_id": ids[buyers], "item_id": "X", "timestamp": when, "quantity": 1,
                              "unit_price": rng.gamma(2.0, 25.0, len(buyers)).round(2),
                              "order_id": [f"o{i}" for i in range(len(buyers))], "channel": "web"})
    after = pd.DataFrame([{"customer_id": "someone", "item_id": "X", "timestamp": pd.Timestamp("2024-07-02"),
                           "quantity": 1, "unit_price": 1.0, "order_id": "later", "channel": "web"}])
    path = tmp_path / "transactions.csv"
    pd.concat([purchases, after]).to_csv(path, index=False)
    ingest_file("canonical", path, home)

    result = CliRunner().invoke(app, ["campaign", "measure", "--name", "planted", "--days", "30"])
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output)
    assert measured["treatment"] + measured["control"] == n
    assert measured["incremental_purchase_rate_low"] <= 0.06 <= measured["incremental_purchase_rate_high"]
    assert measured["incremental_purchase_rate_low"] > 0  # the effect is there to see, not only allowed
    assert measured["incremental_revenue_per_customer_low"] <= 3.0 <= measured["incremental_revenue_per_customer_high"]
    unknown = CliRunner().invoke(app, ["campaign", "measure", "--name", "nothing"])
    assert unknown.exit_code == 2 and "no campaign named 'nothing'" in unknown.output


@pytest.mark.parametrize("options, message", [
    (["--budget", "0"], "--budget must be a positive amount"),
    (["--budget", "10", "--control-fraction", "1.5"], "--control-fraction must be in [0, 1)"),
    (["--budget", "10", "--max-contacts", "0"], "--max-contacts must be at least 1"),
])
def test_bad_options_are_one_line_and_write_nothing(shop, tmp_path, options, message):
    output = tmp_path / "list.csv"
    result = _campaign("--name", "bad", *options, "--output", str(output))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not output.exists()


def test_a_name_already_used_or_an_unknown_format_is_refused(shop, tmp_path):
    first = tmp_path / "first.csv"
    assert _campaign("--name", "once", "--budget", "5", "--output", str(first)).exit_code == 0
    again = _campaign("--name", "once", "--budget", "5", "--output", str(tmp_path / "again.csv"))
    assert again.exit_code == 2 and "already recorded" in again.output
    assert not (tmp_path / "again.csv").exists()
    capped = tmp_path / "capped.csv"
    result = _campaign("--name", "capped", "--budget", "1000", "--max-contacts", "12", "--control-fraction", "0.25",
                       "--output", str(capped))
    assert result.exit_code == 0, result.output
    groups = pd.read_csv(capped)["group"].value_counts()
    assert groups["treatment"] == 12 and groups["control"] == 4
    text = _campaign("--name", "txt", "--budget", "5", "--output", str(tmp_path / "list.txt"))
    assert text.exit_code == 2 and "write .csv or .parquet" in text.output


def test_a_campaign_reads_the_last_snapshot_straight_and_other_dates_through_feast(shop):
    from loyal.serving.campaign import Campaign, build
    from loyal.features.repo import customer_features_at_last_snapshot, historical_features, latest_build
    from loyal.store import read_table

    end = pd.Timestamp(latest_build(shop)["snapshots"]["end"])
    straight = customer_features_at_last_snapshot(shop, end)
    transactions = read_table(shop, "transactions")
    bought = transactions.loc[(transactions["quantity"] > 0) & (transactions["timestamp"] < end), "customer_id"]
    assert straight["customer_id"].tolist() == sorted(set(bought))
    joined = historical_features(shop, pd.DataFrame({"customer_id": straight["customer_id"], "event_timestamp": end}))
    assert set(straight.columns) == set(joined.columns) - {"event_timestamp"}

    def plain(column):
        return column.astype(object).where(column.notna(), None).tolist()

    for name in straight.columns:
        assert plain(straight[name]) == plain(joined[name]), name
    assert customer_features_at_last_snapshot(shop, end - pd.Timedelta(days=1)) is None
    # A campaign dated between snapshots goes through Feast's point-in-time join.
    earlier = (end - pd.Timedelta(days=7)).date()
    week_before, counts = build(shop, Campaign(name="a-week-before", budget=50.0, as_of=earlier))
    assert counts["as_of"] == str(earlier) and len(week_before) > 0


def test_scores_at_the_last_snapshot_read_it_straight_and_equal_feasts_join(shop):
    """`loyal score churn` on the day after the data reads the last snapshot's rows straight, as campaigns do: the
    same customers and the same scores as Feast's point-in-time join of churn_v1 at that date."""
    from loyal.features.repo import historical_features, latest_build
    from loyal.training.churn import scoring
    from loyal.training.churn.data import FEATURE_SERVICE

    end = pd.Timestamp(latest_build(shop)["snapshots"]["end"])
    model, frame, predicted = scoring.scored_snapshot(shop, end)
    joined = historical_features(shop, frame[["customer_id"]].assign(event_timestamp=end), service=FEATURE_SERVICE)
    assert joined["customer_id"].tolist() == frame["customer_id"].tolist() and len(frame) > 100
    np.testing.assert_allclose(model.predict(joined).to_numpy(), predicted.to_numpy(), rtol=1e-12, atol=0)


def test_a_bigger_budget_lists_more_and_expects_more_without_recording_anything(shop):
    from loyal.home import Home
    from loyal.serving.campaign import value_by_budget

    before = (Home(shop).contacts).read_bytes() if (Home(shop).contacts).exists() else None
    curve = value_by_budget(shop, [10, 40, 160])
    assert (curve["budget_spent"] <= curve["budget"] + 0.01).all()
    assert curve["listed"].is_monotonic_increasing and curve["expected_gain"].is_monotonic_increasing
    assert curve["expected_gain"].iat[-1] > curve["expected_gain"].iat[0]
    assert ((Home(shop).contacts).read_bytes() if (Home(shop).contacts).exists() else None) == before


@pytest.mark.integration  # starts a local Spark (a JVM)
def test_scores_and_campaigns_on_spark_equal_the_embedded_ones(shop, tmp_path):
    """`--engine spark` scores with the registered champion as a Spark UDF (mlflow.pyfunc.spark_udf): the same
    customers, the same groups, scores within 1e-9 of the embedded path."""
    from loyal.store import day_after_last_purchase
    from loyal.training.churn import scoring

    as_of = day_after_last_purchase(shop)
    model, frame, embedded = scoring.scored_snapshot(shop, as_of)
    spark = scoring.predict(shop, model, frame, engine="spark")
    assert len(spark) == len(embedded) > 100 and (spark.index == embedded.index).all()
    np.testing.assert_allclose(spark.to_numpy(), embedded.to_numpy(), rtol=1e-9, atol=0)

    scores = {}
    for engine in ("embedded", "spark"):
        result = CliRunner().invoke(app, ["score", "churn", "--as-of", str(as_of), "--engine", engine,
                                          "--output", str(tmp_path / f"{engine}.parquet")])
        assert result.exit_code == 0, result.output
        scores[engine] = pd.read_parquet(tmp_path / f"{engine}.parquet")
    pd.testing.assert_frame_equal(scores["embedded"], scores["spark"])

    lists = {}
    for engine in ("embedded", "spark"):
        output = tmp_path / f"list-{engine}.csv"
        result = _campaign("--name", f"on-{engine}", "--budget", "50", "--seed", "3", "--as-of", str(as_of),
                           "--engine", engine, "--output", str(output))
        assert result.exit_code == 0, result.output
        lists[engine] = pd.read_csv(output, dtype={"customer_id": str})
    assert len(lists["embedded"]) > 10
    pd.testing.assert_frame_equal(lists["embedded"], lists["spark"])


def test_an_unknown_engine_is_one_line(shop, tmp_path):
    result = _campaign("--name", "nowhere", "--budget", "10", "--engine", "flink", "--output", str(tmp_path / "x.csv"))
    assert result.exit_code != 0 and "unknown engine 'flink'" in result.output
    assert not (tmp_path / "x.csv").exists()
