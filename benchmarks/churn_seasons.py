"""Benchmark: the churn model across seasons and seeds, on the real data.

    python benchmarks/churn_seasons.py --home HOME [--cutoffs 2011-06-10 2011-07-10 2011-08-10 2011-09-10]
                                       [--seeds 0 1 2] [--draws 200] [--min-history-days 60]

HOME holds the real data ingested and its features built (what `bash scripts/run.sh` leaves in .loyal). At each
cutoff the churn family is trained as `loyal train churn --train-end CUTOFF` trains it (monthly snapshots whose
90-day label window ends before the cutoff; the latest of them held out for the temperature), except that a snapshot
needs `--min-history-days` of data before it (default 60, the product's is 90: on the real file, which starts on
2010-12-01, 90 leaves 2011-06-10 one snapshot, and training needs two), once per seed,
and measured on the cutoff's own snapshot, labelled by the 90 days after it, which nothing was fitted or chosen on.
Per cutoff and seed: the network's ROC-AUC and ECE, the best baseline's ROC-AUC and the difference's interval, and
the ECE after a prior-shift correction (Saerens et al., 2002: EM re-estimates the churn rate of the cutoff's own,
unlabelled customers from the model's probabilities and moves every probability to it; tried, not adopted); per
cutoff, the same for the mean of the seeds' probabilities (the seed ensemble); and the spread of each over seeds.
Beside them, the churn rate over 30, 60 and 90 days from the 10th of every month whose windows the data cover: how
far the base rate moves with the season.
Writes benchmarks/results/churn_seasons.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import write_results

from loyal.schema import TIMESTAMP
from loyal.store import read_table
from loyal.training.churn.data import labels, snapshot
from loyal.training.churn.evaluate import churn_metrics
from loyal.training.churn.model import ChurnConfig
from loyal.training.churn.training import fit_and_evaluate

RESULTS = Path(__file__).parent / "results" / "churn_seasons.json"
CUTOFFS = ("2011-06-10", "2011-07-10", "2011-08-10", "2011-09-10")


def prior_shift(probability: np.ndarray, trained_rate: float, steps: int = 500) -> tuple[float, np.ndarray]:
    """(the churn rate EM estimates for these customers, their probabilities moved to it), from probabilities
    calibrated where the churn rate was `trained_rate` (Saerens, Latinne and Decaestecker, 2002)."""
    rate, moved = trained_rate, probability
    for _ in range(steps):
        up = rate / trained_rate * probability
        moved = up / (up + (1 - rate) / (1 - trained_rate) * (1 - probability))
        if abs(moved.mean() - rate) < 1e-7:
            break
        rate = float(moved.mean())
    return rate, moved


def one_cutoff(home: Path, cutoff: str, seeds: list[int], draws: int, transactions: pd.DataFrame,
               min_history_days: int) -> dict:
    test = snapshot(home, transactions, cutoff)
    churned = test["churned"].to_numpy()
    runs, probabilities = [], []
    for seed in seeds:
        began = time.perf_counter()
        trained = fit_and_evaluate(home, cutoff, config=ChurnConfig(seed=seed), draws=draws,
                                   min_history_days=min_history_days)
        part = trained.report["test"]
        network, comparison = part["models"]["churn_network"], part["comparison"]["roc_auc"]
        runs.append({"seed": seed, "roc_auc": network["roc_auc"]["value"], "ece": network["ece"]["value"],
                     "best_baseline": comparison["best_baseline"], "baseline_roc_auc": comparison["baseline"],
                     "difference": comparison["difference"], "seconds": round(time.perf_counter() - began, 1)})
        probabilities.append(trained.model.predict(test)["churn_probability"].to_numpy())
        rate, moved = prior_shift(probabilities[-1], trained.report["validation"]["churn_rate"])
        runs[-1]["prior_shift_em"] = {"calibration_churn_rate": trained.report["validation"]["churn_rate"],
                                      "estimated_churn_rate": round(rate, 4),
                                      "ece": churn_metrics(churned, moved)["ece"]}
        print(cutoff, runs[-1], flush=True)
    mean = np.mean(probabilities, axis=0)
    ensemble = churn_metrics(churned, mean)
    best = runs[0]["best_baseline"]  # the baselines do not depend on the network's seed
    baseline = trained.report["test"]["models"][best]
    return {
        "cutoff": cutoff, "customers": len(test), "churn_rate": round(float(churned.mean()), 4),
        "runs": runs,
        "spread": {metric: {"min": min(r[metric] for r in runs), "max": max(r[metric] for r in runs),
                            "mean": float(np.mean([r[metric] for r in runs]))} for metric in ("roc_auc", "ece")},
        "seed_ensemble": {"roc_auc": ensemble["roc_auc"], "ece": ensemble["ece"],
                          "roc_auc_minus_best_baseline": ensemble["roc_auc"] - baseline["roc_auc"]["value"]},
        "best_baseline": {"name": best, "roc_auc": baseline["roc_auc"]["value"], "ece": baseline["ece"]["value"]},
    }


def base_rates(transactions: pd.DataFrame, horizons=(30, 60, 90)) -> list[dict]:
    """Per month's 10th (from the data's second month), the share of the customers known by then who bought nothing
    in each horizon after it, where the data cover the longest."""
    first, last = transactions[TIMESTAMP].min(), transactions[TIMESTAMP].max()
    rates = []
    for month in pd.date_range(first.normalize() + pd.offsets.MonthBegin(1), last, freq="MS"):
        day = month + pd.Timedelta(days=9)
        if day + pd.Timedelta(days=max(horizons)) > last:
            break
        rates.append({"cutoff": str(day.date())} | {
            f"churn_rate_{h}d": round(float(labels(transactions, day, h)["churned"].mean()), 4) for h in horizons})
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--cutoffs", nargs="+", default=list(CUTOFFS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--min-history-days", type=int, default=60)
    args = parser.parse_args()
    os.environ["LOYAL_HOME"] = str(args.home)
    transactions = read_table(args.home, "transactions")
    cutoffs = [one_cutoff(args.home, c, args.seeds, args.draws, transactions, args.min_history_days)
               for c in args.cutoffs]
    write_results(RESULTS, {"cutoffs": cutoffs, "seeds": args.seeds, "min_history_days": args.min_history_days,
                            "base_rates": base_rates(transactions)})


if __name__ == "__main__":
    main()
