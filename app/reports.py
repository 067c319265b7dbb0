"""What training measured and logged, read back from MLflow as tables, for the notebooks (02_recommenders,
03_churn_and_offers) and anyone who would rather not open the MLflow UI. Nothing here measures anything again: the
figures are the champion run's own `evaluation.json`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from loyal.errors import LoyalError
from loyal.home import Home
from loyal.schema import CUSTOMER_ID, DESCRIPTION, ITEM_ID, LOYALTY_TIER, QUANTITY, TIMESTAMP
from loyal.serving.policy import choose, load_policy
from loyal.store import day_after_last_purchase, read_table
from loyal.tracking import client
from loyal.training.churn.explain import PLAIN_NAMES, contributions
from loyal.training.churn.scoring import risk_segment, scored_snapshot
from loyal.training.recommender.evaluate import K
from loyal.training.recommender.rails import recommend
from loyal.training.registry import champion_version


def champion_evaluation(home: Path, model_name: str) -> tuple[str, dict]:
    """(version, evaluation report) of the version carrying `champion`."""
    registry = client(home)
    current = champion_version(model_name, registry)
    if current is None:
        raise LoyalError(f"no {model_name} carries the alias champion yet: run `loyal run` or `loyal train` first")
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=current.run_id, artifact_path="evaluation.json",
                                                   dst_path=tmp, tracking_uri=registry.tracking_uri)
        return str(current.version), json.loads(Path(path).read_text())


def window_of(report: dict) -> str:
    """The window a report is read on: the test window where the data reached it, else the validation window."""
    return "test" if "test" in report else "validation"


def recommender_table(part: dict, view: str) -> pd.DataFrame:
    """Every model of one window in one view: NDCG, recall and hit rate at 10 with their 95% intervals, coverage
    and popularity bias (mean distinct buyers of what it recommends), best NDCG first."""
    rows = []
    for model, figures in part["models"].items():
        row = {"model": model}
        for metric in (f"ndcg@{K}", f"recall@{K}", f"hitrate@{K}"):
            figure = figures[view][metric]
            row |= {metric: figure["value"], f"{metric} low": figure.get("low"), f"{metric} high": figure.get("high")}
        row |= {"coverage": figures[view]["coverage"]["value"],
                "mean_buyers_of_top_10": figures["mean_buyers_of_top_10"]}
        rows.append(row)
    return pd.DataFrame(rows).sort_values(f"ndcg@{K}", ascending=False, ignore_index=True)


def example_rails(home: Path, customer_ids: list[str], rails: tuple[str, ...] = ("for_you", "buy_again", "discover"),
                  k: int = 5) -> pd.DataFrame:
    """For each customer: a few things they bought, then each rail's items from the champion, with descriptions."""
    items = read_table(home, "items")
    names = dict(zip(items[ITEM_ID], items[DESCRIPTION])) if items is not None else {}
    transactions = read_table(home, "transactions")
    rows = []
    for customer in customer_ids:
        theirs = transactions[(transactions[CUSTOMER_ID] == customer) & (transactions[QUANTITY] > 0)]
        latest = theirs.sort_values(TIMESTAMP, ascending=False)[ITEM_ID].drop_duplicates().head(k)
        rows += [{CUSTOMER_ID: customer, "list": "bought lately", "rank": rank + 1, ITEM_ID: item,
                  DESCRIPTION: names.get(item)} for rank, item in enumerate(latest)]
    for rail in rails:
        answer = recommend(home, customer_ids, rail, k)
        rows += [{CUSTOMER_ID: r.customer_id, "list": rail, "rank": r.rank, ITEM_ID: r.item_id,
                  DESCRIPTION: names.get(r.item_id)} for r in answer.itertuples()]
    order = {name: i for i, name in enumerate(("bought lately", *rails))}
    frame = pd.DataFrame(rows)
    return frame.sort_values([CUSTOMER_ID, "list", "rank"], key=lambda c: c.map(order) if c.name == "list" else c,
                             ignore_index=True)


def churn_table(part: dict) -> pd.DataFrame:
    """Every churn and value model of one snapshot: each figure with its 95% interval, best ROC-AUC first."""
    rows = []
    for model, figures in part["models"].items():
        row = {"model": model}
        for metric, figure in figures.items():
            row |= {metric: figure["value"], f"{metric} low": figure.get("low"), f"{metric} high": figure.get("high")}
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values("roc_auc", ascending=False, na_position="last", ignore_index=True)


def _scored_snapshot(home: Path, as_of=None):
    """The churn champion, every customer's unlabelled snapshot at `as_of` (default: the day after the last
    purchase) and its predictions."""
    return scored_snapshot(home, as_of or day_after_last_purchase(home))


def drivers_of_risk(home: Path, as_of=None, segment: str = "high") -> pd.DataFrame:
    """What drives the risk of a risk segment's customers: per input, its mean contribution (points of churn
    probability against the reference customer, the same ablation as each score's `top_drivers`) and the share of
    the segment whose risk it raises; the largest first."""
    model, frame, predicted = _scored_snapshot(home, as_of)
    chosen = frame[risk_segment(predicted["churn_probability"].to_numpy()) == segment]
    if chosen.empty:
        raise LoyalError(f"no customer falls in the {segment!r} risk segment")
    parts = contributions(model, chosen)
    table = pd.DataFrame({"driver": [PLAIN_NAMES.get(c, c) for c in parts.columns],
                          "mean_points": (100 * parts.mean()).round(2).to_numpy(),
                          "share_raising": (parts > 0).mean().round(3).to_numpy()})
    return table.sort_values("mean_points", ascending=False, ignore_index=True).assign(customers=len(chosen))


def offers_for_everyone(home: Path, as_of=None) -> pd.DataFrame:
    """The offer policy's choice for every scored customer: churn_probability, expected_value and the policy's
    columns (incentive, expected_gain, expected_cost, ...), as the service and campaigns would make it."""
    _, frame, predicted = _scored_snapshot(home, as_of)
    tier = frame[LOYALTY_TIER] if LOYALTY_TIER in frame else pd.Series([None] * len(frame))
    offers = choose(load_policy(), predicted["churn_probability"].to_numpy(), predicted["expected_value"].to_numpy(),
                    tier.to_numpy(dtype=object))
    return pd.concat([frame[[CUSTOMER_ID]].reset_index(drop=True),
                      predicted[["churn_probability", "expected_value"]].reset_index(drop=True),
                      offers.reset_index(drop=True)], axis=1)


def latest_uplift_evaluation(home: Path) -> dict | None:
    """The newest `loyal evaluate uplift` report under $LOYAL_HOME/reports (None where none was made: a shop with no
    measured campaigns)."""
    found = sorted(Home(home).reports.glob("uplift-*.json"), key=lambda path: path.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else None


def uplift_table(report: dict) -> pd.DataFrame:
    """One row per targeting: its Qini and AUUC with intervals, and what it earned at the report's budget."""
    rows = []
    for name in ("uplift", "risk", "random"):
        part = report[name]
        estimate = part["incremental_revenue"] or {"value": None, "low": None, "high": None}
        rows.append({"targeting": name, "qini": part["qini"]["value"], "qini_low": part["qini"]["low"],
                     "qini_high": part["qini"]["high"], "picked": part["picked"], "spent": part["spent"],
                     "incremental_revenue": estimate["value"], "low": estimate["low"], "high": estimate["high"],
                     "true_incremental_revenue": part.get("true_incremental_revenue")})
    return pd.DataFrame(rows).set_index("targeting").round(1)
