"""MLflow bookkeeping shared by the pipeline steps."""

from __future__ import annotations

import mlflow


def log_counts(summary: dict, prefix: str) -> None:
    """Log every whole-number count of a step's summary as a metric of the active (or MLFLOW_RUN_ID) run."""
    metrics = {}

    def walk(node: dict, path: str) -> None:
        for key, value in node.items():
            name = f"{path}.{key}"
            if isinstance(value, dict):
                walk(value, name)
            elif isinstance(value, int) and not isinstance(value, bool):
                metrics[name] = value

    walk(summary, prefix)
    # With no run id, start_run resumes the run named by MLFLOW_RUN_ID, which `mlflow run` sets.
    with mlflow.start_run():
        mlflow.log_metrics(metrics)
        mlflow.log_dict(summary, f"{prefix}_summary.json")
