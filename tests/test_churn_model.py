"""The churn network's promises: it learns a planted signal, is calibrated by its temperature, never raises the
risk of a customer who bought more recently (everything else equal), and ignores who the customer is called."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loyal.training.churn.evaluate import churn_metrics, value_metrics
from loyal.training.churn.model import LOG_FEATURES, RAW_FEATURES, ChurnConfig, ChurnModel


def _snapshot(n: int, seed: int) -> pd.DataFrame:
    """Customers whose churn follows recency against their usual gap between orders, and spend their habit."""
    rng = np.random.default_rng(seed)
    gap = rng.gamma(2.0, 20.0, n) + 3
    recency = rng.exponential(gap * 1.5)
    orders = rng.poisson(200 / gap) + 1
    spend = orders * rng.gamma(3.0, 30.0, n)
    logit = 1.5 * (np.log1p(recency) - np.log1p(gap)) - 0.3
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({
        "customer_id": [f"c{seed}-{i}" for i in range(n)],
        "recency_days": recency.round(), "tenure_days": recency.round() + gap * orders,
        "orders_90d": rng.poisson(90 / gap), "orders_365d": orders, "orders_total": orders,
        "spend_90d": spend * 90 / 365, "spend_365d": spend, "spend_total": spend,
        "mean_days_between_orders": np.where(orders > 1, gap, np.nan),
        "country": rng.choice(["United Kingdom", "France", "Germany"], n), "loyalty_tier": pd.NA,
        "churned": churned, "future_spend": np.where(churned, 0.0, spend * rng.uniform(0.1, 0.4, n)),
    })
    # The network's other inputs carry nothing here: present, and zero (a missing column is an error).
    return frame.assign(**{name: 0.0 for name in [*LOG_FEATURES, *RAW_FEATURES] if name not in frame})


@pytest.fixture(scope="module")
def fitted():
    return ChurnModel(ChurnConfig(epochs=15)).fit(_snapshot(3000, 1), _snapshot(1500, 2))


def test_it_learns_the_planted_signal_and_its_probabilities_are_calibrated(fitted):
    test = _snapshot(3000, 3)
    predicted = fitted.predict(test)
    churn = churn_metrics(test["churned"].to_numpy(), predicted["churn_probability"].to_numpy())
    assert churn["roc_auc"] > 0.7 and churn["ece"] < 0.05
    value = value_metrics(test["future_spend"].to_numpy(), predicted["expected_value"].to_numpy())
    assert value["spearman"] > 0.4
    # Expected value is money: summed over customers, it is what they went on to spend, give or take.
    assert predicted["expected_value"].sum() == pytest.approx(test["future_spend"].sum(), rel=0.15)


def test_a_more_recent_purchase_never_raises_the_risk(fitted):
    test = _snapshot(500, 4)
    risk = fitted.predict(test)["churn_probability"].to_numpy()
    for days in (0, 1, 7, 30):
        sooner = test.assign(recency_days=np.maximum(test["recency_days"] - days, 0))
        assert (fitted.predict(sooner)["churn_probability"].to_numpy() <= risk + 1e-9).all()


def test_renaming_customers_changes_nothing(fitted):
    test = _snapshot(300, 5)
    renamed = test.assign(customer_id=[f"someone else {i}" for i in range(len(test))])
    pd.testing.assert_frame_equal(fitted.predict(test), fitted.predict(renamed))


def test_a_requests_columns_score_exactly_like_a_snapshot_frame(fitted):
    # The service hands the model plain lists (None where the online store holds nothing, for some customers or for
    # all of them); training and batch scoring hand it DataFrames.
    test = _snapshot(40, 6).assign(orders_90d=np.nan)
    test.loc[::3, "spend_365d"] = np.nan
    test.loc[::4, "country"] = None
    columns = {name: [None if pd.isna(v) else v for v in test[name]] for name in test.columns}
    frame_churn, frame_value = fitted.predict_arrays(test)
    list_churn, list_value = fitted.predict_arrays(columns)
    assert np.array_equal(fitted.encoder.transform(test), fitted.encoder.transform(columns))
    assert np.array_equal(frame_churn, list_churn) and np.array_equal(frame_value, list_value)
    one_churn, _ = fitted.predict_arrays({name: values[:1] for name, values in columns.items()})
    assert one_churn[0] == pytest.approx(list_churn[0], abs=1e-6)


def test_an_auc_too_good_for_transaction_data_raises_a_leakage_warning(caplog):
    from loyal.training.churn.baselines import CHURN_BASELINES, VALUE_BASELINES
    from loyal.training.churn.training import _decide, _measure

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"churned": rng.random(400) < 0.4, "future_spend": rng.gamma(2.0, 50.0, 400)})
    noise = pd.DataFrame({"churn_probability": rng.random(400), "expected_value": rng.random(400)})
    leaked = pd.DataFrame({"churn_probability": frame["churned"] * 0.9 + 0.05,
                           "expected_value": frame["future_spend"]})
    predictions = {b.name: noise for b in (*CHURN_BASELINES, *VALUE_BASELINES)} | {ChurnModel.name: leaked}
    report = _measure(frame, predictions, draws=20)
    assert "leakage_warning" in report and "after the cutoff reached the features" in caplog.text
    honest = _measure(frame, predictions | {ChurnModel.name: noise}, draws=20)
    assert "leakage_warning" not in honest
    # A run that looks leaked never becomes champion, however good it looks.
    decision = _decide({"validation": report, "train_end": "2024-01-01"})
    assert not decision.promote and "after the cutoff" in decision.reason


def test_drivers_name_what_raises_a_risky_customers_risk_in_plain_words(fitted):
    from loyal.training.churn.explain import top_drivers

    customer = _snapshot(200, 6).iloc[[0]].assign(recency_days=400.0, mean_days_between_orders=10.0)
    assert fitted.predict(customer)["churn_probability"].iloc[0] > 0.5
    text = top_drivers(fitted, customer).iloc[0]
    assert text.startswith("days since the last purchase +")
    assert "recency_days" not in text


def test_batched_ablation_equals_replacing_each_raw_input_in_turn(fitted):
    from loyal.training.churn.explain import contributions

    frame = _snapshot(40, 7)
    fast = contributions(fitted, frame)
    risk = fitted.predict(frame)["churn_probability"].to_numpy()
    for name in fast.columns:
        ablated = frame.copy()
        ablated[name] = pd.Series([fitted.reference[name].iloc[0]] * len(frame), index=frame.index).astype(
            frame[name].dtype)
        slow = risk - fitted.predict(ablated)["churn_probability"].to_numpy()
        np.testing.assert_allclose(fast[name].to_numpy(), slow, atol=1e-6, err_msg=name)
    assert {"recency_days", "mean_days_between_orders", "country"} <= set(fast.columns)


def test_ablations_in_blocks_of_customers_equal_one_batch(fitted, monkeypatch):
    """Blocks keep a million customers' ablations within memory (one batch held more than 20 GiB at 1M)."""
    from loyal.training.churn import explain

    frame = _snapshot(250, 8)
    whole = explain.contributions(fitted, frame)
    monkeypatch.setattr(explain, "BLOCK", 7)
    pd.testing.assert_frame_equal(explain.contributions(fitted, frame), whole)


def test_a_customer_unlike_any_in_training_gets_a_finite_value(fitted):
    # Far outside training the value head extrapolates to e^40 and more; the answer stays within what was seen.
    far = _snapshot(20, 8).assign(recency_days=1e12, tenure_days=1e12, spend_total=1e12)
    predicted = fitted.predict(far)
    ceiling = fitted.value_scale * np.expm1(fitted.max_log_spend)
    assert np.isfinite(predicted["expected_value"]).all()
    assert predicted["expected_value"].between(0, ceiling).all()


def test_an_input_constant_in_training_is_ignored_later():
    train, calibration = _snapshot(1000, 11).assign(web_share_365d=1.0), _snapshot(500, 12).assign(web_share_365d=1.0)
    model = ChurnModel(ChurnConfig(epochs=3)).fit(train, calibration)
    test = _snapshot(200, 13).assign(web_share_365d=1.0)
    pd.testing.assert_frame_equal(model.predict(test), model.predict(test.assign(web_share_365d=0.0)))
