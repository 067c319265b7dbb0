"""The uplift family: the past campaigns of a synthetic shop with planted effects, learnt from."""

from __future__ import annotations

import pandas as pd
import pytest

from loyal.errors import LoyalError
from loyal.ingest import ingest_synthetic
from loyal.synthetic import SyntheticConfig


@pytest.fixture(scope="module")
def campaigned(tmp_path_factory):
    from loyal.features.repo import BuildConfig, build

    home = tmp_path_factory.mktemp("uplift")
    ingest_synthetic(SyntheticConfig(customers=3_000, days=365, seed=2, campaigns=4), home)
    build(home, BuildConfig())
    return home


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
