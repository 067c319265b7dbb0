"""Benchmark: training the recommender champion, recommending for every customer, and ALS at scale.

    python benchmarks/recommender.py real [--data ../shared/data/online_retail.csv.gz] [--repeats 3]
    python benchmarks/recommender.py als  [--customers 1000000] [--home DIR]

`real` ingests the UCI file into a temporary LOYAL_HOME and builds the feature store (not timed), then times,
`--repeats` times: fitting the champion without tuning on every purchase (the sources before the label window and
before the end, the features from Feast, both re-rankers), and the `for_you` top 10 for every known customer.

`als` times implicit's ALS (the baseline's default settings, on the one thread Loyal gives it) on the purchase
matrix of a synthetic population (`--home`: one already ingested, else one is generated, not timed); `customers`
counts those with a purchase.

Each writes its figures to benchmarks/results/recommender_<part>.json with the machine it ran on.
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
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def _summary(seconds: list[float]) -> dict:
    return {"median_s": round(statistics.median(seconds), 2), "max_s": round(max(seconds), 2),
            "runs": [round(s, 2) for s in seconds]}


def real(data: Path, repeats: int) -> dict:
    from loyal.features.engines import purchase_history
    from loyal.features.repo import build
    from loyal.ingest import ingest_file
    from loyal.schema import TIMESTAMP
    from loyal.store import read_table
    from loyal.training.recommender.evaluate import Interactions
    from loyal.training.recommender.rails import Recommender
    from loyal.training.recommender.ranker import FeastFeatures, LabelledStage, RankerConfig, Reranker, Stage

    home = Path(tempfile.mkdtemp(prefix="loyal-bench-"))
    ingest_file("online-retail", data, home)
    build(home)
    transactions = read_table(home, "transactions")
    cutoff = (transactions[TIMESTAMP].max() + pd.Timedelta(days=1)).normalize()
    train = Interactions.before(transactions, cutoff)
    features = FeastFeatures(home)
    fit_seconds, recommend_seconds = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        stages = (LabelledStage.before(train, features), Stage(train, features))
        recommender = Recommender(*(Reranker(RankerConfig(view=v), features).fit_stages(*stages)
                                    for v in ("all", "explore")))
        fit_seconds.append(time.perf_counter() - began)
        began = time.perf_counter()
        rows = recommender.recommend(purchase_history(transactions, cutoff), train.customers, "for_you", 10, cutoff)
        recommend_seconds.append(time.perf_counter() - began)
    return {
        "data": str(data), "train_end": str(cutoff.date()), "customers": len(train.customers),
        "items": len(train.items), "purchase_lines": len(train.purchases),
        "fit_champion_without_tuning": _summary(fit_seconds),
        "for_you_top10_every_customer": _summary(recommend_seconds) | {"rows": len(rows)},
    }


def als(customers: int, home: Path | None) -> dict:
    from loyal.schema import TIMESTAMP
    from loyal.store import read_table
    from loyal.training.recommender.evaluate import Interactions
    from loyal.training.recommender.models import ALS

    if home is None:
        home = Path(tempfile.mkdtemp(prefix="loyal-bench-"))
        subprocess.run([sys.executable, "-m", "loyal.app.cli", "ingest", "synthetic", "--customers", str(customers)],
                       env=os.environ | {"LOYAL_HOME": str(home)}, check=True, stdout=subprocess.DEVNULL)
    transactions = read_table(home, "transactions")
    began = time.perf_counter()
    train = Interactions.before(transactions, transactions[TIMESTAMP].max() + pd.Timedelta(days=1))
    matrix_seconds = time.perf_counter() - began
    del transactions
    began = time.perf_counter()
    model = ALS().fit(train)
    fit_seconds = time.perf_counter() - began
    return {
        "customers": len(train.customers), "items": len(train.items), "purchase_lines": len(train.purchases),
        "nonzeros": int(train.counts.nnz), "config": vars(model.config), "threads": model.model.num_threads,
        "matrix_seconds": round(matrix_seconds, 1), "als_fit_seconds": round(fit_seconds, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    one = parts.add_parser("real")
    one.add_argument("--data", type=Path, default=Path("../shared/data/online_retail.csv.gz"))
    one.add_argument("--repeats", type=int, default=3)
    scale = parts.add_parser("als")
    scale.add_argument("--customers", type=int, default=1_000_000)
    scale.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    figures = real(args.data, args.repeats) if args.part == "real" else als(args.customers, args.home)
    figures["machine"] = _machine()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"recommender_{args.part}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
