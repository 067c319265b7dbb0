"""Judging a targeting on a campaign nobody learnt from: who it would have picked, and what picking them was worth.

A campaign's list is a randomised experiment: treatment and control were drawn at random, and each listed customer
carries an incentive (offered, or drawn and withheld for the control group). So any ranking of the listed customers
can be judged from the outcomes alone:

- the **Qini** (causalml's `qini_score`, in revenue, not normalised: the mean height of the curve of cumulative
  incremental revenue above random targeting's straight line) and the **AUUC**, each row ranked by its score for
  the incentive it was given or drawn, with half-sample bootstrap intervals (rescaled: see `_interval`);
- the **value at a budget**: a targeting picks customers and an incentive for each, best first, until the budget
  is spent. Its incremental revenue is estimated from the picked customers who happened to be treated with the
  incentive it chose against the picked customers in control (the draw makes both samples of the picked), with a
  95% interval; where the synthetic shop saved the truth, the true incremental revenue is the sum of each picked
  customer's true effect of the chosen incentive.

Every estimate is taken on each row's revenue less the revenue its features alone predict (an `ExpectedRevenue`
learnt on other campaigns' rows, never on the campaign judged): the draw made treatment independent of the
features, so subtracting any function of them leaves each difference between treated and control where it was in
expectation, and takes out the part of its variance that comes from customers spending differently anyway
(regression adjustment, CUPED: Deng et al., 2013). One big spender in one arm otherwise outweighs a whole campaign's
effect.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from causalml.metrics import auuc_score, qini_score

from loyal.budget import spend_down
from loyal.training.churn.model import Encoder
from loyal.training.uplift.baselines import lightgbm

Z95 = 1.96


def _interval(scores: pd.DataFrame, column: str, rows: int) -> dict:
    """causalml's bootstrap frame -> {value, low, high} for one score column.

    causalml's half-sample bootstrap draws rows // 2 rows without replacement, which gives the right spread for a
    score that is a mean over the rows. Unnormalised, the Qini and the AUUC are sums over the ranked customers: on
    half the rows their spread is half the whole's (checked by simulation: 30 campaigns of 8,000 rows, spread of the
    estimates 663 against a bootstrap standard error of 375). So the standard error is scaled by rows / (rows // 2)
    and the 95% interval taken from it."""
    row = scores.loc[column]
    value, se = float(row.iloc[0]), float(row["se"]) * rows / max(rows // 2, 1)
    return {"value": value, "low": value - Z95 * se, "high": value + Z95 * se}


class ExpectedRevenue:
    """A row's revenue in a campaign's window as its features alone predict it, whatever its arm: LightGBM fitted on
    the rows of other campaigns."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, rows: pd.DataFrame) -> ExpectedRevenue:
        self.encoder = Encoder().fit(rows)
        self.regressor = lightgbm(self.seed)
        self.regressor.fit(self.encoder.transform(rows), rows["revenue"].to_numpy(dtype=np.float64))
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.regressor.predict(self.encoder.transform(frame))


def ranking_quality(outcome: np.ndarray, treated: np.ndarray, scores: dict[str, np.ndarray], draws: int = 200,
                    seed: int = 0, true_effect: np.ndarray | None = None,
                    expected: np.ndarray | None = None) -> dict[str, dict]:
    """Per ranking: `qini` and `auuc` ({value, low, high}) from the outcomes, less `expected` (each row's outcome
    predicted from its features alone, by a model that never saw these rows) where given; with the truth,
    `true_qini` (the curve of the true effects: no noise, no interval)."""
    adjusted = np.asarray(outcome, dtype=np.float64) - (0.0 if expected is None else np.asarray(expected))
    frame = pd.DataFrame({"y": adjusted, "w": np.asarray(treated, dtype=np.int64)}
                         | {name: np.asarray(score, dtype=np.float64) for name, score in scores.items()})
    qini = qini_score(frame, normalize=False, return_ci=True, n_bootstrap=draws, random_state=seed)
    auuc = auuc_score(frame, normalize=False, return_ci=True, n_bootstrap=draws, random_state=seed)
    result = {name: {"qini": _interval(qini, name, len(frame)), "auuc": _interval(auuc, name, len(frame))}
              for name in scores}
    if true_effect is not None:
        truth = frame.drop(columns="y").assign(tau=np.asarray(true_effect, dtype=np.float64))
        for name, value in qini_score(truth, normalize=False).items():
            if name in result:
                result[name]["true_qini"] = float(value)
    return result


def fill(priority: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """The rows picked, best priority first (NaN priority: never), as `loyal campaign` fills its list."""
    candidates = np.flatnonzero(np.isfinite(priority))
    order = candidates[np.argsort(-priority[candidates], kind="stable")]
    return order[spend_down(cost[order], budget)]


def value_at_budget(rows: pd.DataFrame, incentive: np.ndarray, priority: np.ndarray, cost: np.ndarray,
                    budget: float, true_effects: pd.DataFrame | None = None,
                    expected: np.ndarray | None = None) -> dict:
    """What a targeting (an `incentive` and a `priority` per row, NaN for nobody; each pick's `cost`) would have
    been worth at `budget`, judged on a campaign's rows (`treated`, `incentive`, `revenue`, less `expected` where
    given, as in `ranking_quality`). `true_effects`: per row, `true_incremental_revenue_<incentive>` for every
    incentive."""
    picked = fill(np.asarray(priority, dtype=np.float64), np.asarray(cost, dtype=np.float64), budget)
    chosen = np.asarray(incentive, dtype=object)[picked]
    treated = rows["treated"].to_numpy(dtype=bool)[picked]
    revenue = (rows["revenue"].to_numpy(dtype=np.float64) - (0.0 if expected is None else expected))[picked]
    matched = treated & (rows["incentive"].astype(str).to_numpy()[picked] == chosen)
    held = ~treated
    result = {"budget": float(budget), "picked": len(picked), "spent": round(float(cost[picked].sum()), 2),
              "treated_with_the_chosen_incentive": int(matched.sum()), "control": int(held.sum())}
    if matched.sum() >= 2 and held.sum() >= 2:
        per_customer = revenue[matched].mean() - revenue[held].mean()
        half = Z95 * np.sqrt(revenue[matched].var(ddof=1) / matched.sum() + revenue[held].var(ddof=1) / held.sum())
        result["incremental_revenue"] = {"value": float(per_customer * len(picked)),
                                         "low": float((per_customer - half) * len(picked)),
                                         "high": float((per_customer + half) * len(picked))}
    else:
        result["incremental_revenue"] = None  # too few picked in one of the groups to estimate anything
    if true_effects is not None:
        columns = true_effects.iloc[picked]
        result["true_incremental_revenue"] = float(sum(
            columns[f"true_incremental_revenue_{name}"].to_numpy()[chosen == name].sum() for name in set(chosen)))
    return result
