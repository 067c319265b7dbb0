"""Train the uplift model on the campaigns Loyal already ran, measure it beside its baselines, and register it in
MLflow as `loyal-uplift`.

The measured campaigns, in time order, split as the other families' windows do: the latest (or `--hold-out NAME`)
is held out, nothing learns from it, and `loyal evaluate uplift` judges targeting on it; the one before it is the
validation campaign, where the network's epochs stop and the champion decision is taken; the earlier ones are
trained on. Each ranking (the network, causalml's T- and X-learners, and "no model": churn risk x value from the
churn champion, which is how campaigns target today) is measured by its Qini and AUUC with bootstrap intervals, and
against the truth where the synthetic shop saved it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from loyal.errors import LoyalError
from loyal.home import Home
from loyal.locking import writes_home
from loyal.tracking import client
from loyal.training.churn import scoring as churn_scoring
from loyal.training.churn.model import CATEGORICAL_FEATURES
from loyal.training.family import Trained, train
from loyal.training.registry import (
    Champion,
    Decision,
    champion_version,
    decided,
    load_gate,
)
from loyal.training.uplift.baselines import LEARNERS, MetaLearner
from loyal.training.uplift.data import FEATURE_SERVICE, WINDOW_DAYS, training_set
from loyal.training.uplift.evaluate import ranking_quality
from loyal.training.uplift.model import UpliftConfig, UpliftModel
from loyal.training.uplift.scoring import ARTIFACT, MODEL_NAME

OUTCOMES = ("campaign", "group", "treated", "incentive", "contacted_on", "orders", "revenue", "bought")
RISK = "churn_risk"  # the "no model" ranking: expected retained value, churn probability x expected value


def own_arm(predicted: pd.DataFrame, incentive: pd.Series) -> np.ndarray:
    """Each row's predicted incremental revenue for the incentive it was given (or drawn, in control); NaN for an
    incentive the model never learnt."""
    score = np.full(len(predicted), np.nan)
    for name in incentive.unique():
        column = f"incremental_revenue_{name}"
        if column in predicted:
            rows = (incentive == name).to_numpy()
            score[rows] = predicted.loc[rows, column].to_numpy()
    return score


def true_effects(home: Path, rows: pd.DataFrame) -> pd.DataFrame | None:
    """Each row's true incremental revenue of every incentive, where the synthetic shop saved it (else None)."""
    path = Home(home).ground_truth / "campaign_effects.parquet"
    if not path.exists():
        return None
    truth = pd.read_parquet(path).drop(columns=["group", "incentive"])
    keys = rows[["campaign", "customer_id"]].astype(str)
    return keys.merge(truth.astype({"campaign": str, "customer_id": str}), how="left",
                      on=["campaign", "customer_id"]).drop(columns=["campaign", "customer_id"])


def true_own_arm(truth: pd.DataFrame | None, incentive: pd.Series) -> np.ndarray | None:
    """Each row's true incremental revenue for the incentive it was given (or drawn), where the truth is known."""
    if truth is None:
        return None
    return own_arm(truth.rename(columns=lambda c: c.replace("true_", "", 1)), incentive)


def split(rows: pd.DataFrame, hold_out: str | None) -> tuple[list[str], str, str]:
    """(training campaigns, the validation campaign, the held-out campaign), by the campaigns' days."""
    order = rows.groupby("campaign")["contacted_on"].min().sort_values().index.tolist()
    if hold_out is not None and hold_out not in order:
        raise LoyalError(f"--hold-out {hold_out!r} is not a measured campaign: the measured ones are "
                         f"{', '.join(order)}")
    held = hold_out or order[-1]
    rest = [name for name in order if name != held]
    if len(rest) < 2:
        raise LoyalError(f"uplift training needs three measured campaigns (to train on, to validate on, to hold "
                         f"out), and there are {len(order)}: {', '.join(order) or 'none'}")
    return rest[:-1], rest[-1], held


