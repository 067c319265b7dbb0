"""Scoring with a registered `loyal-churn`: loading it (never the training pipeline, so the service and campaigns
load neither Optuna nor the tuning code), the risk segments, and every customer's scores at a date.

The MLflow pyfunc wrapper lives here too: a registered model names its wrapper class by module, so loading one
imports this module and nothing heavier.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from loyal.errors import LoyalError
from loyal.dates import midnight
from loyal.schema import CUSTOMER_ID
from loyal.store import read_table
from loyal.tracking import client
from loyal.training.churn.data import snapshot
from loyal.training.churn.explain import top_drivers
from loyal.training.churn.model import ChurnModel
from loyal.training.registry import champion_version, load_version

MODEL_NAME = "loyal-churn"
ARTIFACT = "model"  # the saved model's folder among the registered model's artifacts
# Risk segments by churn probability: stable thresholds, so that "high" means the same thing every week.
RISK_SEGMENTS = ((0.6, "high"), (0.3, "medium"), (0.0, "low"))


class ChurnPyfunc(mlflow.pyfunc.PythonModel):
    """`loyal-churn` as an MLflow pyfunc: input a snapshot frame of churn_v1 features; output churn_probability
    and expected_value per row. Registered from code (training/model_code/churn.py): loading it reads the saved
    model's arrays, never a pickle."""

    def load_context(self, context):
        self.model = ChurnModel.load(Path(context.artifacts[ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.model.predict(model_input)


def risk_segment(probability: np.ndarray) -> np.ndarray:
    segments = np.full(len(probability), RISK_SEGMENTS[-1][1], dtype=object)
    for threshold, name in reversed(RISK_SEGMENTS):
        segments[np.asarray(probability) >= threshold] = name
    return segments


def load_model(home: Path, version: str | None = None) -> ChurnModel:
    """The registered model that carries `champion` (or the given version)."""
    registry = client(home)
    if version is None and champion_version(MODEL_NAME, registry) is None:
        raise LoyalError(f"no {MODEL_NAME} carries the alias champion yet: run `loyal train churn`, or pass "
                         "--version to score with a version that was not promoted")
    return load_version(MODEL_NAME, version, registry).unwrap_python_model().model


def scored_snapshot(home: Path, as_of, version: str | None = None) -> tuple[ChurnModel, pd.DataFrame, pd.DataFrame]:
    """The champion (or `version`), the unlabelled snapshot of every customer known before `as_of`, and its
    predictions (churn_probability, expected_value per row)."""
    model = load_model(home, version)
    transactions = read_table(home, "transactions")
    frame = snapshot(home, transactions, as_of, labelled=False)
    if frame.empty:
        raise LoyalError(f"no customer bought anything before {midnight(as_of).date()}")
    return model, frame, model.predict(frame)


def score(home: Path, as_of, version: str | None = None) -> pd.DataFrame:
    """Every customer known before `as_of`: churn probability, expected value over the horizon, segment, drivers."""
    model, frame, predicted = scored_snapshot(home, as_of, version)
    return pd.DataFrame({
        CUSTOMER_ID: frame[CUSTOMER_ID].to_numpy(),
        "churn_probability": predicted["churn_probability"].round(4).to_numpy(),
        "expected_value": predicted["expected_value"].round(2).to_numpy(),
        "risk_segment": risk_segment(predicted["churn_probability"].to_numpy()),
        "top_drivers": top_drivers(model, frame).to_numpy(),
    })
