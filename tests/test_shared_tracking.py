"""Beyond one machine's files: every command tracks into a shared MLflow server (PostgreSQL as its backend store,
served artifacts) when LOYAL_TRACKING_URI names it, and tunes in Optuna studies on the same PostgreSQL
(LOYAL_OPTUNA_STORAGE), trials split over --tuning-workers processes. Train → register → serve, all of it against
the real servers, which conftest.py starts; nothing of MLflow or Optuna is written under the home."""

from __future__ import annotations

from datetime import timedelta

import httpx
import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from loyal.app.cli import app
from loyal.features.repo import build, materialize
from loyal.home import Home
from loyal.ingest import ingest_synthetic
from loyal.serving.launch import loyal_service
from loyal.store import read_table
from loyal.synthetic import SyntheticConfig

pytestmark = pytest.mark.integration  # starts PostgreSQL, an MLflow server and the service


def test_train_register_and_serve_against_a_shared_server_tuning_on_postgres(postgres, mlflow_server, home,
                                                                            monkeypatch, tmp_path):
    monkeypatch.setenv("LOYAL_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LOYAL_OPTUNA_STORAGE", f"{postgres}/optuna")
    ingest_synthetic(SyntheticConfig(customers=300, days=400, seed=3), home)
    build(home)
    materialize(home)
    end = (read_table(home, "transactions")["timestamp"].max() + timedelta(days=1)).date()
    churn_end = end - timedelta(days=90)

    runner = CliRunner()
    trained = runner.invoke(app, ["train", "churn", "--train-end", str(churn_end), "--trials", "4",
                                  "--tuning-workers", "2", "--draws", "50"])
    assert trained.exit_code == 0, trained.output
    trained = runner.invoke(app, ["train", "recommender", "--train-end", str(end), "--draws", "50"])
    assert trained.exit_code == 0, trained.output

    registry = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    for name in ("loyal-churn", "loyal-recommender"):
        (version,) = registry.search_model_versions(f"name = '{name}'")
        if "champion" not in version.aliases:  # whether it earned it is the training tests' concern
            registry.set_registered_model_alias(name, "champion", version.version)
        run = registry.get_run(version.run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # the server's, served over HTTP
    # Nothing of MLflow's or Optuna's is under the home: the shared stores hold it all.
    for local in (Home(home).mlflow_db, Home(home).mlartifacts, Home(home).optuna_db):
        assert not local.exists(), local

    # The study is on PostgreSQL, its four trials run by two workers at once.
    study = optuna.load_study(study_name=f"churn-{churn_end}-h90", storage=f"{postgres}/optuna")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 4
    first_two = sorted(finished, key=lambda t: t.datetime_start)[:2]
    assert first_two[1].datetime_start < first_two[0].datetime_complete  # they overlapped

    # The service loads both champions from the server.
    with loyal_service(home, tmp_path / "service.log") as base:
        customer = read_table(home, "transactions")["customer_id"].iloc[0]
        answer = httpx.post(f"{base}/churn", json={"customer_ids": [customer]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert 0 <= answer.json()["customers"][0]["churn_probability"] <= 1


def test_an_unreachable_optuna_storage_is_one_line(home, monkeypatch):
    ingest_synthetic(SyntheticConfig(customers=200, days=400, seed=3), home)
    build(home)
    monkeypatch.setenv("LOYAL_OPTUNA_STORAGE", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(app, ["train", "churn", "--train-end", "2024-11-01", "--trials", "2"])
    assert result.exit_code != 0
    assert "the Optuna storage cannot be used (LOYAL_OPTUNA_STORAGE)" in result.output
    assert "Traceback" not in result.output
