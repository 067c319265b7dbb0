"""Train the churn and value model, measure it beside its baselines, and register it in MLflow as `loyal-churn`.

Snapshots (churn_data): monthly cutoffs whose whole label window ends by `train_end`. The latest of them is held
out: the network never trains on it; its temperature is fitted there, and the champion decision is taken there,
against baselines fitted on the same earlier snapshots, and against the current champion (the gate in
`champion.yaml`). When the data reach far enough, the snapshot at `train_end` itself is the test: labels from the H
days after it, which no training step has seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from loyal.errors import LoyalError
from loyal.dates import midnight
from loyal.features.compute import EVENT_TIMESTAMP
from loyal.locking import writes_home
from loyal.schema import CUSTOMER_ID, TIMESTAMP
from loyal.store import read_table
from loyal.training import plots
from loyal.training.churn.baselines import CHURN_BASELINES, VALUE_BASELINES
from loyal.training.churn.data import (
    FEATURE_SERVICE,
    HORIZON_DAYS,
    MIN_HISTORY_DAYS,
    snapshot,
    training_cutoffs,
)
from loyal.training.churn.evaluate import (
    LEAKAGE_AUC,
    calibration_curve,
    churn_metrics,
    difference,
    lift_curve,
    value_metrics,
    with_intervals,
)
from loyal.training.churn.model import CATEGORICAL_FEATURES, ChurnConfig, ChurnModel
from loyal.training.churn.scoring import ARTIFACT, MODEL_NAME
from loyal.training.family import Trained, train
from loyal.training.registry import (
    Champion,
    Decision,
    champion_version,
    decided,
    load_gate,
)
from loyal.training.tuning import check_workers, churn_from, tune_churn

log = logging.getLogger(__name__)


def _measure(frame: pd.DataFrame, predictions: dict[str, pd.DataFrame], draws: int) -> dict:
    """Every model's churn and value figures on one labelled snapshot, and the network against the best baseline."""
    churned = frame["churned"].to_numpy()
    spend = frame["future_spend"].to_numpy()
    models, curves = {}, {}
    for name, predicted in predictions.items():
        figures = {}
        if predicted["churn_probability"].notna().all():
            probability = predicted["churn_probability"].to_numpy()
            figures |= with_intervals(churn_metrics, churned, probability, draws=draws)
            curves[name] = {"calibration": calibration_curve(churned, probability),
                            "lift": lift_curve(churned, probability)}
        if predicted["expected_value"].notna().all():
            figures |= with_intervals(value_metrics, spend, predicted["expected_value"].to_numpy(), draws=draws)
        models[name] = figures
    network = predictions[ChurnModel.name]
    comparison = {}
    for metric, family, column, truth in (
        ("roc_auc", CHURN_BASELINES, "churn_probability", churned),
        ("pr_auc", CHURN_BASELINES, "churn_probability", churned),
        ("spearman", VALUE_BASELINES, "expected_value", spend),
    ):
        names = [b.name for b in family]
        best = max(names, key=lambda n: models[n][metric]["value"])
        comparison[metric] = {
            "model": models[ChurnModel.name][metric]["value"], "best_baseline": best,
            "baseline": models[best][metric]["value"],
            "difference": difference(metric, truth, network[column].to_numpy(),
                                     predictions[best][column].to_numpy(), draws=draws),
        }
    comparison["ece"] = models[ChurnModel.name]["ece"]["value"]
    report = {"customers": len(frame), "churn_rate": round(float(churned.mean()), 4), "models": models,
              "comparison": comparison, "curves": curves}
    if models[ChurnModel.name]["roc_auc"]["value"] > LEAKAGE_AUC:
        report["leakage_warning"] = (
            f"ROC-AUC {models[ChurnModel.name]['roc_auc']['value']:.3f} is above {LEAKAGE_AUC}: on transaction data "
            "that means something from after the cutoff reached the features; check before trusting it")
        log.warning(report["leakage_warning"])
    return report


