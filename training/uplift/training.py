"""Train the uplift model on the campaigns Loyal already ran, measure it beside its baselines, and register it in
MLflow as `loyal-uplift`.

The measured campaigns, in time order, split as the other families' windows do: the latest (or `--hold-out NAME`) is
held out, nothing learns from it, and `loyal evaluate uplift` judges targeting on it; the one before it is the
validation campaign, where the registered network's epochs stop; the earlier ones are trained on. The champion
decision pools rolling-origin folds: each of the last VALIDATION_FOLDS campaigns before the held-out one is judged
with everything fitted on the campaigns before it. Each ranking (the network, causalml's T- and X-learners, and "no
model": churn risk x value from the churn champion, which is how campaigns target today) is measured by its Qini and
AUUC with bootstrap intervals, and against the truth where the synthetic shop saved it.
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
from loyal.training.uplift.evaluate import ExpectedRevenue, ranking_quality
from loyal.training.uplift.model import UpliftConfig, UpliftModel
from loyal.training.uplift.scoring import ARTIFACT, MODEL_NAME

OUTCOMES = ("campaign", "group", "treated", "incentive", "contacted_on", "orders", "revenue", "bought")
VALIDATION_FOLDS = 3  # campaigns the decision pools, each validated on by what was fitted on those before it
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


def _measure(rows: pd.DataFrame, rankings: dict[str, np.ndarray], truth: pd.DataFrame | None, draws: int,
             expected: np.ndarray) -> dict:
    """Each ranking's Qini and AUUC on one campaign's rows (revenue less `expected`), with the truth's where known."""
    scores = {name: np.nan_to_num(score, nan=-np.inf) for name, score in rankings.items()}
    models = ranking_quality(rows["revenue"].to_numpy(), rows["treated"].to_numpy(), scores, draws,
                             true_effect=true_own_arm(truth, rows["incentive"]), expected=expected)
    return {"campaign": str(rows["campaign"].iloc[0]), "rows": len(rows), "treated": int(rows["treated"].sum()),
            "models": models}


def _pooled(folds: list[dict]) -> dict:
    """The folds' campaigns as one piece of evidence: each figure summed over them (a Qini is a sum over the
    customers ranked), its interval from the summed variances (the campaigns' customers and draws are apart)."""
    models = {}
    for name in folds[-1]["models"]:
        figures = [fold["models"][name] for fold in folds if name in fold["models"]]
        models[name] = {}
        for metric in ("qini", "auuc"):
            value = sum(f[metric]["value"] for f in figures)
            half = float(np.sqrt(sum(((f[metric]["high"] - f[metric]["low"]) / 2) ** 2 for f in figures)))
            models[name][metric] = {"value": value, "low": value - half, "high": value + half}
        if all("true_qini" in f for f in figures):
            models[name]["true_qini"] = sum(f["true_qini"] for f in figures)
    return {"campaigns": [fold["campaign"] for fold in folds], "rows": sum(fold["rows"] for fold in folds),
            "treated": sum(fold["treated"] for fold in folds), "models": models}


def _compared(part: dict) -> dict:
    """`part` with the network compared with its best baseline, by Qini (and by the truth's where known)."""
    models = part["models"]
    baselines = {name: figures for name, figures in models.items() if name != UpliftModel.name}
    best = max(baselines, key=lambda name: baselines[name]["qini"]["value"])
    ours = models[UpliftModel.name]["qini"]
    comparison = {"qini": {"model": ours["value"], "model_low": ours["low"], "best_baseline": best,
                           "baseline": baselines[best]["qini"]["value"],
                           "beats_best_baseline": ours["value"] > baselines[best]["qini"]["value"]}}
    if "true_qini" in models[UpliftModel.name]:
        comparison["true_qini"] = {"model": models[UpliftModel.name]["true_qini"],
                                   "baselines": {name: f.get("true_qini") for name, f in baselines.items()}}
    return part | {"comparison": comparison}


@dataclass
class _Fitted:
    """The network and everything measured beside it, fitted on the campaigns before one validation campaign."""
    model: UpliftModel
    baselines: dict[str, MetaLearner]
    expected: ExpectedRevenue

    @classmethod
    def fit(cls, train: pd.DataFrame, validation: pd.DataFrame, config: UpliftConfig) -> _Fitted:
        return cls(UpliftModel(config).fit(train, validation),
                   {name: MetaLearner(name, config.seed).fit(train) for name in LEARNERS},
                   ExpectedRevenue(config.seed).fit(train))

    def rankings(self, frame: pd.DataFrame, risk_model) -> dict[str, np.ndarray]:
        ranked = {UpliftModel.name: own_arm(self.model.predict(frame), frame["incentive"])}
        ranked |= {name: own_arm(learner.predict(frame), frame["incentive"])
                   for name, learner in self.baselines.items()}
        if risk_model is not None:
            predicted = risk_model.predict(frame)
            ranked[RISK] = (predicted["churn_probability"] * predicted["expected_value"]).to_numpy()
        return ranked

    def measure(self, home: Path, frame: pd.DataFrame, risk_model, draws: int) -> dict:
        return _measure(frame, self.rankings(frame, risk_model), true_effects(home, frame), draws,
                        self.expected.predict(frame))