def _measure(rows: pd.DataFrame, rankings: dict[str, np.ndarray], truth: pd.DataFrame | None, draws: int) -> dict:
    """Each ranking's Qini and AUUC on a campaign's rows, and the comparison of the network with the best
    baseline (by Qini)."""
    true = true_own_arm(truth, rows["incentive"])
    scores = {name: np.nan_to_num(score, nan=-np.inf) for name, score in rankings.items()}
    models = ranking_quality(rows["revenue"].to_numpy(), rows["treated"].to_numpy(), scores, draws,
                             true_effect=true)
    baselines = {name: figures for name, figures in models.items() if name != UpliftModel.name}
    best = max(baselines, key=lambda name: baselines[name]["qini"]["value"])
    ours = models[UpliftModel.name]["qini"]
    comparison = {"qini": {"model": ours["value"], "model_low": ours["low"], "best_baseline": best,
                           "baseline": baselines[best]["qini"]["value"],
                           "beats_best_baseline": ours["value"] > baselines[best]["qini"]["value"]}}
    if true is not None:
        comparison["true_qini"] = {"model": models[UpliftModel.name]["true_qini"],
                                   "baselines": {name: f.get("true_qini") for name, f in baselines.items()}}
    return {"campaign": str(rows["campaign"].iloc[0]), "rows": len(rows), "treated": int(rows["treated"].sum()),
            "models": models, "comparison": comparison}


