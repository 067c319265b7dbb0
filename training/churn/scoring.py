"""Scoring with a registered `loyal-churn`: loading it (never the training pipeline, so the service and campaigns
load neither Optuna nor the tuning code), the risk segments, and every customer's scores at a date.

The MLflow pyfunc wrapper lives here too: a registered model names its wrapper class by module, so loading one
imports this module and nothing heavier.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.models
import numpy as np
import pandas as pd

from loyal.errors import LoyalError
from loyal.dates import midnight
from loyal.features.engines import ENGINES, spark_session
from loyal.schema import CUSTOMER_ID, QUANTITY, TIMESTAMP
from loyal.store import read_table
from loyal.tracking import client
from loyal.training.churn.data import snapshot
from loyal.training.churn.explain import top_drivers
from loyal.training.churn.model import ChurnModel
from loyal.training.registry import champion_version, load_version, verified_files

MODEL_NAME = "loyal-churn"
ARTIFACT = "model"  # the saved model's folder among the registered model's artifacts
# Risk segments by churn probability: stable thresholds, so that "high" means the same thing every week.
RISK_SEGMENTS = ((0.6, "high"), (0.3, "medium"), (0.0, "low"))
PREDICTION_TYPE = "churn_probability double, expected_value double"  # what the pyfunc returns, as Spark types


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


def scored_snapshot(home: Path, as_of, version: str | None = None, engine: str = "embedded"
                    ) -> tuple[ChurnModel, pd.DataFrame, pd.DataFrame]:
    """The champion (or `version`), the unlabelled snapshot of every customer known before `as_of`, and its
    predictions (churn_probability, expected_value per row) by `engine`."""
    model = load_model(home, version)
    transactions = read_table(home, "transactions", columns=[CUSTOMER_ID, TIMESTAMP, QUANTITY])
    frame = snapshot(home, transactions, as_of, labelled=False)
    if frame.empty:
        raise LoyalError(f"no customer bought anything before {midnight(as_of).date()}")
    return model, frame, predict(home, model, frame, version, engine)


def predict(home: Path, model: ChurnModel, frame: pd.DataFrame, version: str | None = None,
            engine: str = "embedded") -> pd.DataFrame:
    """churn_probability and expected_value of each row, in its order: by `model` in this process (embedded), or
    on Spark by the registered version itself (the champion, or `version`) as a Spark UDF
    (`mlflow.pyfunc.spark_udf`): the same files the service loads, checked against their digest first."""
    if engine not in ENGINES:
        raise LoyalError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "embedded" or frame.empty:
        return model.predict(frame)
    session = spark_session()
    with verified_files(MODEL_NAME, version, client(home)) as (local, _):
        inputs = mlflow.models.Model.load(str(local)).get_input_schema().input_names()
        numeric = [c for c in inputs if pd.api.types.is_numeric_dtype(frame[c]) and c != CUSTOMER_ID]
        # The signature's doubles and strings, named: a column that is all missing (no loyalty tiers) has no type
        # for Spark to infer.
        rows = frame[inputs].astype({c: "float64" if c in numeric else object for c in inputs})
        rows = rows.astype(object).where(rows.notna(), None).assign(_row=np.arange(len(frame)))
        schema = ", ".join(f"`{c}` {'DOUBLE' if c in numeric else 'STRING'}" for c in inputs) + ", _row BIGINT"
        table = session.createDataFrame(rows, schema=schema)
        udf = mlflow.pyfunc.spark_udf(session, str(local), result_type=PREDICTION_TYPE, env_manager="local")
        scored = table.select("_row", udf(*inputs).alias("p")).select(
            "_row", "p.churn_probability", "p.expected_value").toPandas()
    scored = scored.sort_values("_row").set_index(frame.index)
    return scored[["churn_probability", "expected_value"]].astype("float64")


def score(home: Path, as_of, version: str | None = None, engine: str = "embedded") -> pd.DataFrame:
    """Every customer known before `as_of`: churn probability, expected value over the horizon, segment, drivers."""
    model, frame, predicted = scored_snapshot(home, as_of, version, engine)
    return pd.DataFrame({
        CUSTOMER_ID: frame[CUSTOMER_ID].to_numpy(),
        "churn_probability": predicted["churn_probability"].round(4).to_numpy(),
        "expected_value": predicted["expected_value"].round(2).to_numpy(),
        "risk_segment": risk_segment(predicted["churn_probability"].to_numpy()),
        "top_drivers": top_drivers(model, frame).to_numpy(),
    })
