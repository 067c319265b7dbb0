"""Whom a campaign offers what: by churn risk, as the offer policy does for the service, or by learnt uplift.

Both spend a budget in the same currency, the policy's expected cost of each incentive (`policy.expected_costs`),
and both obey its hard rules (tiers never incentivised, points for members only, the discount cap). They differ in
what they expect an offer to bring:
- risk: churn probability x expected value x the incentive's assumed response rate (`policy.yaml`); the customers
  most likely to leave first;
- uplift: the incremental revenue the uplift champion learnt from past campaigns' control groups, for each incentive;
  per customer the incentive whose incremental revenue passes its cost by most, customers ranked by incremental
  revenue per unit of cost. Sure things, lost causes and those an email puts off fall to the bottom, whatever their
  risk. The policy's risk thresholds (`min_churn_probability`, `min_expected_value_for_discount`) are assumptions
  uplift replaces by measurement, so they do not apply; a customer below the first risk step is offered its
  smallest discount.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loyal.serving.policy import (
    INCENTIVES,
    Policy,
    choose,
    discount_percent,
    expected_costs,
    hard_rules,
)

TARGETS = ("risk", "uplift")
SMALLEST_COST = 0.01  # a free incentive still ranks by its gain, not by a division by zero


def by_risk(policy: Policy, churn_probability, expected_value, loyalty_tier) -> pd.DataFrame:
    """The offer policy's choice per customer, with `priority` (its expected gain; NaN: offer nothing)."""
    offers = choose(policy, churn_probability, expected_value, loyalty_tier)
    offers["priority"] = np.where(offers["incentive"] != "none", offers["expected_gain"], np.nan)
    return offers


def offer_costs(policy: Policy, churn_probability, expected_value) -> np.ndarray:
    """(customers, INCENTIVES) the expected costs uplift targeting spends its budget in: the policy's, with the
    discount of the customer's risk step, or the smallest step below the first."""
    p = np.nan_to_num(np.asarray(churn_probability, dtype=np.float64))
    return expected_costs(policy, p, expected_value, offered_percent(policy, p))


def offered_percent(policy: Policy, churn_probability: np.ndarray) -> np.ndarray:
    return np.maximum(discount_percent(policy, churn_probability), min(policy.percent_off.percent_by_risk.values()))


def by_uplift(policy: Policy, uplift: pd.DataFrame, churn_probability, expected_value, loyalty_tier
              ) -> pd.DataFrame:
    """Per customer (rows of `uplift`: `incremental_revenue_<incentive>`): incentive, percent, multiplier,
    expected_gain (incremental revenue - expected cost), expected_cost, incremental_revenue, priority (incremental
    revenue per unit of cost; NaN: no incentive pays for itself) and reason_codes."""
    p = np.nan_to_num(np.asarray(churn_probability, dtype=np.float64))
    rows = len(p)
    percent = offered_percent(policy, p)
    costs = expected_costs(policy, p, expected_value, percent)
    incremental = np.zeros((rows, len(INCENTIVES)))
    permitted = hard_rules(policy, loyalty_tier)
    never = ~permitted[:, INCENTIVES.index("free_shipping")]  # a tier never incentivised: no other rule forbids it
    for k, name in enumerate(INCENTIVES[1:], start=1):
        column = f"incremental_revenue_{name}"
        if column in uplift:
            incremental[:, k] = uplift[column].to_numpy(dtype=np.float64)
        else:
            permitted[:, k] = False  # an incentive no past campaign offered: nothing is known of its effect
    gains = np.where(permitted, incremental - costs, -np.inf)
    gains[:, 0] = 0.0
    best = np.argmax(gains, axis=1)
    at = np.arange(rows)
    chosen = best > 0
    reasons = [["TIER_NEVER_INCENTIVISED"] if n else
               ["UPLIFT_TARGETED", "LARGEST_INCREMENTAL_GAIN"] if c else ["NO_INCENTIVE_PAYS_FOR_ITSELF"]
               for n, c in zip(never, chosen)]
    return pd.DataFrame({
        "incentive": np.asarray(INCENTIVES, dtype=object)[best],
        "percent": np.where(best == 1, percent, 0),
        "multiplier": np.where(best == 3, policy.points_multiplier.multiplier, 0.0),
        "expected_gain": gains[at, best],
        "expected_cost": costs[at, best],
        "incremental_revenue": incremental[at, best],
        "priority": np.where(chosen, incremental[at, best] / np.maximum(costs[at, best], SMALLEST_COST), np.nan),
        "reason_codes": reasons,
    })
