"""Benchmark: the offer service under load, over loopback, against Feast's own feature server.

    python benchmarks/service.py [--home DIR] [--seconds 20] [--clients 4] [--repeats 3]

`--home` is a LOYAL_HOME with both champions and a materialized online store (what `loyal run` leaves in ./.loyal).
The script starts `loyal serve` and `feast serve` (SQLite online store, two workers each, as many as cores), then:

- `/offers`: `--clients` client processes, each with its own keep-alive connection, ask for one offer at a time
  for known customers in a seeded random order, for `--seconds` after a warm-up; latency per request and
  throughput;
- `/churn`: 1,000 known customers per request, one request at a time;
- `/events`: 100 events per request (views and purchases of made-up customers), one request at a time; and event
  to answer: a purchase sent to /events, then at once /recommend buy_again for that customer, timed from sending
  the event to an answer that shows the purchase (every one must). The made-up customers are forgotten at the end;
- Feast: `/get-online-features` for the same customers' features (the customer views Loyal reads), driven exactly
  like `/offers`: the baseline that Loyal's whole offer has to beat at p99.

Each repeat starts both servers afresh; the summary is the median over repeats of each figure (this machine is a
shared VM: a single run's throughput varies by half). It writes benchmarks/results/service.json with every run and
the machine it ran on.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

RESULTS = Path(__file__).parent / "results"
TARGETS = {"offers_p99_ms": 10.0, "offers_rps": 300.0, "churn_1000_p99_ms": 100.0, "events_100_p99_ms": 20.0,
           "event_to_visible_p99_ms": 100.0}
# The made-up customers the event measurements send events for, new to every invocation (the ones before were
# forgotten, and a forgotten customer's events are not kept); forgotten afterwards.
BENCH = f"bench-{time.time_ns() % 10**10}"


def _client(url: str, bodies: list[bytes], number: int, clients: int, measure_from: float, stop_at: float,
            out) -> None:
    """One client process: a keep-alive connection (the standard library's, the lightest Python has), one request
    at a time, its own share of the bodies; sends (latencies in s, errors) back."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"content-type": "application/json"}
    latencies, errors, position = [], 0, number
    while True:
        sent = time.monotonic()
        if sent >= stop_at:
            break
        try:
            connection.request("POST", parts.path, body=bodies[position % len(bodies)], headers=headers)
            response = connection.getresponse()
            response.read()
            failed = response.status != 200
        except (ConnectionError, http.client.HTTPException):  # counted, then a new connection
            connection.close()
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            failed = True
        took = time.monotonic() - sent
        position += clients
        if sent >= measure_from:
            latencies.append(took)
            errors += failed
    connection.close()
    out.put((latencies, errors))


def _drive(url: str, bodies: list[dict], clients: int, seconds: float, warmup: float = 3.0) -> dict:
    """`clients` processes post the bodies round-robin for `warmup` + `seconds`; only the last `seconds` count.
    Processes, not threads: a Python client's own work would otherwise queue on one interpreter lock."""
    encoded = [json.dumps(body).encode() for body in bodies]
    start = time.monotonic() + 1.0  # every process starts before anyone measures
    measure_from, stop_at = start + warmup, start + warmup + seconds
    out = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_client, args=(url, encoded, n, clients, measure_from, stop_at, out))
                 for n in range(clients)]
    for process in processes:
        process.start()
    answers = [out.get() for _ in processes]
    for process in processes:
        process.join()
    every = np.array([x for latencies, _ in answers for x in latencies]) * 1000
    return {"requests": int(len(every)), "errors": int(sum(e for _, e in answers)),
            "p50_ms": round(float(np.median(every)), 2), "p99_ms": round(float(np.percentile(every, 99)), 2),
            "throughput_rps": round(len(every) / seconds, 1)}


def _measure(args, customers: list[str], bin_dir: Path, env: dict, logs: Path, home: Path) -> dict:
    """One run: Loyal's /offers and /churn, then Feast's feature server, each started for it."""
    from loyal.features import definitions
    from loyal.serving.launch import free_port, loyal_service, started

    result: dict = {}
    with loyal_service(home, logs / "loyal-bench-serve.log") as base:
        result["offers"] = _drive(f"{base}/offers", [{"customer_id": c} for c in customers], args.clients,
                                  args.seconds)
        batch = {"customer_ids": customers[:1000]}
        with httpx.Client(timeout=30) as session:
            took = []
            for _ in range(33):
                sent = time.monotonic()
                assert session.post(f"{base}/churn", json=batch).status_code == 200
                took.append((time.monotonic() - sent) * 1000)
        took = np.array(took[3:])  # the first three warm up
        result["churn_1000"] = _latency(took)
        result |= _events(base, customers)

    features = [f"{view.name}:{field.name}" for view in definitions.CUSTOMER_VIEWS for field in view.features]
    port = free_port()
    feast = [str(bin_dir / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port), "--workers", "2",
             "--max-requests", "0"]  # 0: no worker recycling (gunicorn's default, every 1,000, resets clients)
    with started(feast, f"http://127.0.0.1:{port}/health", logs / "loyal-bench-feast.log", env=env,
                 cwd=home / "feast"):
        bodies = [{"features": features, "entities": {"customer_id": [c]}} for c in customers]
        result["feast_features"] = _drive(f"http://127.0.0.1:{port}/get-online-features", bodies, args.clients,
                                          args.seconds)

    return result


