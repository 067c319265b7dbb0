"""The baselines every churn model is reported beside (DESIGN.md): recency alone, logistic regression on RFM and
its windows, and BG/NBD's probability of no purchase in the horizon (PyMC-Marketing); for value, the last
horizon's spend and BG/NBD with Gamma-Gamma.

Each takes a snapshot frame (training_data.snapshot) and returns, per row, a churn probability and an expected
value over the horizon (NaN where a baseline has no value part). The two learnt ones fit on training snapshots; the
BG/NBD pair fits, unsupervised, on the purchases before the scored cutoff, as it is meant to be used.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from pymc_marketing.clv import BetaGeoModel, GammaGammaModel
from pymc_marketing.clv.utils import rfm_summary
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from loyal.schema import CUSTOMER_ID, QUANTITY, TIMESTAMP, UNIT_PRICE

RFM_FEATURES = [
    "recency_days", "tenure_days", "orders_30d", "orders_90d", "orders_365d", "orders_total",
    "spend_30d", "spend_90d", "spend_365d", "spend_total",
]


def _matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    values = frame[columns].astype("float64").fillna(0.0).to_numpy()
    return np.log1p(np.maximum(values, 0.0))


class Recency:
    """Days since the last purchase, turned into a probability by a one-feature logistic regression."""

    name = "recency"

    def fit(self, train: pd.DataFrame) -> Recency:
        self.model = LogisticRegression().fit(_matrix(train, ["recency_days"]), train["churned"])
        return self

    def predict(self, frame: pd.DataFrame, transactions: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
        probability = self.model.predict_proba(_matrix(frame, ["recency_days"]))[:, 1]
        return pd.DataFrame({"churn_probability": probability, "expected_value": np.nan}, index=frame.index)


class RFMLogistic:
    """Logistic regression on recency, frequency, money and their 30/90/365-day windows (log, standardised)."""

    name = "rfm_logistic"

    def fit(self, train: pd.DataFrame) -> RFMLogistic:
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.model.fit(_matrix(train, RFM_FEATURES), train["churned"])
        return self

    def predict(self, frame: pd.DataFrame, transactions: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
        probability = self.model.predict_proba(_matrix(frame, RFM_FEATURES))[:, 1]
        return pd.DataFrame({"churn_probability": probability, "expected_value": np.nan}, index=frame.index)


class LastSpend:
    """Value only: what the customer spent in the last horizon before the cutoff, as the next horizon's."""

    name = "last_spend"

    def fit(self, train: pd.DataFrame) -> LastSpend:
        return self

    def predict(self, frame: pd.DataFrame, transactions: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
        cutoff = frame["cutoff"].iloc[0]
        times = transactions[TIMESTAMP]
        window = transactions[(times >= cutoff - pd.Timedelta(days=horizon_days)) & (times < cutoff)]
        spend = (window[QUANTITY] * window[UNIT_PRICE]).groupby(window[CUSTOMER_ID]).sum().clip(lower=0.0)
        value = spend.reindex(frame[CUSTOMER_ID]).fillna(0.0).to_numpy()
        return pd.DataFrame({"churn_probability": np.nan, "expected_value": value}, index=frame.index)


class BGNBD:
    """BG/NBD (PyMC-Marketing, maximum a posteriori) on daily purchases before the cutoff: the probability of no
    purchase in the horizon (never raw P(alive), which ranks one-time buyers backwards), and, with Gamma-Gamma on the
    repeat buyers' spend, the expected value = expected purchases x expected spend per purchase."""

    name = "bg_nbd"

    def fit(self, train: pd.DataFrame) -> BGNBD:
        return self  # unsupervised: it fits on the scored cutoff's own history

    def predict(self, frame: pd.DataFrame, transactions: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
        cutoff = frame["cutoff"].iloc[0]
        before = transactions[(transactions[TIMESTAMP] < cutoff) & (transactions[QUANTITY] > 0)]
        purchases = pd.DataFrame({
            "customer_id": before[CUSTOMER_ID].to_numpy(),
            "date": before[TIMESTAMP].dt.tz_convert(None).dt.normalize().to_numpy(),
            "spend": (before[QUANTITY] * before[UNIT_PRICE]).to_numpy(),
        }).groupby(["customer_id", "date"], as_index=False)["spend"].sum()  # one purchase per customer and day
        summary = rfm_summary(purchases, "customer_id", "date", monetary_value_col="spend",
                              observation_period_end=(cutoff - pd.Timedelta(days=1)).tz_convert(None),
                              time_unit="D")
        summary = summary.set_index("customer_id").reindex(frame[CUSTOMER_ID]).reset_index()
        with _quiet():
            bg = BetaGeoModel(data=summary[["customer_id", "frequency", "recency", "T"]])
            bg.fit(method="map", progressbar=False)
            no_purchase = _per_customer(bg.expected_probability_no_purchase(t=horizon_days))
            purchases_ahead = _per_customer(bg.expected_purchases(future_t=horizon_days))
            repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
            gg = GammaGammaModel(data=repeat[["customer_id", "frequency", "monetary_value"]])
            gg.fit(method="map", progressbar=False)
            spend = _per_customer(gg.expected_customer_spend(
                data=summary[["customer_id", "frequency", "monetary_value"]].assign(
                    monetary_value=lambda s: s["monetary_value"].clip(lower=0.0))
            ))
        return pd.DataFrame({"churn_probability": no_purchase, "expected_value": purchases_ahead * spend},
                            index=frame.index)


def _per_customer(array) -> np.ndarray:
    """A PyMC-Marketing result (chain, draw, customer_id) as one value per customer, in the data's order."""
    return array.mean(dim=[d for d in array.dims if d != "customer_id"]).to_numpy()


class _quiet:
    """PyMC's sampler and ArviZ talk a lot; the baselines' figures are what matters."""

    def __enter__(self):
        self.levels = {name: logging.getLogger(name).level for name in ("pymc", "pytensor", "pymc_marketing")}
        for name in self.levels:
            logging.getLogger(name).setLevel(logging.ERROR)
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)


CHURN_BASELINES = (Recency, RFMLogistic, BGNBD)
VALUE_BASELINES = (LastSpend, BGNBD)
