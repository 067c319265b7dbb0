"""`loyal evaluate uplift`: how much each way of targeting would have earned on a campaign nobody learnt from.

The campaign's list was a randomised experiment, so it can judge any targeting of its customers after the fact
(training/uplift/evaluate.py says how). Three targetings, each spending the same budget in the policy's expected
costs (serving/targeting.py):
- uplift: the loyal-uplift champion (or, where none was promoted, its latest version, and the report says so);
- risk: today's offer policy, churn probability x expected value from the churn champion;
- random: the list in random order, each customer with the incentive the campaign drew for them.
For each: the Qini and AUUC of its ranking (bootstrap intervals), the estimated incremental revenue at the budget
(95% interval) and, where the synthetic shop saved it, the true one; and the budget curve around the budget.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from loyal.errors import LoyalError
from loyal.home import Home
from loyal.serving.policy import INCENTIVES, load_policy
from loyal.serving.targeting import by_risk, by_uplift, offer_costs
from loyal.tracking import client, use_home
from loyal.training import plots
from loyal.training.churn import scoring as churn_scoring
from loyal.training.registry import champion_version
from loyal.training.uplift import scoring as uplift_scoring
from loyal.training.uplift.data import training_set
from loyal.training.uplift.evaluate import (
    ExpectedRevenue,
    ranking_quality,
    value_at_budget,
)
from loyal.training.uplift.training import own_arm, true_effects, true_own_arm

STRATEGIES = ("uplift", "risk", "random")
CURVE = (0.25, 0.5, 1.0, 2.0, 4.0)  # the budget curve's budgets, as multiples of the one asked for


def _uplift_model(home: Path):
    """(the champion, or the latest version where none was promoted; what the report says of it)."""
    registry = client(home)
    current = champion_version(uplift_scoring.MODEL_NAME, registry)
    if current is None:
        versions = registry.search_model_versions(f"name = '{uplift_scoring.MODEL_NAME}'")
        if not versions:
            raise LoyalError(f"no {uplift_scoring.MODEL_NAME} is registered: run `loyal train uplift` first")
        current = max(versions, key=lambda v: int(v.version))
    model = uplift_scoring.load(home, str(current.version))
    about = {"version": str(current.version), "champion": "champion" in current.aliases,
             "trained_on_campaigns": current.tags.get("trained_on_campaigns", ""),
             "validation_campaign": current.tags.get("validation_campaign", "")}
    return model, about


def evaluate_uplift(home: Path, budget: float, campaign: str | None = None, draws: int = 200, seed: int = 0) -> dict:
    """The report: per strategy `qini`, `auuc`, `incremental_revenue` (estimated), `true_incremental_revenue`
    (where known) at `budget`, and the budget curve; `campaign` defaults to the latest measured one."""
    if not np.isfinite(budget) or budget <= 0:
        raise LoyalError(f"--budget must be a positive amount, not {budget}")
    model, about = _uplift_model(home)
    learnt_from = set(filter(None, about["trained_on_campaigns"].split(","))) | {about["validation_campaign"]}
    every = training_set(home)
    if campaign is None:  # the latest measured, which `loyal train uplift` holds out by default
        campaign = every.groupby("campaign")["contacted_on"].min().idxmax()
    if campaign in learnt_from:
        raise LoyalError(f"{uplift_scoring.MODEL_NAME} version {about['version']} learnt from {campaign!r}: judge it "
                         f"on a campaign it never saw (`loyal train uplift --hold-out {campaign}` holds one out)")
    rows = every[every["campaign"] == campaign].reset_index(drop=True)
    if rows.empty:
        raise LoyalError(f"no measured campaign named {campaign!r}: the measured ones are "
                         f"{', '.join(every['campaign'].unique())}")
    # Every estimate is taken on revenue less what the features alone predict, learnt on the other campaigns.
    others = every[every["campaign"] != campaign]
    expected = ExpectedRevenue(seed).fit(others).predict(rows) if len(others) else None
    policy = load_policy()
    churn = churn_scoring.load_model(home).predict(rows)
    p, value = churn["churn_probability"].to_numpy(), churn["expected_value"].to_numpy()
    tier = rows["loyalty_tier"].to_numpy(dtype=object) if "loyalty_tier" in rows else np.full(len(rows), None)
    predicted = model.predict(rows)
    truth = true_effects(home, rows)

    uplift = by_uplift(policy, predicted, p, value, tier)
    risk = by_risk(policy, p, value, tier)
    drawn = rows["incentive"].astype(str).to_numpy()
    random_costs = offer_costs(policy, p, value)
    random = pd.DataFrame({"incentive": drawn, "priority": np.random.default_rng(seed).random(len(rows)),
                           "expected_cost": random_costs[np.arange(len(rows)), [INCENTIVES.index(i) for i in drawn]]})
    strategies = {"uplift": uplift, "risk": risk, "random": random}
    rankings = {"uplift": own_arm(predicted, rows["incentive"]), "risk": p * value,
                "random": random["priority"].to_numpy()}
    true = true_own_arm(truth, rows["incentive"])
    quality = ranking_quality(rows["revenue"].to_numpy(), rows["treated"].to_numpy(),
                              {k: np.nan_to_num(v, nan=-np.inf) for k, v in rankings.items()}, draws, seed, true,
                              expected)

    def worth(name: str, at: float) -> dict:
        offers = strategies[name]
        return value_at_budget(rows, offers["incentive"].to_numpy(), offers["priority"].to_numpy(dtype=np.float64),
                               offers["expected_cost"].to_numpy(dtype=np.float64), at, truth, expected)

    report = {"campaign": campaign, "budget": budget, "rows": len(rows), "treated": int(rows["treated"].sum()),
              "uplift_model": about, "churn_model": str(champion_version(churn_scoring.MODEL_NAME, client(home)).version),
              "truth_known": truth is not None}
    for name in STRATEGIES:
        at_budget = worth(name, budget)
        report[name] = quality[name] | at_budget
    report["budget_curve"] = [{"budget": budget * m} | {name: worth(name, budget * m) for name in STRATEGIES}
                              for m in CURVE]
    return report


def markdown(report: dict) -> str:
    """The report as a page: the three targetings at the budget, then the budget curve."""
    def money(figure) -> str:
        return "n/a" if figure is None else (f"{figure['value']:,.0f} [{figure['low']:,.0f}, {figure['high']:,.0f}]"
                                             if isinstance(figure, dict) else f"{figure:,.0f}")

    model = report["uplift_model"]
    about = (f"{report['rows']} listed customers ({report['treated']} treated); loyal-uplift version "
             f"{model['version']}{'' if model['champion'] else ' (not the champion: none was promoted)'}, trained on "
             f"{model['trained_on_campaigns']}; budget {report['budget']:,.0f} in the policy's expected costs.")
    lines = [f"# Uplift targeting on campaign {report['campaign']}", "", about, "",
             "| targeting | Qini | AUUC | picked | spent | incremental revenue (est.) | true incremental revenue |",
             "|---|---|---|---|---|---|---|"]
    for name in STRATEGIES:
        part = report[name]
        lines.append(f"| {name} | {money(part['qini'])} | {money(part['auuc'])} | {part['picked']} | "
                     f"{part['spent']:,.0f} | {money(part['incremental_revenue'])} | "
                     f"{money(part.get('true_incremental_revenue'))} |")
    lines += ["", "Budget curve (true incremental revenue where known, else estimated):", "",
              "| budget | " + " | ".join(STRATEGIES) + " |", "|---|" + "---|" * len(STRATEGIES)]
    for point in report["budget_curve"]:
        shown = [point[n].get("true_incremental_revenue", point[n]["incremental_revenue"]) for n in STRATEGIES]
        lines.append(f"| {point['budget']:,.0f} | " + " | ".join(money(v) for v in shown) + " |")
    return "\n".join(lines) + "\n"


def write_report(home: Path, report: dict) -> Path:
    """$LOYAL_HOME/reports/uplift-CAMPAIGN.json and .md, each written beside its place and renamed into it; the
    report's MLflow run beside them. Returns the JSON's path."""
    folder = Home(home).reports
    folder.mkdir(parents=True, exist_ok=True)
    stem = "uplift-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in report["campaign"])
    report["mlflow_run_id"] = log_report(home, report)
    for suffix, content in ((".json", json.dumps(report, indent=2) + "\n"), (".md", markdown(report))):
        tmp = folder / f".{stem}{suffix}.tmp"
        tmp.write_text(content)
        os.replace(tmp, folder / f"{stem}{suffix}")
    return folder / f"{stem}.json"


def log_report(home: Path, report: dict) -> str:
    """The report, its figures and the budget curve's plot, as an MLflow run of its own; returns its id."""
    use_home(home)
    with mlflow.start_run(run_name=f"evaluate uplift {report['campaign']}") as run:
        mlflow.set_tags({"loyal.kind": "uplift_evaluation", "campaign": report["campaign"]})
        mlflow.log_params({"budget": report["budget"], "uplift_version": report["uplift_model"]["version"]})
        metrics = {}
        for name in STRATEGIES:
            part = report[name]
            metrics |= {f"{name}.{m}": part[m]["value"] for m in ("qini", "auuc")}
            if part["incremental_revenue"] is not None:
                metrics[f"{name}.incremental_revenue"] = part["incremental_revenue"]["value"]
            if "true_incremental_revenue" in part:
                metrics[f"{name}.true_incremental_revenue"] = part["true_incremental_revenue"]
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_dict(report, "uplift_evaluation.json")
        plots.log(plots.budget_curve(report["budget_curve"], STRATEGIES), "plots/budget_curve.png")
    return run.info.run_id
