"""MLflow bookkeeping shared by the pipeline steps."""

from __future__ import annotations

import logging

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


EXPERIMENT = "loyal"
_SET_BY_US: str | None = None  # MLflow exports the URI it is given to MLFLOW_TRACKING_URI: not the user's choice


def use_home(home) -> None:
    """Track into $LOYAL_HOME unless MLFLOW_TRACKING_URI says otherwise: an SQLite tracking store and registry
    (`mlflow.db`) with the artifacts beside it (`mlartifacts/`). `mlflow ui --backend-store-uri
    sqlite:///$LOYAL_HOME/mlflow.db` shows them."""
    import os
    from pathlib import Path

    global _SET_BY_US
    # "Creating initial MLflow database tables..." on every new home says nothing the user needs, and neither do the
    # progress bars of downloading a model's few artifacts from the local store (unless the user asks for them).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    given = os.environ.get("MLFLOW_TRACKING_URI")
    if not given or given == _SET_BY_US:
        home = Path(home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        _SET_BY_US = f"sqlite:///{home / 'mlflow.db'}"
        mlflow.set_tracking_uri(_SET_BY_US)
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=(home / "mlartifacts").as_uri())
    else:
        mlflow.set_tracking_uri(given)  # the user's, over any this process set before
    if not os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run` the run, and its experiment, are given
        mlflow.set_experiment(EXPERIMENT)