def _latency(took_ms: np.ndarray) -> dict:
    return {"requests": len(took_ms), "p50_ms": round(float(np.median(took_ms)), 2),
            "p99_ms": round(float(np.percentile(took_ms, 99)), 2)}


def _events(base: str, customers: list[str], requests: int = 300) -> dict:
    """/events with 100 events a request, and the time from a purchase event to an answer that shows it."""
    from datetime import datetime, timedelta, timezone

    items = []
    with httpx.Client(timeout=30) as session:
        for customer in customers[:20]:
            answer = session.post(f"{base}/recommend", json={"customer_id": customer, "rail": "for_you", "k": 50})
            items += [item["item_id"] for item in answer.json()["items"]]
        items = sorted(set(items))
        now = datetime.now(timezone.utc)
        took, run = [], time.time_ns() % 10**8  # ids new to every run (well under the 64 characters of an id)
        for request in range(requests + 10):
            at = (now - timedelta(seconds=5)).isoformat()
            events = [{"event_id": f"{BENCH}-{run}-{request}-{i}", "customer_id": f"{BENCH}-{run}-{i % 25}",
                       "item_id": items[(request + i) % len(items)], "timestamp": at,
                       **({"type": "purchase", "quantity": 1, "unit_price": 1.0} if i % 5 == 0 else {"type": "view"})}
                      for i in range(100)]
            sent = time.monotonic()
            answer = session.post(f"{base}/events", json={"events": events})
            took.append((time.monotonic() - sent) * 1000)
            assert answer.status_code == 202 and answer.json()["accepted"] == len(events), answer.text
        visible, seen = [], 0
        for request in range(requests + 10):
            customer, item = f"{BENCH}-{run}-visible-{request % 25}", items[request % len(items)]
            event = {"event_id": f"{BENCH}-{run}-visible-{request}", "customer_id": customer, "item_id": item,
                     "type": "purchase", "quantity": 1, "unit_price": 1.0,
                     "timestamp": (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()}
            sent = time.monotonic()
            taken = session.post(f"{base}/events", json={"events": [event]})
            answer = session.post(f"{base}/recommend", json={"customer_id": customer, "rail": "buy_again", "k": 100})
            visible.append((time.monotonic() - sent) * 1000)
            assert taken.status_code == 202 and taken.json()["accepted"] == 1, taken.text
            seen += item in {i["item_id"] for i in answer.json()["items"]}
    SHOPPERS.extend([f"{BENCH}-{run}-{i}" for i in range(25)] + [f"{BENCH}-{run}-visible-{i}" for i in range(25)])
    return {"events_100": _latency(np.array(took[10:])),
            "event_to_visible": _latency(np.array(visible[10:])) | {"shown": seen, "sent": len(visible)}}


SHOPPERS: list[str] = []  # every made-up customer events were sent for


def _forget_the_bench_shoppers(home: Path) -> None:
    from loyal.app.forget import forget

    if SHOPPERS:
        forget(home, SHOPPERS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("LOYAL_HOME") or ".loyal"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from loyal.store import read_table

    home = args.home.absolute()
    customers = read_table(home, "transactions")["customer_id"].drop_duplicates()
    customers = customers.sample(frac=1.0, random_state=0).tolist()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"LOYAL_HOME": str(home)}
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version()},
                    "home": str(home), "customers": len(customers), "clients": args.clients,
                    "seconds": args.seconds, "online_store": "sqlite", "targets": TARGETS}

    try:
        runs = [_measure(args, customers, bin_dir, env, logs, home) for _ in range(args.repeats)]
    finally:
        _forget_the_bench_shoppers(home)
    result["runs"] = runs
    for part in ("offers", "churn_1000", "events_100", "event_to_visible", "feast_features"):
        result[part] = {name: round(float(np.median([run[part][name] for run in runs])), 2)
                        for name in runs[0][part]}
    result["verdict"] = {
        "offers_p99_ms": result["offers"]["p99_ms"] <= TARGETS["offers_p99_ms"],
        "offers_rps": result["offers"]["throughput_rps"] >= TARGETS["offers_rps"],
        "churn_1000_p99_ms": result["churn_1000"]["p99_ms"] <= TARGETS["churn_1000_p99_ms"],
        "offers_p99_below_feast_features_p99": result["offers"]["p99_ms"] < result["feast_features"]["p99_ms"],
        "events_100_p99_ms": result["events_100"]["p99_ms"] <= TARGETS["events_100_p99_ms"],
        "event_to_visible_p99_ms": result["event_to_visible"]["p99_ms"] <= TARGETS["event_to_visible_p99_ms"],
        "every_event_visible_at_once": all(run["event_to_visible"]["shown"] == run["event_to_visible"]["sent"]
                                           for run in runs),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
