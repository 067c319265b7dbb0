"""`loyal retrain`: the scheduled job that keeps both models fresh. It ingests what is new (a file, and the
event log's new events), rebuilds and materializes the features, trains a challenger of each family with a small tuning budget, and lets each take
`champion` only through the gate (`champion.yaml`): better than the current champion by the margin on the latest
holdout window, no guardrail worse. The service picks up a moved alias by itself.

Safe on a schedule:
- one at a time: a lock on $LOYAL_HOME/retrain.lock (released by the kernel when the process ends, however it
  ends); a second retrain exits at once with LOCKED. It then holds the home's write lock (`loyal.locking`) for its
  whole run, so no ingest, erasure or campaign interleaves with it;
- idempotent: a retrain whose data (the canonical tables' bytes), date, tuning budget and gate were already decided
  by a finished retrain trains nothing and exits with NOTHING_NEW (`--force` retrains all the same);
- its exit code is its outcome: PROMOTED, KEPT, NOTHING_NEW, LOCKED; 2 for a mistake in its input, 1 for a failure.

The retrain is one MLflow run (tag loyal.kind=retrain) with each family's training as a nested run; the decisions
and their reasons are tags on it, on the nested runs and on the registered versions.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from datetime import date
from pathlib import Path

import mlflow

from loyal.errors import LoyalError
from loyal.features.repo import build, materialize
from loyal.ingest import fold_events, ingest_file
from loyal.home import Home
from loyal.locking import writing
from loyal.schema import TABLES
from loyal.store import day_after_last_purchase, table_path
from loyal.tracking import use_home
from loyal.training.churn.training import train_churn
from loyal.training.recommender.training import train_recommender
from loyal.training.registry import GATE, load_gate

PROMOTED, KEPT, NOTHING_NEW, LOCKED = 0, 10, 11, 75  # 75: EX_TEMPFAIL, "try again later"
OUTCOMES = {PROMOTED: "promoted", KEPT: "kept", NOTHING_NEW: "nothing new", LOCKED: "locked"}
KIND = "retrain"


class Locked(LoyalError):
    """Another retrain holds the lock."""


@contextlib.contextmanager
def exclusive(home: Path):
    """Hold $LOYAL_HOME/retrain.lock while the block runs, or raise Locked at once when another process holds it."""
    home.mkdir(parents=True, exist_ok=True)
    with open(Home(home).retrain_lock, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            raise Locked(f"another retrain is running under {home} (pid {holder}); this one did nothing") from None
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        try:
            yield
        finally:
            file.truncate(0)


def data_fingerprint(home: Path) -> str:
    """SHA-256 over the canonical tables' files: equal fingerprints, equal data (an ingest that adds nothing leaves
    the files as they were)."""
    digest = hashlib.sha256()
    for name, table in sorted(TABLES.items()):
        path = table_path(home, table)
        if path is None:
            continue
        digest.update(name.encode())
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _as_of(home: Path, as_of: date | None) -> date:
    """The retrain's date: as given, or the day after the last purchase."""
    return as_of or day_after_last_purchase(home)


def _already_decided(key: str):
    """The finished retrain run that decided on exactly this key, if any."""
    runs = mlflow.search_runs(filter_string=f"tags.`loyal.kind` = '{KIND}' and tags.retrain_key = '{key}' "
                                            "and attributes.status = 'FINISHED'",
                              output_format="list", max_results=1)
    return runs[0] if runs else None


def retrain(home: Path, as_of: date | None = None, data: Path | None = None, data_format: str = "canonical",
            trials: int = 3, draws: int = 200, force: bool = False, gate_path: Path = GATE) -> dict:
    """Run one retrain and return its summary, whose `exit_code` is the outcome (see the module's docstring)."""
    gate = load_gate(gate_path)  # a broken gate is the user's mistake: say so before any work
    if trials < 0:
        raise LoyalError(f"--trials must be 0 or more, not {trials}")
    with exclusive(home), writing(home, "retrain"):
        summary = ({"ingest": ingest_file(data_format, data, home)} if data is not None
                   else {"event_log": fold_events(home)})
        as_of = _as_of(home, as_of)
        fingerprint = data_fingerprint(home)
        key = hashlib.sha256(json.dumps([fingerprint, str(as_of), trials, gate], sort_keys=True).encode()).hexdigest()
        summary |= {"as_of": str(as_of), "data_fingerprint": fingerprint, "trials": trials}
        use_home(home)
        decided = None if force else _already_decided(key)
        if decided is not None:
            return summary | {"outcome": OUTCOMES[NOTHING_NEW], "exit_code": NOTHING_NEW,
                              "decided_by_run": decided.info.run_id,
                              "reason": "a finished retrain already decided on this data, date, budget and gate "
                                        "(--force retrains all the same)"}
        with mlflow.start_run(run_name=f"retrain-{as_of}") as run:
            mlflow.set_tags({"loyal.kind": KIND, "retrain_key": key, "as_of": str(as_of),
                             "data_fingerprint": fingerprint, "forced": str(force).lower()})
            mlflow.log_params({"as_of": str(as_of), "trials": trials, "draws": draws, "force": force})
            summary["features"] = build(home)
            summary["online_store"] = materialize(home)
            families = {"recommender": train_recommender(home, as_of, trials, draws, gate=gate),
                        "churn": train_churn(home, as_of, trials=trials, draws=draws, gate=gate)}
            promoted = [family for family, trained in families.items() if trained["champion"]]
            code = PROMOTED if promoted else KEPT
            tags = {"outcome": OUTCOMES[code], "promoted": ",".join(promoted) or "none"}
            for family, trained in families.items():
                tags |= {f"{family}.version": trained["version"],
                         f"{family}.decision": "promoted" if trained["champion"] else "kept",
                         f"{family}.reason": trained["reason"][:5000]}  # MLflow keeps tags of up to 5,000 characters
            mlflow.set_tags(tags)
    return summary | {"run_id": run.info.run_id, "outcome": OUTCOMES[code], "exit_code": code,
                      "promoted": promoted} | families
