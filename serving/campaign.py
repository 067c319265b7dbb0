"""Email campaigns: who is sent which offer, under a budget, only with consent, with a control group held out.

`build` scores every customer at once from the offline store (the churn champion on the `churn_v1` features at the
campaign's date, as `loyal score churn` does), keeps those who may be emailed (opted in, not suppressed, not
contacted too recently), chooses each one's incentive and ranks them (`serving/targeting.py`: by the offer policy's
expected retained value, or, with target "uplift", by the uplift champion's incremental revenue per unit of cost)
and fills the budget down that ranking. A seeded random
share of the list is held out as control. `record` writes the list, an MLflow run and the contact history that the
next campaign's frequency cap reads.

The budget is spent on the incentives' expected costs (`policy.expected_costs`). The list is filled as if everyone
on it were treated, so the control group's share of the budget goes unspent: that is the price of measuring.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from loyal.errors import LoyalError
from loyal.dates import midnight
from loyal.features.compute import EVENT_TIMESTAMP
from loyal.features.engines import ENGINES
from loyal.features.repo import customer_features_at_last_snapshot, historical_features
from loyal.budget import spend_down
from loyal.contacts import append_contacts, contact_history, outcomes, window
from loyal.locking import writes_home
from loyal.schema import CUSTOMER_ID, EMAIL_OPT_IN, ITEM_ID, LOYALTY_TIER, QUANTITY, TIMESTAMP
from loyal.serving.policy import load_policy
from loyal.serving.targeting import TARGETS, by_risk, by_uplift
from loyal.store import day_after_last_purchase, read_table, write_atomically
from loyal.suppression import Suppression, suppressed
from loyal.tracking import use_home
from loyal.training.churn import scoring as churn_scoring
from loyal.training.recommender import rails
from loyal.training.uplift import scoring as uplift_scoring

ITEMS_PER_CONTACT = 4
LIST_COLUMNS = [CUSTOMER_ID, "group", "incentive", "percent", "multiplier", "items", "churn_probability",
                "expected_value", "expected_gain", "expected_cost", "reason"]


@dataclass(frozen=True)
class Campaign:
    name: str
    budget: float
    max_contacts: int | None = None
    control_fraction: float = 0.1
    min_days_since_contact: int = 0
    as_of: date | None = None  # default: the day after the last purchase in the data
    seed: int = 0
    engine: str = "embedded"  # what scores the customers: this process, or Spark (the registered model as a UDF)
    target: str = "risk"  # whom first: the likeliest to leave (risk) or those an offer changes most (uplift)

    def check(self) -> None:
        if not self.name.strip():
            raise LoyalError("--name is empty")
        if not np.isfinite(self.budget) or self.budget <= 0:
            raise LoyalError(f"--budget must be a positive amount, not {self.budget}")
        if self.max_contacts is not None and self.max_contacts < 1:
            raise LoyalError(f"--max-contacts must be at least 1, not {self.max_contacts}")
        if not 0 <= self.control_fraction < 1:
            raise LoyalError(f"--control-fraction must be in [0, 1), not {self.control_fraction}")
        if self.min_days_since_contact < 0:
            raise LoyalError(f"--min-days-since-contact must be 0 or more, not {self.min_days_since_contact}")
        if self.engine not in ENGINES:
            raise LoyalError(f"unknown engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if self.target not in TARGETS:
            raise LoyalError(f"unknown target {self.target!r}: use one of {', '.join(TARGETS)}")


def build(home: Path, campaign: Campaign, policy_path: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """(the list, in LIST_COLUMNS, best first; the counts at each step)."""
    campaign.check()
    policy = load_policy(policy_path)
    history = contact_history(home)
    if campaign.name in set(history["campaign"]):
        raise LoyalError(f"a campaign named {campaign.name!r} was already recorded: choose another name")
    as_of = campaign.as_of or day_after_last_purchase(home)
    model = churn_scoring.load_model(home)
    customers = customer_features_at_last_snapshot(home, as_of)
    if customers is None:  # a date between snapshots: Feast's point-in-time join, an entity row per customer
        transactions, cutoff = read_table(home, "transactions"), midnight(as_of)
        bought = transactions.loc[(transactions[QUANTITY] > 0) & (transactions[TIMESTAMP] < cutoff), CUSTOMER_ID]
        rows = pd.DataFrame({CUSTOMER_ID: np.sort(bought.unique()), EVENT_TIMESTAMP: cutoff})
        customers = historical_features(home, rows)
    counts = {"customers": len(customers)}
    keep = customers[EMAIL_OPT_IN].astype("boolean").fillna(False).to_numpy(dtype=bool)  # unknown consent: no
    counts["opted_in"] = int(keep.sum())
    keep &= ~suppressed(home, customers[CUSTOMER_ID])
    counts["not_suppressed"] = int(keep.sum())
    if campaign.min_days_since_contact > 0 and len(history):
        since = pd.Timestamp(as_of) - pd.Timedelta(days=campaign.min_days_since_contact)
        recent = history.loc[(history["group"] == "treatment") & (history["contacted_on"] > since), CUSTOMER_ID]
        keep &= ~customers[CUSTOMER_ID].isin(set(recent)).to_numpy()
    counts["not_contacted_recently"] = int(keep.sum())
    eligible = customers[keep].reset_index(drop=True)

    predicted = churn_scoring.predict(home, model, eligible, engine=campaign.engine)
    offers, counts["target"], uplift_version = _offers(home, campaign.target, policy, eligible, predicted)
    if uplift_version is not None:
        counts["uplift_version"] = uplift_version
    if counts["target"] != campaign.target:
        counts["fallback"] = (f"no {uplift_scoring.MODEL_NAME} champion yet (`loyal train uplift` learns one from "
                              "measured campaigns): targeted by churn risk")
    ranked = pd.DataFrame({
        CUSTOMER_ID: eligible[CUSTOMER_ID].astype(str).to_numpy(),
        "churn_probability": predicted["churn_probability"].to_numpy(),
        "expected_value": predicted["expected_value"].to_numpy(),
    }).join(offers)
    ranked = ranked[ranked["priority"].notna()]  # nothing offered pays for itself
    counts["worth_an_incentive"] = len(ranked)
    ranked = ranked.sort_values(["priority", CUSTOMER_ID], ascending=[False, True], ignore_index=True)

    chosen = ranked.iloc[_fill(ranked["expected_cost"].to_numpy(), campaign)].reset_index(drop=True)
    size = len(chosen)
    control = np.zeros(size, dtype=bool)
    rng = np.random.default_rng(campaign.seed)
    control[rng.permutation(size)[: round(campaign.control_fraction * size)]] = True
    chosen["group"] = np.where(control, "control", "treatment")
    # Items only for those emailed: the control group is sent nothing, so its lists would never be read.
    chosen["items"] = ""
    chosen.loc[~control, "items"] = _items(home, chosen.loc[~control, CUSTOMER_ID], as_of)
    chosen["reason"] = chosen["reason_codes"].map(";".join)
    counts |= {"listed": size, "treatment": int((~control).sum()), "control": int(control.sum()),
               "budget": campaign.budget,
               "budget_spent": round(float(chosen.loc[~control, "expected_cost"].sum()), 2),
               "expected_gain": round(float(chosen.loc[~control, "expected_gain"].sum()), 2),
               "as_of": str(as_of)}
    chosen = chosen.round({"churn_probability": 4, "expected_value": 2, "expected_gain": 2, "expected_cost": 2})
    return chosen[LIST_COLUMNS].reset_index(drop=True), counts


def _offers(home: Path, target: str, policy, eligible: pd.DataFrame, predicted: pd.DataFrame
            ) -> tuple[pd.DataFrame, str, str | None]:
    """(each eligible customer's offer and priority, the target that chose them, the uplift version that did):
    by uplift where asked and an uplift champion exists, else by churn risk."""
    p, value = predicted["churn_probability"].to_numpy(), predicted["expected_value"].to_numpy()
    tier = (eligible[LOYALTY_TIER] if LOYALTY_TIER in eligible else pd.Series([None] * len(eligible))).to_numpy(
        dtype=object)
    found = uplift_scoring.champion(home) if target == "uplift" else None
    if found is not None:
        model, version = found
        return by_uplift(policy, model.predict(eligible), p, value, tier), "uplift", version
    return by_risk(policy, p, value, tier), "risk", None


def value_by_budget(home: Path, budgets: list[float], control_fraction: float = 0.1) -> pd.DataFrame:
    """What a campaign would list, spend and expect to gain at each budget (nothing recorded): how its expected
    retained value grows with the budget, and where extra money stops buying much."""
    rows = []
    for budget in budgets:
        plan = Campaign(name=f"what-if-{budget}", budget=float(budget), control_fraction=control_fraction)
        _, counts = build(home, plan)
        rows.append({"budget": float(budget)} | {key: counts[key] for key in
                                                  ("listed", "treatment", "budget_spent", "expected_gain")})
    return pd.DataFrame(rows)


def _fill(costs: np.ndarray, campaign: Campaign) -> np.ndarray:
    """Positions taken, down the ranking: each customer whose cost still fits the budget (one too dear is passed
    over for cheaper ones below), until the emailed part would pass --max-contacts. The whole list's cost fits the
    budget, so its treated part always does, whoever the control draw holds out."""
    limit = None
    if campaign.max_contacts is not None:
        limit = min(len(costs), int(campaign.max_contacts / (1 - campaign.control_fraction)) + 1)
        while limit - round(campaign.control_fraction * limit) > campaign.max_contacts:
            limit -= 1
    return spend_down(costs, campaign.budget, limit)


def _items(home: Path, customer_ids: pd.Series, as_of) -> list[str]:
    """Each customer's `for_you` items from the champion recommender, from their state as of the campaign's date,
    ";"-joined."""
    if customer_ids.empty:
        return []
    answering = rails.Rails(rails.load_model(home), Suppression(home), rails.BatchState(home, midnight(as_of)))
    rows = answering.table(customer_ids.tolist(), "for_you", ITEMS_PER_CONTACT)
    joined = rows.groupby(CUSTOMER_ID, sort=False)[ITEM_ID].agg(";".join)
    return joined.reindex(customer_ids.to_numpy()).fillna("").tolist()


@writes_home("campaign")
def record(home: Path, campaign: Campaign, chosen: pd.DataFrame, counts: dict, output: Path) -> str:
    """Write the list (atomically), append it to the contact history and log the campaign to MLflow; returns the
    list's SHA-256."""
    write_atomically(chosen, output)
    digest = hashlib.sha256(chosen.to_csv(index=False).encode()).hexdigest()
    append_contacts(home, pd.DataFrame({"campaign": campaign.name, CUSTOMER_ID: chosen[CUSTOMER_ID].astype(str),
                                        "group": chosen["group"], "contacted_on": pd.Timestamp(counts["as_of"]),
                                        "incentive": chosen["incentive"]}))

    use_home(home)
    with mlflow.start_run(run_name=f"campaign {campaign.name}"):
        mlflow.set_tags({"loyal.kind": "campaign", "campaign": campaign.name, "list_sha256": digest})
        mlflow.log_params({k: v for k, v in asdict(campaign).items() if v is not None} | {"as_of": counts["as_of"]})
        mlflow.log_metrics({k: float(v) for k, v in counts.items() if isinstance(v, (int, float))})
    return digest


@writes_home("campaign measure")
def measure(home: Path, name: str, days: int = 30) -> dict:
    """A recorded campaign's effect once its outcomes exist: the purchase rate and revenue per customer of treatment
    and control over the `days` from the campaign's date, and treatment's increments over control with 95%
    intervals (difference of means, Welch's normal approximation: the groups are large and independent)."""
    if days < 1:
        raise LoyalError(f"--days must be at least 1, not {days}")
    history = contact_history(home)
    contacts = history[history["campaign"] == name]
    if contacts.empty:
        raise LoyalError(f"no campaign named {name!r} in the contact history")
    start, end = window(contacts, days)
    transactions = read_table(home, "transactions")
    latest = transactions[TIMESTAMP].max() if transactions is not None and len(transactions) else None
    if latest is None or latest < end - pd.Timedelta(days=1):
        raise LoyalError(f"the outcomes of {name!r} are not all in: its window runs to {end.date()}, the purchases "
                         f"ingested end {latest.date() if latest is not None else 'nowhere'}")
    outcome = outcomes(contacts, transactions, days).astype({"bought": float})
    groups = {g: outcome[outcome["group"] == g] for g in ("treatment", "control")}
    if min(len(g) for g in groups.values()) < 2:
        raise LoyalError(f"{name!r} needs at least two customers in each group to measure anything")
    result = {"campaign": name, "window": f"{start.date()} to {end.date()}",
              "treatment": len(groups["treatment"]), "control": len(groups["control"])}
    for column, label in (("bought", "purchase_rate"), ("revenue", "revenue_per_customer")):
        treated, held = groups["treatment"][column].to_numpy(), groups["control"][column].to_numpy()
        difference = treated.mean() - held.mean()
        half = 1.96 * np.sqrt(treated.var(ddof=1) / len(treated) + held.var(ddof=1) / len(held))
        result |= {f"{label}_treatment": round(float(treated.mean()), 4),
                   f"{label}_control": round(float(held.mean()), 4),
                   f"incremental_{label}": round(float(difference), 4),
                   f"incremental_{label}_low": round(float(difference - half), 4),
                   f"incremental_{label}_high": round(float(difference + half), 4)}
    result["incremental_revenue"] = round(result["incremental_revenue_per_customer"] * result["treatment"], 2)

    use_home(home)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`loyal.kind` = 'campaign'",
                              output_format="list")
    recorded = [run for run in runs if run.data.tags.get("campaign") == name]  # any name, quotes included
    if recorded:
        with mlflow.start_run(run_id=recorded[0].info.run_id):
            mlflow.log_metrics({f"measured_{k}": float(v) for k, v in result.items()
                                if isinstance(v, (int, float)) and k not in ("treatment", "control")})
    return result
