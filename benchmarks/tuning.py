"""Benchmark: Optuna trials in one process against several (`--tuning-workers`), at the same trial budget.

    python benchmarks/tuning.py --home HOME [--train-end 2011-09-10] [--trials 16] [--workers 1 2]

HOME holds ingested data and built features (the main job's home, say). For each worker count, a copy of it
without its Optuna and MLflow stores runs `loyal train churn --trials T --tuning-workers W`; the figures are the
wall time, the best validation ROC-AUC the study found, the test ROC-AUC of the model trained with it, and the trials
finished and pruned. Writes benchmarks/results/tuning_workers.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import write_results

RESULTS = Path(__file__).parent / "results" / "tuning_workers.json"
LOYAL = str(Path(sys.executable).parent / "loyal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--train-end", default="2011-09-10")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    runs = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as folder:
            home = Path(folder) / "home"
            shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", "optuna.db",
                                                                           "*.lock"))
            env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOYAL_TRACKING_URI",
                                                                    "LOYAL_OPTUNA_STORAGE")}
            env["LOYAL_HOME"] = str(home)
            began = time.perf_counter()
            done = subprocess.run([LOYAL, "train", "churn", "--train-end", args.train_end, "--trials",
                                   str(args.trials), "--tuning-workers", str(workers), "--draws", "200"],
                                  env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - began
            if done.returncode != 0:
                sys.exit(f"train churn with {workers} workers failed: {done.stderr[-2000:]}")
            summary = json.loads(done.stdout)
            tuning, test = summary["tuning"], summary.get("test", {}).get("roc_auc", {})
            runs.append({"workers": workers, "seconds": round(seconds, 1),
                         "best_validation_roc_auc": tuning["best_validation_auc"], "trials": tuning["trials"],
                         "pruned": tuning["pruned"], "test_roc_auc": test.get("model"),
                         "test_best_baseline": [test.get("best_baseline"), test.get("baseline")]})
            print(json.dumps(runs[-1])[:600], flush=True)
    write_results(RESULTS, {"benchmark": "tuning_workers", "train_end": args.train_end, "trials": args.trials,
                            "runs": runs})


if __name__ == "__main__":
    main()