def _predict_all(model: ChurnModel, baselines: dict, frame: pd.DataFrame, transactions: pd.DataFrame,
                 horizon_days: int) -> dict[str, pd.DataFrame]:
    out = {ChurnModel.name: model.predict(frame)}
    for name, baseline in baselines.items():
        out[name] = baseline.predict(frame, transactions, horizon_days)
    return out


def _against_champion(champion: Champion, model: ChurnModel, train: pd.DataFrame, calibration: pd.DataFrame,
                      cutoff: pd.Timestamp, draws: int) -> dict:
    """The challenger against the champion on the held-out snapshot. A champion trained before that snapshot's
    cutoff never saw its outcomes and is measured as registered; a later one has seen them, so its configuration is
    refitted on the challenger's snapshots instead, which leaves only the recipe to compare."""
    if champion.trained_to <= str(cutoff.date()):
        rival, compared = champion.model, "as registered"
    else:
        rival = ChurnModel(champion.model.config).fit(train, calibration)
        compared = "its configuration refitted on the same snapshots, whose outcomes it had learnt from"
    churned = calibration["churned"].to_numpy()
    ours = model.predict(calibration)["churn_probability"].to_numpy()
    theirs = rival.predict(calibration)["churn_probability"].to_numpy()
    mine, its = churn_metrics(churned, ours), churn_metrics(churned, theirs)
    return {"version": champion.version, "trained_to": champion.trained_to, "compared": compared,
            "roc_auc": {"challenger": round(mine["roc_auc"], 4), "champion": round(its["roc_auc"], 4),
                        "difference": difference("roc_auc", churned, ours, theirs, draws=draws)},
            "ece": {"challenger": round(mine["ece"], 4), "champion": round(its["ece"], 4)}}


def fit_and_evaluate(home: Path, train_end, horizon_days: int = HORIZON_DAYS, trials: int = 0,
                     draws: int = 1000, config: ChurnConfig | None = None,
                     champion: Champion | None = None, tuning_workers: int = 1,
                     min_history_days: int = MIN_HISTORY_DAYS) -> Trained:
    """Fit on the monthly snapshots before the last (tuned with `trials`, or with `config` as given), measure on
    the last beside the baselines and `champion`, and on the test snapshot when the data reach it."""
    began = time.perf_counter()
    transactions = read_table(home, "transactions")
    if transactions.empty:
        raise LoyalError("there are no transactions: run `loyal ingest` first")
    train_end = midnight(train_end)
    cutoffs = training_cutoffs(transactions, train_end, horizon_days, min_history_days=min_history_days)
    snapshots = [snapshot(home, transactions, c, horizon_days) for c in cutoffs]
    train, calibration = pd.concat(snapshots[:-1], ignore_index=True), snapshots[-1]
    tuning = {}
    if trials and config is None:
        if len(snapshots) < 3:
            raise LoyalError(f"tuning needs three monthly snapshots before --train-end, and there are "
                             f"{len(snapshots)}: choose a later date or leave --trials out")
        study = tune_churn(home, pd.concat(snapshots[:-2], ignore_index=True), snapshots[-2], trials,
                           f"{train_end.date()}-h{horizon_days}", tuning_workers)
        config = churn_from(study.best_params)
        tuning = {"study": study.study_name, "trials": len(study.trials), "best_validation_auc":
                  round(study.best_value, 4), "validation_cutoff": str(cutoffs[-2].date()),
                  "pruned": sum(t.state.name == "PRUNED" for t in study.trials), "workers": tuning_workers}
    config = config or ChurnConfig()
    model = ChurnModel(config).fit(train, calibration)
    baselines = {b.name: b().fit(train) for b in dict.fromkeys((*CHURN_BASELINES, *VALUE_BASELINES))}
    report = {
        "train_end": str(train_end.date()), "horizon_days": horizon_days, "feature_service": FEATURE_SERVICE,
        "training_cutoffs": [str(c.date()) for c in cutoffs[:-1]], "calibration_cutoff": str(cutoffs[-1].date()),
        "config": vars(config), "tuning": tuning, "temperature": round(model.temperature, 4),
        "validation": _measure(calibration, _predict_all(model, baselines, calibration, transactions, horizon_days),
                               draws),
    }
    if champion is not None:
        report["validation"]["champion"] = _against_champion(champion, model, train, calibration, cutoffs[-1], draws)
    if transactions[TIMESTAMP].max() >= train_end + pd.Timedelta(days=horizon_days - 1):
        test = snapshot(home, transactions, train_end, horizon_days)
        report["test_cutoff"] = str(train_end.date())
        report["test"] = _measure(test, _predict_all(model, baselines, test, transactions, horizon_days), draws)
    report["seconds"] = round(time.perf_counter() - began, 1)
    inputs = [c for c in calibration.columns if c not in ("churned", "future_spend", "cutoff", EVENT_TIMESTAMP)]
    example = calibration[inputs].head(3).astype({c: "float64" for c in inputs if c not in CATEGORICAL_FEATURES
                                                   and c != CUSTOMER_ID})
    return Trained(model, report, example)