def fit_and_evaluate(home: Path, champion: Champion | None = None, hold_out: str | None = None,
                     config: UpliftConfig | None = None, draws: int = 200,
                     window_days: int = WINDOW_DAYS, folds: int = VALIDATION_FOLDS) -> Trained:
    """Rolling-origin validation: for each of the last `folds` campaigns before the held-out one, everything is
    fitted on the campaigns before it and measured on it; the decision reads the folds pooled, because one
    campaign's control group rarely tells two rankings apart (an incentive's effect is a few percent of what its
    customers spend anyway). The model registered is the last fold's (trained on every campaign but the validation
    and held-out ones), which is also measured on the held-out campaign."""
    began = time.perf_counter()
    rows = training_set(home, window_days=window_days)
    trained_on, validation_name, held_name = split(rows, hold_out)
    before = [*trained_on, validation_name]
    config = config or UpliftConfig()
    risk_model = churn_scoring.load_model(home) if champion_version(churn_scoring.MODEL_NAME, client(home)) else None
    measured = []
    for k in range(max(1, len(before) - folds), len(before)):
        train = rows[rows["campaign"].isin(before[:k])].reset_index(drop=True)
        validation = rows[rows["campaign"] == before[k]].reset_index(drop=True)
        fitted = _Fitted.fit(train, validation, config)
        measured.append(fitted.measure(home, validation, risk_model, draws))
    test = rows[rows["campaign"] == held_name].reset_index(drop=True)
    model = fitted.model
    report = {"campaigns": {"train": trained_on, "validation": validation_name, "test": held_name,
                            "validation_folds": [fold["campaign"] for fold in measured]},
              "window_days": window_days, "feature_service": FEATURE_SERVICE, "config": asdict(config),
              "epochs_kept": model.epochs_kept, "incentives": model.incentives,
              "rows": {"train": len(train), "validation": len(validation), "test": len(test)},
              "train_window_end": str((validation["contacted_on"].max() + pd.Timedelta(days=window_days)).date()),
              "validation": _compared(_pooled(measured)) | {"folds": measured},
              "test": _compared(fitted.measure(home, test, risk_model, draws))}
    if champion is not None:  # on the last fold's campaign: an earlier one the champion may have learnt from
        theirs = own_arm(champion.model.predict(validation), validation["incentive"])
        figures = ranking_quality(validation["revenue"].to_numpy(), validation["treated"].to_numpy(),
                                  {"champion": np.nan_to_num(theirs, nan=-np.inf)}, draws,
                                  expected=fitted.expected.predict(validation))["champion"]
        ours = measured[-1]["models"][UpliftModel.name]["qini"]
        report["validation"]["champion"] = {"version": champion.version, "campaign": validation_name,
                                            "qini": figures["qini"], "challenger_qini": ours}
    report["seconds"] = round(time.perf_counter() - began, 1)
    inputs = [c for c in validation.columns if c not in OUTCOMES and c != "event_timestamp"]
    example = validation[inputs].head(3).astype(
        {c: "float64" for c in inputs if c not in CATEGORICAL_FEATURES and c != "customer_id"})
    return Trained(model, report, example)


def _decide(report: dict, gate: dict | None = None) -> Decision:
    """Promote when, on the validation campaigns pooled, the network's Qini beats every baseline's and its interval
    lies above zero (better than random), and, where there is a champion, it beats the champion's on the latest of
    them by the margin (a share of the champion's Qini). Otherwise keep the champion, giving every reason."""
    gate = (gate or load_gate())["uplift"]
    c = report["validation"]["comparison"]["qini"]
    summary = f"Qini {c['model']:.1f} vs best baseline {c['best_baseline']} {c['baseline']:.1f}"
    failures = []
    if not c["beats_best_baseline"]:
        failures.append(f"does not beat its baselines on the validation campaigns: {summary}")
    if c["model_low"] <= 0:
        failures.append(f"not better than random targeting: the Qini's interval reaches {c['model_low']:.1f}")
    current = champion_version(MODEL_NAME)
    rival = report["validation"].get("champion")
    against = ""
    if rival is not None:
        theirs, ours = rival["qini"]["value"], rival["challenger_qini"]["value"]
        against = (f"Qini {ours:.1f} vs the champion's {theirs:.1f} (version {rival['version']}) on "
                   f"{rival['campaign']}")
        if ours < theirs + gate["margin"] * abs(theirs):
            failures.append(f"not better than the champion by the margin ({gate['margin']:.0%} of its Qini)")
    return decided(failures, against, current, f"beats its baselines on the validation campaigns ({summary})",
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
