"""Benchmark: uplift targeting against the truth, on a synthetic shop with a history of campaigns.

    python benchmarks/uplift.py [--customers 50000] [--campaigns 6] [--seeds 3 4] [--budgets 125 250 500 1000]

For each seed: a fresh home (`loyal ingest synthetic --customers N --days 365 --seed S --campaigns K`, weekly
features, `loyal train churn` on the data before the last 90 days), then `loyal train uplift` (the latest campaign
held out, the one before it validating) and `loyal evaluate uplift --budget B` for each budget, each the command a
marketing analyst runs. The figures: each model's Qini on the validation and held-out campaigns (estimated, with
the truth's beside it), the gate's decision, and per budget the true and estimated incremental revenue of uplift,
risk and random targeting, and uplift's true revenue over risk's. Writes benchmarks/results/uplift.json with the
machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from machine import write_results

RESULTS = Path(__file__).parent / "results" / "uplift.json"
LOYAL = str(Path(sys.executable).parent / "loyal")
START, DAYS, HORIZON = "2024-01-01", 365, 90


def loyal(env: dict, *arguments: str) -> dict:
    """Run a command; its printed JSON."""
    done = subprocess.run([LOYAL, *arguments], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"loyal {' '.join(arguments)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def one_shop(customers: int, campaigns: int, seed: int, budgets: list[float], scratch: Path) -> dict:
    home = scratch / f"uplift-{customers}-{seed}"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOYAL_ENGINE")}
    env |= {"LOYAL_HOME": str(home)}
    loyal(env, "ingest", "synthetic", "--customers", str(customers), "--days", str(DAYS), "--seed", str(seed),
          "--campaigns", str(campaigns))
    loyal(env, "features", "build", "--every", "7")
    churn_end = (pd.Timestamp(START) + pd.Timedelta(days=DAYS - HORIZON)).date()
    loyal(env, "train", "churn", "--train-end", str(churn_end), "--draws", "100")
    trained = loyal(env, "train", "uplift")
    at = {}
    for budget in budgets:
        evaluated = loyal(env, "evaluate", "uplift", "--budget", str(budget))
        figures = {name: {"true_incremental_revenue": evaluated[name]["true_incremental_revenue"],
                          "incremental_revenue": evaluated[name]["incremental_revenue"],
                          "picked": evaluated[name]["picked"], "spent": evaluated[name]["spent"],
                          "qini": evaluated[name]["qini"]}
                   for name in ("uplift", "risk", "random")}
        risk = figures["risk"]["true_incremental_revenue"]
        figures["uplift_over_risk"] = figures["uplift"]["true_incremental_revenue"] / risk if risk > 0 else None
        at[str(budget)] = figures
        print(customers, seed, budget, {n: round(f["true_incremental_revenue"]) for n, f in figures.items()
                                        if isinstance(f, dict)}, flush=True)
    return {"seed": seed, "train": {k: trained[k] for k in ("version", "champion", "reason", "campaigns",
                                                              "validation", "test", "seconds")},
            "at_budget": at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--campaigns", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--budgets", type=float, nargs="+", default=[125.0, 250.0, 500.0, 1000.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loyal-uplift-") as scratch:
        shops = [one_shop(args.customers, args.campaigns, seed, args.budgets, Path(scratch)) for seed in args.seeds]
    write_results(RESULTS, {"customers": args.customers, "campaigns": args.campaigns, "shops": shops})

if __name__ == "__main__":
    main()