def markdown(report: dict) -> str:
    lines = [f"# Churn and value, trained to {report['train_end']} (H = {report['horizon_days']} days)", ""]
    for window in ("validation", "test"):
        if window not in report:
            continue
        part = report[window]
        cutoff = report["calibration_cutoff"] if window == "validation" else report["test_cutoff"]
        lines += [f"## {window.capitalize()} snapshot {cutoff}: {part['customers']} customers, "
                  f"churn rate {part['churn_rate']:.3f}", ""]
        if "leakage_warning" in part:
            lines += [f"**Leakage warning:** {part['leakage_warning']}", ""]
        names = ["roc_auc", "pr_auc", "brier", "ece", "top_decile_lift", "spearman"]
        lines += ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for model, figures in part["models"].items():
            cells = [f"{figures[n]['value']:.3f} [{figures[n]['low']:.3f}, {figures[n]['high']:.3f}]"
                     if n in figures else "" for n in names]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
        for metric, c in part["comparison"].items():
            if metric == "ece":
                continue
            d = c["difference"]
            lines.append(f"- {metric}: {c['model']:.3f} against {c['best_baseline']} {c['baseline']:.3f}; "
                         f"difference {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
        if "champion" in part:
            rival = part["champion"]
            d = rival["roc_auc"]["difference"]
            lines.append(f"- against the champion (version {rival['version']}, {rival['compared']}): ROC-AUC "
                         f"{rival['roc_auc']['challenger']:.3f} vs {rival['roc_auc']['champion']:.3f}, difference "
                         f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]; ECE {rival['ece']['challenger']:.3f}"
                         f" vs {rival['ece']['champion']:.3f}")
        lines.append("")
    return "\n".join(lines)


def _decide(report: dict, gate: dict | None = None) -> Decision:
    """Promote when, on the held-out calibration snapshot, no leakage is suspected, the network's ROC-AUC beats the
    best baseline's with the interval of the difference above zero, the champion was not trained on later data,
    and, where there is a champion, the gate holds: ROC-AUC better by the margin, calibration error not worse than
    the tolerance. Otherwise keep the champion, giving every reason."""
    gate = (gate or load_gate())["churn"]
    part = report["validation"]
    if "leakage_warning" in part:
        return Decision(False, part["leakage_warning"])
    c = part["comparison"]["roc_auc"]
    summary = f"ROC-AUC {c['model']:.3f} vs best baseline {c['best_baseline']} {c['baseline']:.3f}"
    failures = []
    if c["difference"]["low"] <= 0:
        failures.append(f"does not beat its baselines on the held-out snapshot: {summary} (difference interval low "
                        f"{c['difference']['low']:+.3f})")
    current = champion_version(MODEL_NAME)
    if current is not None and current.tags.get("train_window_end", "") > report["train_end"]:
        failures.append(f"the champion (version {current.version}) was trained on later data")
    rival = part.get("champion")
    against = ""
    if rival is not None:
        auc, ece, d = rival["roc_auc"], rival["ece"], rival["roc_auc"]["difference"]
        against = (f"ROC-AUC {auc['challenger']:.3f} vs the champion's {auc['champion']:.3f} (version "
                   f"{rival['version']}, {rival['compared']}), difference {d['value']:+.4f} [{d['low']:+.4f}, "
                   f"{d['high']:+.4f}]; ECE {ece['challenger']:.3f} vs {ece['champion']:.3f}")
        if d["value"] < gate["margin"]:
            failures.append(f"not better than the champion by the margin {gate['margin']}")
        if ece["challenger"] > ece["champion"] + gate["guardrails"]["ece"]:
            failures.append(f"calibration would get worse by more than {gate['guardrails']['ece']}")
    return decided(failures, against, current, f"beats its baselines on the held-out snapshot ({summary})",
                   f"beats its baselines ({summary}) and the champion by at least the margin {gate['margin']} "
                   "without worse calibration")


