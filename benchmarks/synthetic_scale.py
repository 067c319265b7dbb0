"""Benchmark: how long and how much memory `loyal ingest synthetic` takes at a given scale.

    python benchmarks/synthetic_scale.py --customers 1000000 --repeats 1

Writes benchmarks/results/synthetic_scale.json: wall seconds of each repeat (median and max), peak resident
memory, rows written and the machine it ran on. Each repeat ingests into a fresh temporary LOYAL_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from loyal.ingest import ingest_synthetic
from loyal.synthetic import SyntheticConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synthetic_scale.json")
    args = parser.parse_args()

    seconds, rows = [], {}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as home:
            began = time.perf_counter()
            summary = ingest_synthetic(SyntheticConfig(customers=args.customers, days=args.days, seed=repeat), Path(home))
            seconds.append(time.perf_counter() - began)
            rows = {name: t["rows_total"] for name, t in summary["tables"].items()}
    result = {
        "benchmark": "synthetic_scale",
        "customers": args.customers,
        "days": args.days,
        "repeats": args.repeats,
        "seconds_median": round(statistics.median(seconds), 2),
        "seconds_max": round(max(seconds), 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
