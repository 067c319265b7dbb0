"""The offer policy, without a server: its rules, its limits and its arithmetic by hand (serving/policy.yaml)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from loyal.errors import LoyalError
from loyal.serving.policy import DEFAULT_POLICY, choose, expected_costs, expected_gains, load_policy


@pytest.fixture(scope="module")
def policy():
    return load_policy()


def _one(policy, p, value, tier=None) -> dict:
    return choose(policy, [p], [value], [tier]).iloc[0].to_dict()


def test_a_risky_valuable_member_gets_the_largest_gain_by_hand(policy):
    # p 0.8, value 500: percent_off 15% gains 0.12 x 500 x (0.8 - 0.15) = 39.0; free shipping
    # 0.06 x (400 - 4.95) = 23.70; points x2 0.08 x 500 x (0.8 - 0.01) = 31.6.
    gains = expected_gains(policy, [0.8], [500.0], ["gold"])[0]
    assert gains == pytest.approx([0.0, 39.0, 23.703, 31.6])
    offer = _one(policy, 0.8, 500.0, "gold")
    assert (offer["incentive"], offer["percent"], offer["expected_gain"]) == ("percent_off", 15, pytest.approx(39.0))
    assert offer["reason_codes"] == ["HIGH_CHURN_RISK", "LARGEST_EXPECTED_GAIN"]
    # What each would cost (a campaign's budget): 0.12 x 500 x 15% = 9.0; 0.06 x 4.95 = 0.297; 0.08 x 500 x 0.01 = 0.4.
    assert expected_costs(policy, [0.8], [500.0])[0] == pytest.approx([0.0, 9.0, 0.297, 0.4])
    assert offer["expected_cost"] == pytest.approx(9.0)


def test_medium_risk_earns_the_smaller_discount(policy):
    offer = _one(policy, 0.35, 200.0)
    assert (offer["incentive"], offer["percent"]) == ("percent_off", 10)
    assert offer["expected_gain"] == pytest.approx(0.12 * 200 * (0.35 - 0.10))
    assert offer["reason_codes"][0] == "MEDIUM_CHURN_RISK"


def test_below_the_discount_minimum_members_get_points_and_others_free_shipping(policy):
    member = _one(policy, 0.5, 40.0, "silver")  # points 0.08 x 40 x 0.49 = 1.568 > shipping 0.06 x 15.05 = 0.903
    assert (member["incentive"], member["multiplier"]) == ("points_multiplier", 2.0)
    assert member["expected_gain"] == pytest.approx(1.568)
    assert "VALUE_BELOW_DISCOUNT_MINIMUM" in member["reason_codes"] and "LOYALTY_MEMBER" in member["reason_codes"]
    stranger = _one(policy, 0.5, 40.0)
    assert stranger["incentive"] == "free_shipping" and stranger["expected_gain"] == pytest.approx(0.903)


def test_who_never_gets_an_incentive(policy):
    low = _one(policy, 0.29, 10_000.0, "gold")
    assert (low["incentive"], low["reason_codes"]) == ("none", ["LOW_CHURN_RISK"])
    staff = _one(policy, 0.95, 10_000.0, "staff")
    assert (staff["incentive"], staff["reason_codes"]) == ("none", ["HIGH_CHURN_RISK", "TIER_NEVER_INCENTIVISED"])
    unknown = _one(policy, float("nan"), float("nan"))
    assert (unknown["incentive"], unknown["reason_codes"]) == ("none", ["UNKNOWN_CUSTOMER"])
    worthless = _one(policy, 0.5, 1.0)  # shipping would cost more than the customer is worth
    assert worthless["incentive"] == "none" and worthless["reason_codes"][-1] == "NO_INCENTIVE_PAYS_FOR_ITSELF"


def test_limits_hold_for_every_customer(policy):
    rng = np.random.default_rng(0)
    n = 20_000
    p, value = rng.random(n), rng.gamma(1.0, 200.0, n)
    tier = rng.choice(np.array(["gold", "silver", "staff", None], dtype=object), n)
    offers = choose(policy, p, value, tier)
    assert len(offers) == n
    assert offers["percent"].max() <= policy.max_discount_percent
    assert (offers.loc[p < policy.min_churn_probability, "incentive"] == "none").all()
    assert (offers.loc[tier == "staff", "incentive"] == "none").all()
    assert (offers.loc[value < policy.min_expected_value_for_discount, "incentive"] != "percent_off").all()
    assert (offers.loc[tier == None, "incentive"] != "points_multiplier").all()  # noqa: E711 (array compare)
    assert (offers["expected_gain"] >= 0).all()
    assert set(offers["incentive"]) == {"none", "percent_off", "free_shipping", "points_multiplier"}


@pytest.mark.parametrize("change, message", [
    (lambda c: c["percent_off"]["percent_by_risk"].update({0.9: 30}), "outside 1..max_discount_percent"),
    (lambda c: c.update(surprise=1), "surprise: Extra inputs are not permitted"),
    (lambda c: c["free_shipping"].update(response_rate=1.5), "free_shipping.response_rate"),
    (lambda c: c.pop("validity_days"), "validity_days: Field required"),
])
def test_a_bad_policy_file_is_refused_in_one_line_naming_the_field(tmp_path, change, message):
    config = yaml.safe_load(DEFAULT_POLICY.read_text())
    change(config)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(LoyalError, match=message) as error:
        load_policy(path)
    assert "\n" not in str(error.value)


def test_a_missing_or_broken_policy_file_is_one_line(tmp_path):
    with pytest.raises(LoyalError, match="cannot read the offer policy"):
        load_policy(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("validity_days: [14\n")
    with pytest.raises(LoyalError, match="not valid YAML"):
        load_policy(broken)
