"""The main job, end to end on the default data. Today: ingest, the feature store (build and materialize), the
recommender (trained on everything, registered, champion decided) and a sample of its `for_you` rail, then the churn
and value model (trained on every snapshot whose window the data cover) and a sample of its scores, then the offer
service, started as `loyal serve` would, answering one offer over HTTP.
Each later step (training, serving) joins here, so that `loyal run` always shows the whole product working."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loyal.features.repo import build, materialize
from loyal.ingest import ingest_file, ingest_synthetic
from loyal.synthetic import SyntheticConfig

DEFAULT_DATA = "../shared/data/online_retail.csv.gz"  # relative to the repository root, where CI puts shared/
HOW_TO_GET_DATA = (
    "The default data is the UCI 'Online Retail' file: UCI Machine Learning Repository, dataset 352 "
    "(https://archive.ics.uci.edu/dataset/352/online+retail), downloaded as .xlsx; pass its path with --data "
    "or LOYAL_DATA."
)


def default_data() -> Path:
    return Path(os.environ.get("LOYAL_DATA") or DEFAULT_DATA)


def run_main_job(data: Path, home: Path, synthetic: SyntheticConfig = SyntheticConfig()) -> dict:
    """Ingest the real file at `data`, or, where it is absent, say how to get it and use the generator."""
    if data.exists():
        ingest = ingest_file("online-retail", data, home)
    else:
        print(f"loyal: {data} not found. {HOW_TO_GET_DATA} Running on synthetic data instead.", file=sys.stderr)
        ingest = ingest_synthetic(synthetic, home)
    features = build(home)
    online = materialize(home)
    recommender = _train_recommender(home)
    churn = _train_churn(home)
    offer = _answer_an_offer(home, churn["churn_scores"]["riskiest"][0]["customer_id"])
    return {"ingest": ingest, "features": features, "online_store": online} | recommender | churn | offer


def _train_recommender(home: Path) -> dict:
    """Train on every purchase (no tuning: the main job shows the product working; tuning is `--trials`), then
    answer the for_you rail for three customers from the registered champion."""
    import pandas as pd

    from loyal.schema import CUSTOMER_ID, TIMESTAMP
    from loyal.store import read_table
    from loyal.training.recommender_training import MODEL_NAME, recommend, train_recommender
    from loyal.training.registry import champion_version

    transactions = read_table(home, "transactions")
    train_end = (transactions[TIMESTAMP].max() + pd.Timedelta(days=1)).date()
    summary = train_recommender(home, train_end, trials=0, draws=200)
    # The champion answers; where there is none yet (the model did not beat its baselines), the version just
    # trained answers, and the summary says which.
    version = None if champion_version(MODEL_NAME) is not None else summary["version"]
    sample = recommend(home, transactions[CUSTOMER_ID].drop_duplicates().head(3).tolist(), "for_you", 5, version)
    answered_by = "champion" if version is None else f"version {version} (no champion yet)"
    return {"recommender": summary, "recommendations": sample.to_dict(orient="records"), "answered_by": answered_by}


def _train_churn(home: Path) -> dict:
    """Train on every monthly snapshot whose 90-day window the data cover (no tuning), then score everyone known at
    the end of the data with the champion, or the version just trained where it was not promoted."""
    import pandas as pd

    from loyal.schema import TIMESTAMP
    from loyal.store import read_table
    from loyal.training.churn_training import MODEL_NAME, score, train_churn
    from loyal.training.registry import champion_version

    transactions = read_table(home, "transactions")
    data_end = (transactions[TIMESTAMP].max() + pd.Timedelta(days=1)).date()
    summary = train_churn(home, data_end, trials=0, draws=200)
    version = None if champion_version(MODEL_NAME) is not None else summary["version"]
    scores = score(home, data_end, version)
    answered_by = "champion" if version is None else f"version {version} (no champion yet)"
    riskiest = scores.sort_values("churn_probability", ascending=False).head(3)
    return {"churn": summary, "churn_scores": {
        "customers": len(scores), "answered_by": answered_by,
        "risk_segments": scores["risk_segment"].value_counts().to_dict(),
        "riskiest": riskiest.to_dict(orient="records"),
    }}


def _answer_an_offer(home: Path, customer_id: str) -> dict:
    """Start the offer service on a free loopback port, ask it for one offer, and stop it."""
    import tempfile

    import httpx

    from loyal.serving.engine import missing_champions
    from loyal.serving.launch import loyal_service

    missing = missing_champions()
    if missing:
        return {"offer": f"not served: no champion for {missing} (the decisions above say why)"}
    with tempfile.TemporaryDirectory() as folder, loyal_service(home, Path(folder) / "serve.log") as base:
        answer = httpx.post(f"{base}/offers", json={"customer_id": customer_id, "k": 3}, timeout=30)
        answer.raise_for_status()
    return {"offer": {"served_at": base, "answer": answer.json()}}
