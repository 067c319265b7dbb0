"""Benchmark: the capacity plan's figures. Every step of Loyal, on a synthetic shop of each size, on both engines.

    python benchmarks/capacity.py --customers 100000 300000 1000000 [--steps ingest,features,...] [--engine both]
    python benchmarks/capacity.py --customers 100000 --items 30000     # the slope in products

Each size gets a fresh LOYAL_HOME (under --scratch). Each step is the command line a data team would run, in a process
of its own; the figures are its wall time and the peak resident memory of its whole process tree (sampled from /proc
every 0.2 s: Spark's JVM and Python workers, a server's workers, all counted). The steps:

- ingest: `loyal ingest synthetic --customers N --days 365`;
- features: `loyal features build --every 7` (a year of weekly snapshots, what training reads), per engine;
- materialize: `loyal features materialize --full` into the SQLite online store, per engine (after that engine's build);
- train_churn, train_recommender: `loyal train churn|recommender` with the default settings (no trials);
- score: `loyal score churn`, per engine; campaign: `loyal campaign`, per engine;
- serve: `loyal serve`, the resident memory of each worker once ready and after 200 /offers.

Writes benchmarks/results/capacity.json (merged with the sizes already there), with the machine it ran on.
docs/capacity.md reads it: slopes against customers, items and events, and the first step to break.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results" / "capacity.json"
LOYAL = str(Path(sys.executable).parent / "loyal")
STEPS = ("ingest", "features", "materialize", "train_churn", "train_recommender", "score", "campaign", "serve")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(entry)] = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measured(command: list[str], env: dict, log: Path) -> dict:
    """Run a command; its wall time, the peak resident memory of its process tree, and its exit code."""
    peak = 0
    began = time.perf_counter()
    with log.open("ab") as output:
        output.write(f"\n$ {' '.join(command)}\n".encode())
        output.flush()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(process.pid))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        done.set()
        sampler.join()
    return {"seconds": round(time.perf_counter() - began, 1), "peak_rss_gib": round(peak / 2**30, 3),
            "exit_code": code}


def _serve(home: Path, env: dict, log: Path) -> dict:
    """`loyal serve`: each worker's resident memory once ready, and after 200 offers."""
    from loyal.serving.launch import free_port, started

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    with started([LOYAL, "serve", "--port", str(port)], f"{base}/readyz", log, env=env, timeout=1200) as server:
        ready = round(time.perf_counter() - began, 1)
        workers = lambda: sorted(_tree_rss(int(p)) for p in _children(server.pid))  # noqa: E731
        at_ready = workers()
        customers = pd.read_parquet(_canonical(home, "transactions"), columns=["customer_id"])["customer_id"]
        for customer in customers.drop_duplicates().sample(200, random_state=0):
            httpx.post(f"{base}/offers", json={"customer_id": customer}, timeout=60)
        after = workers()
    return {"seconds_to_ready": ready, "workers": len(after),
            "worker_rss_gib_at_ready": [round(b / 2**30, 3) for b in at_ready],
            "worker_rss_gib_after_200_offers": [round(b / 2**30, 3) for b in after]}


def _children(pid: int) -> list[str]:
    """The service's worker processes: the arbiter's children (each with its own children counted in it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(entry)
            except (OSError, ValueError, IndexError):
                continue
    return found


def _crown_latest(home: Path) -> None:
    """Scoring, campaigns and the service answer with whatever carries `champion`; whether a version earned it is
    the training benchmarks' concern, so the latest of each family carries it here."""
    from mlflow import MlflowClient

    registry = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    for name in ("loyal-churn", "loyal-recommender"):
        versions = registry.search_model_versions(f"name = '{name}'")
        if versions and not any("champion" in v.aliases for v in versions):
            latest = max(versions, key=lambda v: int(v.version))
            registry.set_registered_model_alias(name, "champion", latest.version)


def _canonical(home: Path, table: str) -> Path:
    manifest = json.loads((home / "canonical" / "manifest.json").read_text())
    return home / "canonical" / manifest["tables"][table]


def _sizes(home: Path) -> dict:
    import pyarrow.parquet as pq

    sizes = {table: pq.ParquetFile(_canonical(home, table)).metadata.num_rows
             for table in ("customers", "items", "transactions", "events")}
    sizes["canonical_bytes"] = sum(p.stat().st_size for p in (home / "canonical").iterdir())
    return sizes


