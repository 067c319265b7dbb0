"""The model-family contract, and the one path every family is trained by: fit and measure beside its baselines
(and the current champion), log the run, register the version, let the gate decide on `champion`.

A family (the recommender, the churn model; a third is one new module) is a `Family`: what it fits and measures is
its own, everything around that is here. Its model saves itself without pickle (`save(folder)`, and a class
`load(folder)`), and its registered code file in `model_code/` names the pyfunc that loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mlflow
import pandas as pd
from mlflow.models.signature import ModelSignature

from loyal.tracking import use_home
from loyal.training.registry import Champion, Decision, load_champion, load_gate, record_decision, register


class Model(Protocol):
    def save(self, folder: Path) -> Path: ...


@dataclass
class Trained:
    """What a family's fit leaves: the model to register, its report (the windows' figures, each window's
    `comparison` with the baselines, and `champion` where one was measured) and a few input rows."""
    model: Model
    report: dict
    example: pd.DataFrame


class Family(Protocol):
    name: str  # the registered model, e.g. "loyal-churn"
    family: str  # its `model_family` tag and its part of champion.yaml
    artifact: str  # the folder the model's files are registered under

    def fit_and_evaluate(self, home: Path, champion: Champion | None) -> Trained:
        """Fit on the training window and measure beside the baselines and `champion` (None: there is none)."""

    def run_name(self, report: dict) -> str: ...

    def tags(self, report: dict) -> dict[str, str]:
        """Written on the run and on the registered version (`train_window_end` among them)."""

    def params(self, report: dict) -> dict: ...

    def log(self, report: dict) -> None:
        """The run's metrics, the report and its plots, into the active run."""

    def signature(self, trained: Trained) -> ModelSignature: ...

    def decide(self, report: dict, gate: dict) -> Decision:
        """The gate: promote, or keep the champion, with every reason."""

    def summary(self, report: dict) -> dict:
        """What the command line prints beyond what every family's summary holds."""


def train(family: Family, home: Path, gate: dict | None = None) -> dict:
    """Fit, measure, log, register and decide; returns the summary the command line prints."""
    use_home(home)
    gate = gate or load_gate()
    trained = family.fit_and_evaluate(home, load_champion(family.name))
    report = trained.report
    # Under `loyal retrain` this is one step of the retrain's run.
    with mlflow.start_run(run_name=family.run_name(report), nested=mlflow.active_run() is not None) as run:
        tags = family.tags(report)
        mlflow.set_tags(tags)
        mlflow.log_params(family.params(report))
        family.log(report)
        version = register(family.name, trained.model, family.artifact, family.signature(trained), tags)
        decision = family.decide(report, gate)
        record_decision(family.name, version, decision)
    summary = {"run_id": run.info.run_id, "model": family.name, "version": version, "champion": decision.promote,
               "reason": decision.reason, "seconds": report["seconds"]}
    for window in ("validation", "test"):
        if window in report:
            summary[window] = report[window]["comparison"]
    if "champion" in report["validation"]:
        summary["against_champion"] = report["validation"]["champion"]
    return summary | family.summary(report)