@dataclass
class ChurnFamily:
    """`loyal-churn` on the model-family contract (training/family.py)."""
    train_end: object
    horizon_days: int = HORIZON_DAYS
    trials: int = 0
    draws: int = 1000
    config: ChurnConfig | None = None
    tuning_workers: int = 1
    name: str = MODEL_NAME
    family: str = "churn"
    artifact: str = ARTIFACT

    def fit_and_evaluate(self, home: Path, champion: Champion | None) -> Trained:
        return fit_and_evaluate(home, self.train_end, self.horizon_days, self.trials, self.draws, self.config,
                                champion, self.tuning_workers)

    def run_name(self, report: dict) -> str:
        return f"churn-{report['train_end']}"

    def tags(self, report: dict) -> dict[str, str]:
        return {"model_family": self.family, "feature_service": FEATURE_SERVICE,
                "horizon_days": str(self.horizon_days), "training_cutoffs": ",".join(report["training_cutoffs"]),
                "calibration_cutoff": report["calibration_cutoff"], "train_window_end": report["train_end"]}

    def params(self, report: dict) -> dict:
        return {"train_end": report["train_end"], "horizon_days": self.horizon_days, "trials": self.trials,
                "temperature": report["temperature"]} | report["config"]

    def log(self, report: dict) -> None:
        metrics = {}
        for window in ("validation", "test"):
            for name, figures in report.get(window, {}).get("models", {}).items():
                for metric, figure in figures.items():
                    for part in ("value", "low", "high"):
                        metrics[f"{window}.{name}.{metric}.{part}"] = figure[part]
        rival = report["validation"].get("champion")
        if rival is not None:
            mlflow.set_tag("compared_with_champion", f"version {rival['version']}, {rival['compared']}")
            metrics |= {f"validation.against_champion.roc_auc_difference.{part}": rival["roc_auc"]["difference"][part]
                        for part in ("value", "low", "high")}
            metrics |= {f"validation.champion.{m}": rival[m]["champion"] for m in ("roc_auc", "ece")}
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_dict(report, "evaluation.json")
        mlflow.log_text(markdown(report), "evaluation.md")
        shown = report.get("test", report["validation"])["curves"]
        plots.log(plots.calibration({n: c["calibration"] for n, c in shown.items()}), "plots/calibration.png")
        plots.log(plots.lift({n: c["lift"] for n, c in shown.items()}), "plots/lift.png")

    def signature(self, trained: Trained):
        return infer_signature(trained.example, trained.model.predict(trained.example))

    def decide(self, report: dict, gate: dict) -> Decision:
        return _decide(report, gate)

    def summary(self, report: dict) -> dict:
        return {"tuning": report["tuning"]} if report["tuning"] else {}


@writes_home("train churn")
def train_churn(home: Path, train_end, horizon_days: int = HORIZON_DAYS, trials: int = 0, draws: int = 1000,
                config: ChurnConfig | None = None, gate: dict | None = None, tuning_workers: int = 1) -> dict:
    """Train, log, register `loyal-churn` and decide on `champion` (measured against the current one), its trials
    run by `tuning_workers` processes. Returns a summary for the command line."""
    check_workers(tuning_workers)
    return train(ChurnFamily(train_end, horizon_days, trials, draws, config, tuning_workers), home, gate)
