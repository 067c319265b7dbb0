"""Judging a targeting on a campaign nobody learnt from: who it would have picked, and what picking them was worth.

A campaign's list is a randomised experiment: treatment and control were drawn at random, and each listed customer
carries an incentive (offered, or drawn and withheld for the control group). So any ranking of the listed customers
can be judged from the outcomes alone:

- the **Qini** (causalml's `qini_score`, in revenue, not normalised: the mean height of the curve of cumulative
  incremental revenue above random targeting's straight line) and the **AUUC**, each row ranked by its score for
  the incentive it was given or drawn, with half-sample bootstrap intervals;
- the **value at a budget**: a targeting picks customers and an incentive for each, best first, until the budget
  is spent. Its incremental revenue is estimated from the picked customers who happened to be treated with the
  incentive it chose against the picked customers in control (the draw makes both samples of the picked), with a
  95% interval; where the synthetic shop saved the truth, the true incremental revenue is the sum of each picked
  customer's true effect of the chosen incentive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from causalml.metrics import auuc_score, qini_score

Z95 = 1.96


def _interval(scores: pd.DataFrame, column: str) -> dict:
    """causalml's bootstrap frame -> {value, low, high} for one score column."""
    row = scores.loc[column]
    return {"value": float(row.iloc[0]), "low": float(row["ci_lower"]), "high": float(row["ci_upper"])}


def ranking_quality(outcome: np.ndarray, treated: np.ndarray, scores: dict[str, np.ndarray], draws: int = 200,
                    seed: int = 0, true_effect: np.ndarray | None = None) -> dict[str, dict]:
    """Per ranking: `qini` and `auuc` ({value, low, high}) from the outcomes; with the truth, `true_qini` (the
    curve of the true effects: no noise, no interval)."""
    frame = pd.DataFrame({"y": np.asarray(outcome, dtype=np.float64), "w": np.asarray(treated, dtype=np.int64)}
                         | {name: np.asarray(score, dtype=np.float64) for name, score in scores.items()})
    qini = qini_score(frame, normalize=False, return_ci=True, n_bootstrap=draws, random_state=seed)
    auuc = auuc_score(frame, normalize=False, return_ci=True, n_bootstrap=draws, random_state=seed)
    result = {name: {"qini": _interval(qini, name), "auuc": _interval(auuc, name)} for name in scores}
    if true_effect is not None:
        truth = frame.drop(columns="y").assign(tau=np.asarray(true_effect, dtype=np.float64))
        for name, value in qini_score(truth, normalize=False).items():
            if name in result:
                result[name]["true_qini"] = float(value)
    return result


def fill(priority: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """The rows picked, best priority first (NaN priority: never), each whose cost still fits the budget: one too
    dear is passed over for cheaper ones below, as `loyal campaign` fills its list."""
    candidates = np.flatnonzero(np.isfinite(priority))
    order = candidates[np.argsort(-priority[candidates], kind="stable")]
    picked, spent = [], 0.0
    for row, price in zip(order.tolist(), cost[order].tolist()):
        if spent + price <= budget:
            picked.append(row)
            spent += price
    return np.array(picked, dtype=np.int64)


def value_at_budget(rows: pd.DataFrame, incentive: np.ndarray, priority: np.ndarray, cost: np.ndarray,
                    budget: float, true_effects: pd.DataFrame | None = None) -> dict:
    """What a targeting (an `incentive` and a `priority` per row, NaN for nobody; each pick's `cost`) would have
    been worth at `budget`, judged on a campaign's rows (`treated`, `incentive`, `revenue`). `true_effects`: per
    row, `true_incremental_revenue_<incentive>` for every incentive."""
    picked = fill(np.asarray(priority, dtype=np.float64), np.asarray(cost, dtype=np.float64), budget)
    chosen = np.asarray(incentive, dtype=object)[picked]
    treated = rows["treated"].to_numpy(dtype=bool)[picked]
    revenue = rows["revenue"].to_numpy(dtype=np.float64)[picked]
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
