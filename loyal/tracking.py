"""MLflow bookkeeping shared by the pipeline steps."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from loyal.home import TRACKING_ENV, Home
from loyal.locking import writing


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


def shared_server() -> str | None:
    """LOYAL_TRACKING_URI: a shared MLflow tracking server (`mlflow server`, a database backend store and served
    artifacts) every command of every home tracks into and loads registered models from."""
    return os.environ.get(TRACKING_ENV) or None


def tracking_uri(home) -> str:
    """Where the home's runs and registry are, without changing anything of this process: LOYAL_TRACKING_URI,
    else MLFLOW_TRACKING_URI when the user set it, else the home's SQLite store (pointed at its own artifacts first,
    `follow_a_moved_home`)."""
    if shared_server():
        return shared_server()
    given = os.environ.get("MLFLOW_TRACKING_URI")
    if given and given != _SET_BY_US:
        return given
    home = Path(home).absolute()
    home.mkdir(parents=True, exist_ok=True)
    follow_a_moved_home(home)
    return f"sqlite:///{Home(home).mlflow_db}"


def client(home) -> MlflowClient:
    """An MLflow client of the home's tracking store and registry: what loading and serving use, so that neither
    changes the process-wide tracking URI, environment or experiment."""
    # MLflow draws a progress bar for every download of a model's few files (unless the user asks for them).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(home)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def use_home(home) -> None:
    """Track into $LOYAL_HOME unless LOYAL_TRACKING_URI (a shared server) or MLFLOW_TRACKING_URI says otherwise: an
    SQLite tracking store and registry (`mlflow.db`) with the artifacts beside it (`mlartifacts/`). `mlflow ui
    --backend-store-uri sqlite:///$LOYAL_HOME/mlflow.db` shows them. A home that was moved or copied is first made
    to point at its own artifacts (`follow_a_moved_home`)."""
    global _SET_BY_US
    # "Creating initial MLflow database tables..." on every new home says nothing the user needs, and neither do the
    # progress bars of downloading a model's few artifacts from the local store (unless the user asks for them).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    given = shared_server() or os.environ.get("MLFLOW_TRACKING_URI")
    if not given or given == _SET_BY_US:
        home = Path(home).absolute()
        home.mkdir(parents=True, exist_ok=True)
        follow_a_moved_home(home)
        _SET_BY_US = f"sqlite:///{Home(home).mlflow_db}"
        mlflow.set_tracking_uri(_SET_BY_US)
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=Home(home).mlartifacts.as_uri())
    else:
        mlflow.set_tracking_uri(given)  # the user's, over any this process set before
    if not os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run` the run, and its experiment, are given
        mlflow.set_experiment(EXPERIMENT)


def follow_a_moved_home(home: Path) -> bool:
    """MLflow stores absolute artifact locations (the experiment's, each run's, each model's), so a copied home
    would read and write the original's artifacts. Where the home's store names another place than the home's own
    `mlartifacts/`, every location under that place is rewritten to the same path under this home, under the home's
    write lock. Whether anything was rewritten."""
    database = Home(home).mlflow_db
    if not database.exists():
        return False
    own = Home(home).mlartifacts.as_uri()
    recorded = _recorded_artifacts(database)
    if recorded is None or recorded == own:
        return False
    with writing(home, "relocate"):
        recorded = _recorded_artifacts(database)
        if recorded is None or recorded == own:  # another process did it meanwhile
            return False
        with contextlib.closing(sqlite3.connect(database)) as connection, connection:
            for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                for _, column, kind, *_ in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                    if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                        connection.execute(
                            f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                            f'WHERE substr("{column}", 1, ?) = ?', (own, len(recorded) + 1, len(recorded), recorded))
    return True


def _recorded_artifacts(database: Path) -> str | None:
    """Where the store says the home's artifacts are: the Loyal experiment's artifact location."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        try:
            row = connection.execute("SELECT artifact_location FROM experiments WHERE name = ?",
                                     (EXPERIMENT,)).fetchone()
        except sqlite3.OperationalError:  # a store MLflow has not finished creating
            return None
    return row[0] if row else None