def fit_and_evaluate(home: Path, champion: Champion | None = None, hold_out: str | None = None,
                     config: UpliftConfig | None = None, draws: int = 200,
                     window_days: int = WINDOW_DAYS) -> Trained:
    began = time.perf_counter()
    rows = training_set(home, window_days=window_days)
    trained_on, validation_name, held_name = split(rows, hold_out)
    part = {name: rows[rows["campaign"].isin(names)].reset_index(drop=True)
            for name, names in (("train", trained_on), ("validation", [validation_name]), ("test", [held_name]))}
    config = config or UpliftConfig()
    model = UpliftModel(config).fit(part["train"], part["validation"])
    baselines = {name: MetaLearner(name, config.seed).fit(part["train"]) for name in LEARNERS}
    risk_model = churn_scoring.load_model(home) if champion_version(churn_scoring.MODEL_NAME, client(home)) else None

    def rankings(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        ranked = {UpliftModel.name: own_arm(model.predict(frame), frame["incentive"])}
        ranked |= {name: own_arm(learner.predict(frame), frame["incentive"]) for name, learner in baselines.items()}
        if risk_model is not None:
            predicted = risk_model.predict(frame)
            ranked[RISK] = (predicted["churn_probability"] * predicted["expected_value"]).to_numpy()
        return ranked

    report = {"campaigns": {"train": trained_on, "validation": validation_name, "test": held_name},
              "window_days": window_days, "feature_service": FEATURE_SERVICE, "config": asdict(config),
              "epochs_kept": model.epochs_kept, "incentives": model.incentives,
              "rows": {name: len(frame) for name, frame in part.items()},
              "train_window_end": str((part["validation"]["contacted_on"].max()
                                       + pd.Timedelta(days=window_days)).date())}
    for window in ("validation", "test"):
        frame = part[window]
        report[window] = _measure(frame, rankings(frame), true_effects(home, frame), draws)
    if champion is not None:
        frame = part["validation"]
        theirs = own_arm(champion.model.predict(frame), frame["incentive"])
        figures = ranking_quality(frame["revenue"].to_numpy(), frame["treated"].to_numpy(),
                                  {"champion": np.nan_to_num(theirs, nan=-np.inf)}, draws)["champion"]
        report["validation"]["champion"] = {"version": champion.version, "qini": figures["qini"]}
    report["seconds"] = round(time.perf_counter() - began, 1)
    inputs = [c for c in part["validation"].columns if c not in OUTCOMES and c != "event_timestamp"]
    example = part["validation"][inputs].head(3).astype(
        {c: "float64" for c in inputs if c not in CATEGORICAL_FEATURES and c != "customer_id"})
    return Trained(model, report, example)


def _decide(report: dict, gate: dict | None = None) -> Decision:
    """Promote when, on the validation campaign, the network's Qini beats every baseline's and its interval lies
    above zero (better than random), and, where there is a champion, it beats the champion's by the margin (a share
    of the champion's Qini). Otherwise keep the champion, giving every reason."""
    gate = (gate or load_gate())["uplift"]
    c = report["validation"]["comparison"]["qini"]
    summary = f"Qini {c['model']:.1f} vs best baseline {c['best_baseline']} {c['baseline']:.1f}"
    failures = []
    if not c["beats_best_baseline"]:
        failures.append(f"does not beat its baselines on the validation campaign: {summary}")
    if c["model_low"] <= 0:
        failures.append(f"not better than random targeting: the Qini's interval reaches {c['model_low']:.1f}")
    current = champion_version(MODEL_NAME)
    rival = report["validation"].get("champion")
    against = ""
    if rival is not None:
        theirs = rival["qini"]["value"]
        against = f"Qini {c['model']:.1f} vs the champion's {theirs:.1f} (version {rival['version']})"
        if c["model"] < theirs + gate["margin"] * abs(theirs):
            failures.append(f"not better than the champion by the margin ({gate['margin']:.0%} of its Qini)")
    return decided(failures, against, current, f"beats its baselines on the validation campaign ({summary})",
                   f"beats its baselines ({summary}) and the champion by the margin")


@dataclass
class UpliftFamily:
    """`loyal-uplift` on the model-family contract (training/family.py)."""
    hold_out: str | None = None
    config: UpliftConfig | None = None
    draws: int = 200
    name: str = MODEL_NAME
    family: str = "uplift"
    artifact: str = ARTIFACT

    def fit_and_evaluate(self, home: Path, champion: Champion | None) -> Trained:
        return fit_and_evaluate(home, champion, self.hold_out, self.config, self.draws)

    def run_name(self, report: dict) -> str:
        return f"uplift-{report['campaigns']['test']}"

    def tags(self, report: dict) -> dict[str, str]:
        campaigns = report["campaigns"]
        return {"model_family": self.family, "feature_service": FEATURE_SERVICE,
                "trained_on_campaigns": ",".join(campaigns["train"]), "validation_campaign": campaigns["validation"],
                "held_out_campaign": campaigns["test"], "train_window_end": report["train_window_end"]}

    def params(self, report: dict) -> dict:
        return {"window_days": report["window_days"], "epochs_kept": report["epochs_kept"]} | report["config"]

    def log(self, report: dict) -> None:
        metrics = {}
        for window in ("validation", "test"):
            for name, figures in report[window]["models"].items():
                for metric in ("qini", "auuc"):
                    metrics |= {f"{window}.{name}.{metric}.{part}": figures[metric][part]
                                for part in ("value", "low", "high")}
                if "true_qini" in figures:
                    metrics[f"{window}.{name}.true_qini"] = figures["true_qini"]
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_dict(report, "evaluation.json")

    def signature(self, trained: Trained):
        return infer_signature(trained.example, trained.model.predict(trained.example))

    def decide(self, report: dict, gate: dict) -> Decision:
        return _decide(report, gate)

    def summary(self, report: dict) -> dict:
        return {"campaigns": report["campaigns"]}


@writes_home("train uplift")
def train_uplift(home: Path, hold_out: str | None = None, config: UpliftConfig | None = None, draws: int = 200,
                 gate: dict | None = None) -> dict:
    """Train, log, register `loyal-uplift` and decide on `champion`. Returns a summary for the command line."""
    return train(UpliftFamily(hold_out, config, draws), home, gate)
