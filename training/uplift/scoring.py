"""Scoring with a registered `loyal-uplift`: loading it (never the training pipeline, nor causalml), and the MLflow
pyfunc wrapper, which a registered model names by module: loading one imports this module and nothing heavier."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from loyal.tracking import client
from loyal.training.registry import champion_version, load_version
from loyal.training.uplift.model import UpliftModel

MODEL_NAME = "loyal-uplift"
ARTIFACT = "model"  # the saved model's folder among the registered model's artifacts


class UpliftPyfunc(mlflow.pyfunc.PythonModel):
    """`loyal-uplift` as an MLflow pyfunc: input churn_v1 feature rows; output, per incentive, the incremental revenue
    and purchase probability, and the revenue and purchase probability without an offer. Registered from code
    (training/model_code/uplift.py): loading it reads the saved network's arrays, never a pickle."""

    def load_context(self, context):
        self.model = UpliftModel.load(Path(context.artifacts[ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.model.predict(model_input)


def load(home: Path, version: str) -> UpliftModel:
    """The uplift network of a registered version."""
    return load_version(MODEL_NAME, version, client(home)).unwrap_python_model().model


def champion(home: Path) -> tuple[UpliftModel, str] | None:
    """(the uplift model carrying `champion`, its version), or None while there is none."""
    current = champion_version(MODEL_NAME, client(home))
    if current is None:
        return None
    return load(home, str(current.version)), str(current.version)
