"""Check at full size: churn scores and a campaign list, embedded against Spark, on a home with a champion.

    python benchmarks/spark_scoring.py --home HOME [--as-of 2011-11-09] [--budget 2000]

HOME is the main job's (the real UCI year, both models carrying `champion`), or any other. Scores every customer known
before --as-of in this process and on Spark (the registered `loyal-churn` as an mlflow.pyfunc.spark_udf), and builds
the campaign list both ways (without recording it). Compares: the same customers, the largest relative difference
of the scores (unrounded), and the lists (customers, groups, incentives, rounded scores). Writes
benchmarks/results/spark_scoring.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results" / "spark_scoring.json"


def main() -> None:
    from loyal.serving.campaign import Campaign, build
    from loyal.training.churn import scoring

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--as-of", default="2011-11-09")
    parser.add_argument("--budget", type=float, default=2000.0)
    args = parser.parse_args()
    os.environ["LOYAL_HOME"] = str(args.home)
    as_of = pd.Timestamp(args.as_of).date()

    seconds = {}
    began = time.perf_counter()
    model, frame, embedded = scoring.scored_snapshot(args.home, as_of)
    seconds["score_embedded"] = round(time.perf_counter() - began, 2)
    began = time.perf_counter()
    spark = scoring.predict(args.home, model, frame, engine="spark")
    seconds["score_spark"] = round(time.perf_counter() - began, 2)
    relative = np.abs(spark.to_numpy() - embedded.to_numpy()) / np.maximum(np.abs(embedded.to_numpy()), 1e-300)

    lists = {}
    for engine in ("embedded", "spark"):
        began = time.perf_counter()
        lists[engine], counts = build(args.home, Campaign(name=f"check-{engine}", budget=args.budget, as_of=as_of,
                                                          seed=1, engine=engine))
        seconds[f"campaign_{engine}"] = round(time.perf_counter() - began, 2)
    a, b = lists["embedded"], lists["spark"]
    result = {
        "benchmark": "spark_scoring", "home": str(args.home), "as_of": str(as_of),
        "scores": {"customers": len(frame), "same_customers_and_order": bool((spark.index == embedded.index).all()),
                   "max_relative_difference": float(relative.max()),
                   "within_1e-9": bool((relative <= 1e-9).all())},
        "campaign": {"listed": [len(a), len(b)], "counts_embedded": counts,
                     "same_customers": a["customer_id"].tolist() == b["customer_id"].tolist(),
                     "same_groups": a["group"].tolist() == b["group"].tolist(),
                     "lists_equal": a.equals(b),
                     "max_abs_difference_of_churn_probability": float(
                         (a["churn_probability"] - b["churn_probability"]).abs().max()) if len(a) == len(b) else None},
        "seconds": seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
