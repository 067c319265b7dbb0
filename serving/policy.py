"""The offer policy: pure functions from a customer's churn risk, expected value and loyalty tier to an incentive,
with the reasons, under the rules and limits of `policy.yaml` (which explains the arithmetic).

Everything works on arrays, so the service's one customer and a campaign's million go through the same code.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loyal.errors import LoyalError

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
INCENTIVES = ("none", "percent_off", "free_shipping", "points_multiplier")
HIGH_RISK = 0.6  # the churn model's "high" segment starts here (training.churn.scoring.RISK_SEGMENTS)

Rate = Field(ge=0.0, le=1.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PercentOff(_Strict):
    percent_by_risk: dict[float, int] = Field(min_length=1)
    response_rate: float = Rate


class FreeShipping(_Strict):
    response_rate: float = Rate
    cost_per_use: float = Field(ge=0.0)


class PointsMultiplier(_Strict):
    multiplier: float = Field(gt=1.0)
    point_value: float = Field(ge=0.0)
    members_only: bool = True
    response_rate: float = Rate


class Policy(_Strict):
    validity_days: int = Field(ge=1)
    min_churn_probability: float = Rate
    never_incentivise_tiers: list[str] = []
    min_expected_value_for_discount: float = Field(ge=0.0)
    max_discount_percent: int = Field(gt=0, lt=100)
    percent_off: PercentOff
    free_shipping: FreeShipping
    points_multiplier: PointsMultiplier

    @model_validator(mode="after")
    def _discounts_within_the_cap(self) -> Policy:
        above = [p for p in self.percent_off.percent_by_risk.values() if not 0 < p <= self.max_discount_percent]
        if above:
            raise ValueError(f"percent_off.percent_by_risk holds {above[0]}%, outside 1..max_discount_percent "
                             f"({self.max_discount_percent}%)")
        return self


def load_policy(path: Path | None = None) -> Policy:
    """The policy at `path` (default: the one shipped beside this module); a bad file is one LoyalError line."""
    path = Path(path) if path is not None else DEFAULT_POLICY
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise LoyalError(f"cannot read the offer policy {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise LoyalError(f"the offer policy {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise LoyalError(f"the offer policy {path}: {where}: {first['msg']}") from None


def discount_percent(policy: Policy, churn_probability: np.ndarray) -> np.ndarray:
    """The percent-off each churn probability earns (0 below the lowest threshold)."""
    thresholds = sorted(policy.percent_off.percent_by_risk.items())
    percent = np.zeros(len(churn_probability), dtype=np.int64)
    for threshold, value in thresholds:
        percent[np.asarray(churn_probability) >= threshold] = value
    return percent


def as_tiers(loyalty_tier) -> np.ndarray:
    """Tiers as an object array of str, None where there is none (NaN, pd.NA, empty)."""
    return np.array([str(t) if isinstance(t, str) and t else None for t in loyalty_tier], dtype=object)


def expected_costs(policy: Policy, churn_probability, expected_value, percent: np.ndarray | None = None
                   ) -> np.ndarray:
    """(customers, INCENTIVES) what each incentive is expected to cost: response rate x (cost per use + share of
    spend x expected value); `none` costs 0. What a campaign's budget is spent on. `percent`: the discount each
    customer would be offered (default: the one their churn probability earns)."""
    p = np.nan_to_num(np.asarray(churn_probability, dtype=np.float64))
    value = np.maximum(np.nan_to_num(np.asarray(expected_value, dtype=np.float64)), 0.0)
    discount, shipping, points = policy.percent_off, policy.free_shipping, policy.points_multiplier
    percent = discount_percent(policy, p) if percent is None else percent
    costs = np.zeros((len(value), len(INCENTIVES)))
    costs[:, 1] = discount.response_rate * value * percent / 100
    costs[:, 2] = shipping.response_rate * shipping.cost_per_use
    costs[:, 3] = points.response_rate * value * (points.multiplier - 1) * points.point_value
    return costs


def hard_rules(policy: Policy, loyalty_tier) -> np.ndarray:
    """(customers, INCENTIVES) what the rules allow whatever a customer's scores, for every way of targeting: no
    incentive for a tier never incentivised, points for members only (where so configured); `none` always."""
    tier = as_tiers(loyalty_tier)
    never = np.isin(tier, list(policy.never_incentivise_tiers))
    member = tier != None if policy.points_multiplier.members_only else np.ones(len(tier), dtype=bool)  # noqa: E711
    return np.stack([np.ones(len(tier), dtype=bool), ~never, ~never, ~never & member], axis=1)


def expected_gains(policy: Policy, churn_probability, expected_value, loyalty_tier) -> np.ndarray:
    """(customers, INCENTIVES) expected gain of each incentive: churn probability x expected value x response rate
    - expected cost; -inf where a rule forbids it; `none` gains 0. Unknown risk or value (NaN) allows no
    incentive."""
    p = np.asarray(churn_probability, dtype=np.float64)
    value = np.asarray(expected_value, dtype=np.float64)
    known = np.isfinite(p) & np.isfinite(value)
    p, value = np.where(known, p, 0.0), np.where(known, np.maximum(value, 0.0), 0.0)
    allowed = known & (p >= policy.min_churn_probability)
    percent = discount_percent(policy, p)
    permitted = hard_rules(policy, loyalty_tier) & np.stack([
        np.ones(len(p), dtype=bool),
        allowed & (percent > 0) & (value >= policy.min_expected_value_for_discount),
        allowed,
        allowed,
    ], axis=1)
    rates = np.array([0.0, policy.percent_off.response_rate, policy.free_shipping.response_rate,
                      policy.points_multiplier.response_rate])
    gains = (p * value)[:, None] * rates[None, :] - expected_costs(policy, p, value)
    return np.where(permitted, gains, -np.inf)


def choose(policy: Policy, churn_probability, expected_value, loyalty_tier) -> pd.DataFrame:
    """One row per customer: incentive, percent (percent_off), multiplier (points_multiplier), expected_gain,
    expected_cost and reason_codes (a list of upper-case codes saying why)."""
    return pd.DataFrame(choose_columns(policy, churn_probability, expected_value, loyalty_tier))


def choose_columns(policy: Policy, churn_probability, expected_value, loyalty_tier) -> dict[str, np.ndarray | list]:
    """`choose` as plain columns, for the service's one customer per request."""
    p = np.asarray(churn_probability, dtype=np.float64)
    value = np.asarray(expected_value, dtype=np.float64)
    tier = as_tiers(loyalty_tier)
    gains = expected_gains(policy, p, value, tier)
    best = np.argmax(gains, axis=1)  # ties go to the earlier incentive: `none` first
    rows = np.arange(len(best))
    incentive = np.asarray(INCENTIVES, dtype=object)[best]
    percent = np.where(best == 1, discount_percent(policy, np.nan_to_num(p)), 0)
    multiplier = np.where(best == 3, policy.points_multiplier.multiplier, 0.0)
    return {
        "incentive": incentive,
        "percent": percent,
        "multiplier": multiplier,
        "expected_gain": gains[rows, best],
        "expected_cost": expected_costs(policy, p, value)[rows, best],
        "reason_codes": [_reasons(policy, *row) for row in zip(p, value, tier, incentive)],
    }


def _reasons(policy: Policy, p: float, value: float, tier, incentive: str) -> list[str]:
    if not (np.isfinite(p) and np.isfinite(value)):
        return ["UNKNOWN_CUSTOMER"]
    codes = ["HIGH_CHURN_RISK" if p >= HIGH_RISK else
             "MEDIUM_CHURN_RISK" if p >= policy.min_churn_probability else "LOW_CHURN_RISK"]
    if tier is not None and tier in policy.never_incentivise_tiers:
        return codes + ["TIER_NEVER_INCENTIVISED"]
    if codes[0] == "LOW_CHURN_RISK":
        return codes
    if value < policy.min_expected_value_for_discount:
        codes.append("VALUE_BELOW_DISCOUNT_MINIMUM")
    if incentive == "none":
        return codes + ["NO_INCENTIVE_PAYS_FOR_ITSELF"]
    if incentive == "points_multiplier":
        codes.append("LOYALTY_MEMBER")
    return codes + ["LARGEST_EXPECTED_GAIN"]


def expires_at(policy: Policy, now: datetime) -> datetime:
    return now + timedelta(days=policy.validity_days)
