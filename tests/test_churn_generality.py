"""The churn pipeline, unchanged, on another retailer: a shop selling one product in the 1990s, its transactions in
the canonical format with only the required columns, no browsing, no customer table. The network must still beat
every baseline there, with the paired intervals above zero."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loyal.app.cli import app

REQUIRED_ONLY = ["customer_id", "item_id", "timestamp", "quantity", "unit_price"]


def one_product_shop(customers: int = 1500, seed: int = 0) -> pd.DataFrame:
    """1994-1996. Each customer buys on a cadence of their own (10 to 250 days); half of them like clockwork, half
    at random (exponential gaps, as BG/NBD assumes of everyone); after any purchase they may stop for good.
    Whether a customer is overdue for their own cadence is the signal the baselines cannot read."""
    rng = np.random.default_rng(seed)
    start, days = pd.Timestamp("1994-01-01"), (pd.Timestamp("1997-01-01") - pd.Timestamp("1994-01-01")).days
    rows = []
    for customer in range(customers):
        cadence = float(np.clip(rng.lognormal(np.log(60), 0.7), 10, 250))
        regularity = rng.choice([1.0, 20.0])  # the gamma shape of the gaps: 1 is memoryless, 20 like clockwork
        stop = rng.choice([0.04, 0.15])
        quantity = int(rng.integers(1, 4))
        day = rng.uniform(0, 1000)
        while day < days:
            rows.append((f"c{customer:05d}", "the-box", start + pd.Timedelta(days=day), quantity, 24.5))
            if rng.random() < stop:
                break
            day += cadence * rng.gamma(regularity, 1 / regularity)
    return pd.DataFrame(rows, columns=REQUIRED_ONLY)


@pytest.mark.integration
def test_the_same_pipeline_beats_the_baselines_on_a_one_product_shop_of_the_1990s(home, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    one_product_shop().to_csv(export / "transactions.csv", index=False)
    runner = CliRunner()
    for command in (["ingest", "canonical", str(export)], ["features", "build"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output

    trained = runner.invoke(app, ["train", "churn", "--train-end", "1996-09-01", "--draws", "200"])
    assert trained.exit_code == 0, trained.output
    test = json.loads(trained.stdout)["test"]
    print("one-product shop, test window from 1996-09-01:", json.dumps(test))
    for metric in ("roc_auc", "pr_auc", "spearman"):
        assert test[metric]["difference"]["low"] > 0, (metric, test[metric])
    assert test["ece"] <= 0.05

    output = tmp_path / "scores.parquet"
    scored = runner.invoke(app, ["score", "churn", "--as-of", "1996-09-01", "--output", str(output),
                                 "--version", "1"])
    assert scored.exit_code == 0, scored.output
    scores = pd.read_parquet(output)
    assert scores["churn_probability"].between(0, 1).all() and scores["top_drivers"].str.contains(" pts").all()
    # Nothing here has a country, a tier or browsing: no driver may claim one.
    claimed = scores.loc[scores["top_drivers"].str.contains("country|tier|views|add-to-carts"), "top_drivers"]
    assert claimed.empty, claimed.head().tolist()
