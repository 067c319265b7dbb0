"""The `loyal` command line (help with examples, the main job) and the MLflow Project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from loyal.app.cli import app
from loyal.schema import TRANSACTIONS
from loyal.store import read_table, table_path

from conftest import REPO

COMMANDS = ["ingest", "run", "features build", "features historical", "features show", "campaign",
            "campaign measure", "forget", "retrain", "events push", "evaluate realtime", "recommend"]


def test_top_level_help_shows_an_example():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Example: loyal run" in result.output
    for command in ("ingest", "run", "features"):
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert f"loyal {command} " in result.output.split("Example")[1]


def test_main_job_without_the_real_file_says_how_to_get_it_and_uses_synthetic(tmp_path, home):
    result = CliRunner().invoke(app, ["run", "--data", str(tmp_path / "absent.csv.gz"), "--customers", "300"])
    assert result.exit_code == 0, result.output
    assert "UCI Machine Learning Repository, dataset 352" in result.stderr
    assert "Running on synthetic data instead" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["ingest"]["format"] == "synthetic"
    assert summary["ingest"]["tables"]["customers"]["rows_total"] == 300
    assert table_path(home, TRANSACTIONS) is not None
    assert summary["features"]["rows"]["customer_behaviour"] > 0
    assert summary["online_store"]["online_store"] == "sqlite"
    assert summary["recommender"]["model"] == "loyal-recommender" and summary["recommender"]["reason"]
    assert len(summary["recommendations"]) == 15  # three customers, five items each
    assert summary["churn"]["model"] == "loyal-churn" and summary["churn"]["reason"]
    scores = summary["churn_scores"]
    assert scores["customers"] == sum(scores["risk_segments"].values()) > 0 and len(scores["riskiest"]) == 3
    # The job ends with the service answering an offer over HTTP, where both models are champions.
    if summary["recommender"]["champion"] and summary["churn"]["champion"]:
        answer = summary["offer"]["answer"]
        assert answer["customer_id"] == scores["riskiest"][0]["customer_id"] and answer["items"]
        assert answer["incentive"]["type"] in ("none", "percent_off", "free_shipping", "points_multiplier")
        # Then two events over HTTP: a first-time shopper's very next answers are theirs; forgotten, a stranger.
        live = summary["real_time"]
        item = live["for_you_before"]["items"][0]
        assert live["for_you_before"]["cold_start"] and not live["after"]["for_you"]["cold_start"]
        assert live["events_sent"]["accepted"] == 2 and live["after"]["buy_again"]["items"] == [item]
        assert live["after"]["recently_viewed"]["items"] == [item] and live["forgotten_after"]["cold_start"]
        assert live["customer"] not in set(read_table(home, "transactions")["customer_id"])
    else:
        assert summary["offer"].startswith("not served: no champion for")
    # And with a campaign's target list: only customers who opted in to email, within its budget.
    if summary["recommender"]["champion"] and summary["churn"]["champion"]:
        campaign = summary["campaign"]
        listed = pd.read_csv(campaign["output"], dtype={"customer_id": str})
        customers = read_table(home, "customers")
        opted_in = set(customers.loc[customers["email_opt_in"].fillna(False).astype(bool), "customer_id"])
        assert len(listed) == campaign["listed"] > 0 and set(listed["customer_id"]) <= opted_in
        assert campaign["budget_spent"] <= campaign["budget"] and campaign["treatment"] <= 500
    else:
        assert summary["campaign"].startswith("not made: no champion for")
    # Everything the job left is its owner's alone: `find "$LOYAL_HOME" -perm /o+r` prints nothing.
    assert [p for p in [home, *home.rglob("*")] if not p.is_symlink() and p.stat().st_mode & 0o077] == []


def test_mlproject_symlink_points_at_mlproject_yaml():
    link = REPO / "MLproject"
    assert link.is_symlink() and os.readlink(link) == "mlproject.yaml"


@pytest.mark.integration
def test_mlflow_run_of_the_synthetic_entry_point(tmp_path):
    """`mlflow run . -e synthetic --env-manager local` runs the step and records its counts on the run."""
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bin_dir = Path(sys.executable).parent  # where `loyal` and `mlflow` are installed
    # An experiment chosen earlier in this process (mlflow.set_experiment exports it) is not this run's.
    inherited = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    env = {**inherited, "MLFLOW_TRACKING_URI": tracking, "LOYAL_HOME": str(tmp_path / "home"),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow_cli = bin_dir / "mlflow"
    # The run's artifacts go under tmp_path: an experiment `mlflow run` makes itself keeps them in ./mlruns, inside
    # the repository.
    mlflow.MlflowClient(tracking_uri=tracking).create_experiment(
        "loyal-test", artifact_location=(tmp_path / "artifacts").as_uri())
    had_mlruns = (REPO / "mlruns").exists()
    done = subprocess.run(
        [str(mlflow_cli), "run", ".", "-e", "synthetic", "-P", "customers=200", "--env-manager", "local",
         "--experiment-name", "loyal-test"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert table_path(tmp_path / "home", TRANSACTIONS) is not None
    assert had_mlruns or not (REPO / "mlruns").exists()
    client = mlflow.MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("loyal-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["ingest.tables.customers.rows_total"] == 200
    assert run.data.params["customers"] == "200"


def test_each_home_tracks_into_its_own_store_unless_the_user_names_one(tmp_path, monkeypatch):
    """MLflow exports the tracking URI it is given to MLFLOW_TRACKING_URI; that must not pin a process (a test
    run, a notebook) to the first home it used."""
    import mlflow

    from loyal.tracking import use_home

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("first", "second"):
        use_home(tmp_path / name)
        assert mlflow.get_tracking_uri() == f"sqlite:///{(tmp_path / name).resolve() / 'mlflow.db'}"
    chosen = f"sqlite:///{tmp_path / 'chosen.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", chosen)
    use_home(tmp_path / "third")
    assert mlflow.get_tracking_uri() == chosen and not (tmp_path / "third" / "mlflow.db").exists()
