"""Benchmark: an email campaign over a million customers, from their features to the written list.

    python benchmarks/campaign.py [--customers 1000000] [--model-customers 20000] [--work DIR] [--repeats 1]

Not timed: the models are trained on a smaller synthetic shop (`--model-customers`; both families, no tuning,
carrying `champion`) whose MLflow registry the big shop then reads (MLFLOW_TRACKING_URI, as a shared tracking
server would be); the big shop (`--customers`, 365 days) is ingested in a subprocess and its features built for the
last four weeks, weekly, the campaign's date being the latest snapshot.

Timed, `--repeats` times: `loyal.serving.campaign.build` and `record` for the whole population (scoring every
customer from the offline store, consent, suppression, frequency cap, policy, ranking, budget, control group, items
for the list, the CSV, MLflow and the contact history). Writes benchmarks/results/campaign.json with the machine it ran on and this process's peak resident memory.

Items: the recommender holds items only and ranks each emailed customer from their history as of the campaign's date,
so every customer with purchases is ranked as a known one, whichever shop the model was trained on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGET_SECONDS = 60.0


def _train_models(home: Path, customers: int) -> None:
    from mlflow import MlflowClient

    from loyal.features.repo import build
    from loyal.ingest import ingest_synthetic
    from loyal.store import read_table
    from loyal.synthetic import SyntheticConfig
    from loyal.training.churn.training import train_churn
    from loyal.training.recommender.training import train_recommender

    ingest_synthetic(SyntheticConfig(customers=customers, days=400, seed=1), home)
    build(home)
    end = (read_table(home, "transactions")["timestamp"].max() + timedelta(days=1)).date()
    for name, summary in (("loyal-recommender", train_recommender(home, end, trials=0, draws=50)),
                          ("loyal-churn", train_churn(home, end, trials=0, draws=50))):
        if not summary["champion"]:  # the benchmark times scoring, not whether these versions earned it
            MlflowClient().set_registered_model_alias(name, "champion", summary["version"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--model-customers", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=None, help="keep the shops here (reused when present)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train-models-into", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_models_into:  # in a process of its own: the registry it writes is not the one this one reads
        _train_models(args.train_models_into, args.model_customers)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="loyal-campaign-bench-"))
    models, big = (work / "models").absolute(), (work / "big").absolute()
    tracking = f"sqlite:///{models / 'mlflow.db'}"
    if not (models / "mlflow.db").exists():
        subprocess.run([sys.executable, __file__, "--train-models-into", str(models), "--model-customers",
                        str(args.model_customers)], env=os.environ | {"LOYAL_HOME": str(models)}, check=True,
                       stdout=subprocess.DEVNULL)
    if not (big / "feast" / "registry.db").exists():
        env = os.environ | {"LOYAL_HOME": str(big)}
        subprocess.run([sys.executable, "-m", "loyal.app.cli", "ingest", "synthetic", "--customers", str(args.customers),
                        "--days", "365", "--seed", "2"], env=env, check=True, stdout=subprocess.DEVNULL)
        import pandas as pd

        from loyal.features.repo import BuildConfig, build
        from loyal.store import read_table

        end = (read_table(big, "transactions")["timestamp"].max() + pd.Timedelta(days=1)).date()
        build(big, BuildConfig(start=end - timedelta(days=28), every=7))

    from loyal.serving.campaign import Campaign, build as build_list, record
    from loyal.tracking import use_home

    os.environ["LOYAL_HOME"] = str(big)
    os.environ["MLFLOW_TRACKING_URI"] = tracking  # the models' registry, as a shared tracking server would be
    use_home(big)
    runs = []
    for repeat in range(args.repeats):
        plan = Campaign(name=f"bench-{time.time_ns()}", budget=50_000.0, max_contacts=100_000)
        started = time.perf_counter()
        chosen, counts = build_list(big, plan)
        built = time.perf_counter()
        record(big, plan, chosen, counts, work / f"{plan.name}.csv")
        runs.append({"seconds": round(time.perf_counter() - started, 2),
                     "build_seconds": round(built - started, 2), "counts": counts})
        print(json.dumps(runs[-1]), flush=True)

    seconds = [run["seconds"] for run in runs]
    result = {
        "benchmark": "campaign", "customers": args.customers, "model_customers": args.model_customers,
        "repeats": args.repeats, "seconds_median": statistics.median(seconds), "seconds_max": max(seconds),
        "target_seconds": TARGET_SECONDS, "met": max(seconds) <= TARGET_SECONDS,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2), "runs": runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    RESULTS.mkdir(exist_ok=True)
    name = "campaign.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