def run_size(customers: int, steps: set[str], engines: list[str], scratch: Path, items: int,
             result: dict) -> None:
    """Every step at one size, its figures into `result` as they come (a failed step keeps those before it)."""
    label = f"{customers}" if items == 3_000 else f"{customers}-items-{items}"
    home = scratch / f"capacity-{label}"
    if "ingest" in steps:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOYAL_ENGINE")}
    env |= {"LOYAL_HOME": str(home), "LOYAL_ONLINE_STORE": "sqlite"}
    log = scratch / f"capacity-{label}.log"
    result |= {"customers": customers, "items": items, "steps": {}}
    steps_out = result["steps"]

    def step(name: str, *arguments: str) -> dict:
        figures = measured([LOYAL, *arguments], env, log)
        steps_out[name] = figures
        print(customers, name, figures, flush=True)
        if figures["exit_code"] != 0:
            raise RuntimeError(f"{name} failed at {customers} customers: see {log}")
        return figures

    if "ingest" in steps:
        step("ingest", "ingest", "synthetic", "--customers", str(customers), "--days", "365", "--seed", "7",
             "--items", str(items))
    result["sizes"] = _sizes(home)
    transactions = pd.read_parquet(_canonical(home, "transactions"), columns=["timestamp"])["timestamp"]
    end = (transactions.max() + pd.Timedelta(days=1)).date()
    churn_end = end - pd.Timedelta(days=90)
    # Each engine builds, then materializes what it built; the last build leaves the embedded store for training.
    for engine in [e for e in ("spark", "embedded") if e in engines]:
        if "features" in steps:
            step(f"features_{engine}", "features", "build", "--every", "7", "--engine", engine)
        if "materialize" in steps:
            step(f"materialize_{engine}", "features", "materialize", "--full")
    if "train_churn" in steps:
        step("train_churn", "train", "churn", "--train-end", str(churn_end), "--draws", "100")
    if "train_recommender" in steps:
        step("train_recommender", "train", "recommender", "--train-end", str(end), "--draws", "100")
    _crown_latest(home)
    for engine in engines:
        if "score" in steps:
            step(f"score_{engine}", "score", "churn", "--as-of", str(end), "--engine", engine,
                 "--output", str(scratch / f"scores-{customers}-{engine}.parquet"))
        if "campaign" in steps:
            step(f"campaign_{engine}", "campaign", "--name", f"capacity-{engine}-{time.time_ns()}", "--budget",
                 "50000", "--max-contacts", "100000", "--as-of", str(end), "--engine", engine,
                 "--output", str(scratch / f"campaign-{customers}-{engine}.parquet"))
    if "serve" in steps:
        steps_out["serve"] = _serve(home, env, log)
        print(customers, "serve", steps_out["serve"], flush=True)


def slopes(sizes: dict) -> dict:
    """Per step, b in time ∝ N^b and memory ∝ N^b: the least-squares slope of the logs against log(customers), over
    the sizes (of 3,000 products) where the step went through."""
    found = {}
    for label, size in sorted(sizes.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0):
        if not label.isdigit():
            continue
        for step, figures in size["steps"].items():
            if figures.get("exit_code") == 0:
                found.setdefault(step, []).append((int(label), figures["seconds"], figures["peak_rss_gib"]))
    result = {}
    for step, points in found.items():
        if len(points) >= 2:
            customers, seconds, memory = (np.log(column) for column in zip(*points))
            result[step] = {"customers": [p[0] for p in points],
                            "time": round(float(np.polyfit(customers, seconds, 1)[0]), 2),
                            "memory": round(float(np.polyfit(customers, memory, 1)[0]), 2)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--items", type=int, default=3_000, help="products of the synthetic shop (the slope in items)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--engine", choices=("both", "embedded", "spark"), default="both")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/loyal-capacity"))
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    engines = ["embedded", "spark"] if args.engine == "both" else [args.engine]
    args.scratch.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"sizes": {}}
    for customers in args.customers:
        figures: dict = {}
        try:
            run_size(customers, steps, engines, args.scratch, args.items, figures)
        except RuntimeError as error:
            print(error, file=sys.stderr)
            figures["failed"] = str(error)
        label = f"{customers}" if args.items == 3_000 else f"{customers}-items-{args.items}"
        previous = results["sizes"].get(label, {})
        figures["steps"] = previous.get("steps", {}) | figures.get("steps", {})
        results["sizes"][label] = previous | figures
        if "failed" not in figures:  # this run went through: an earlier run's failure no longer stands
            results["sizes"][label].pop("failed", None)
        results["slopes"] = slopes(results["sizes"])
        memory = round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1)
        results["machine"] = {"cpus": os.cpu_count(), "memory_gib": memory, "platform": platform.platform(),
                              "python": platform.python_version()}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
