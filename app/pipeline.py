"""The main job, end to end on the default data. Today: ingest, the feature store (build and materialize), the
recommender (trained on everything, registered, champion decided) and a sample of its `for_you` rail, then the churn
and value model (trained on every snapshot whose window the data cover) and a sample of its scores, then the offer
service, started as `loyal serve` would, answering one offer over HTTP, and an email campaign's target list.
Each later step (training, serving) joins here, so that `loyal run` always shows the whole product working."""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from loyal.app.forget import forget
from loyal.app.uplift_evaluation import STRATEGIES, evaluate_uplift, write_report
from loyal.contacts import contact_history
from loyal.errors import LoyalError
from loyal.features.repo import build, materialize
from loyal.ingest import ingest_file, ingest_synthetic
from loyal.home import Home
from loyal.locking import writing
from loyal.schema import CUSTOMER_ID, EMAIL_OPT_IN, TRANSACTIONS
from loyal.serving import campaign
from loyal.serving.engine import missing_champions
from loyal.serving.launch import loyal_service
from loyal.store import day_after_last_purchase, read_table, table_path
from loyal.synthetic import SyntheticConfig
from loyal.training.churn import scoring as churn_scoring
from loyal.training.recommender import rails
from loyal.training.churn.training import train_churn
from loyal.training.recommender.training import train_recommender
from loyal.training.registry import champion_version
from loyal.training.uplift.training import train_uplift

DEFAULT_DATA = "../shared/data/online_retail.csv.gz"  # relative to the repository root, where CI puts shared/
HOW_TO_GET_DATA = (
    "The default data is the UCI 'Online Retail' file: UCI Machine Learning Repository, dataset 352 "
    "(https://archive.ics.uci.edu/dataset/352/online+retail), downloaded as .xlsx; pass its path with --data "
    "or LOYAL_DATA."
)


def default_data() -> Path:
    return Path(os.environ.get("LOYAL_DATA") or DEFAULT_DATA)


# Where the real file is absent: a synthetic shop with six past campaigns, so that the job learns whom an offer
# persuades from their control groups and targets its own campaign by it.
MAIN_JOB_SYNTHETIC = SyntheticConfig(campaigns=6)
UPLIFT_BUDGET = 50.0  # what `loyal evaluate uplift` spends, in the job, on the held-out campaign's list


def run_main_job(data: Path, home: Path, synthetic: SyntheticConfig = MAIN_JOB_SYNTHETIC) -> dict:
    """Ingest the real file at `data`, or, where it is absent, say how to get it and use the generator; the whole
    job under the home's write lock."""
    with writing(home, "run"):
        return _run(data, home, synthetic)


def _run(data: Path, home: Path, synthetic: SyntheticConfig) -> dict:
    if data.exists():
        ingest = ingest_file("online-retail", data, home)
        ingest["demo_consent"] = _demo_consent(home)
    else:
        print(f"loyal: {data} not found. {HOW_TO_GET_DATA} Running on synthetic data instead.", file=sys.stderr)
        ingest = ingest_synthetic(synthetic, home)
    features = build(home)
    online = materialize(home)
    recommender = _train_recommender(home)
    churn = _train_churn(home)
    offer = _answer_an_offer(home, churn["churn_scores"]["riskiest"][0]["customer_id"])
    uplift = _learn_from_past_campaigns(home)
    campaign = _make_a_campaign(home)
    return ({"ingest": ingest, "features": features, "online_store": online} | recommender | churn | offer | uplift
            | campaign)


DEMO_CONSENT_SHARES = {True: 0.6, False: 0.3, None: 0.1}  # opted in, opted out, never asked


def _demo_consent(home: Path) -> dict:
    """The UCI file carries no consent, and a campaign emails only customers who gave it. For the demo, a seeded
    draw says who opted in (60%), out (30%) or was never asked (10%, which campaigns treat as no); it is written to
    $LOYAL_HOME/demo/customers.csv and ingested as a consent export would be. Invented, and labelled so."""
    customers = read_table(home, "customers")[CUSTOMER_ID].sort_values().to_numpy()
    answers = np.random.default_rng(0).choice(np.array(list(DEMO_CONSENT_SHARES), dtype=object), len(customers),
                                              p=list(DEMO_CONSENT_SHARES.values()))
    path = Home(home).demo / "customers.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({CUSTOMER_ID: customers, EMAIL_OPT_IN: answers}).to_csv(path, index=False)
    summary = ingest_file("canonical", path, home)
    return {"file": str(path), "customers": summary["tables"]["customers"]["rows_total"],
            "opted_in": int(sum(a is True for a in answers)), "unknown": int(sum(a is None for a in answers))}


def _learn_from_past_campaigns(home: Path) -> dict:
    """Where the contact history holds measured campaigns (a synthetic shop's), train the uplift model on all but the
    latest and judge uplift, risk and random targeting on that one (`loyal evaluate uplift`)."""
    if contact_history(home).empty:
        return {}
    try:
        summary = train_uplift(home, draws=100)
    except LoyalError as error:  # too few measured campaigns, say: the job goes on, targeting by risk
        return {"uplift": f"not trained: {error}"}
    try:
        report = evaluate_uplift(home, UPLIFT_BUDGET, draws=100)
    except LoyalError as error:  # no churn champion to compare with, say
        return {"uplift": summary, "uplift_evaluation": f"not made: {error}"}
    path = write_report(home, report)
    return {"uplift": summary, "uplift_evaluation": {"report": str(path)} | {
        name: {key: report[name].get(key) for key in ("qini", "true_incremental_revenue", "picked", "spent")}
        for name in STRATEGIES}}


def _make_a_campaign(home: Path) -> dict:
    """A win-back campaign: budget 2,000, at most 500 emails, a tenth held out, targeted by uplift where an uplift
    champion exists (else by risk, and the counts say so); its list under $LOYAL_HOME/campaigns/."""
    missing = missing_champions()
    if missing:
        return {"campaign": f"not made: no champion for {missing} (the decisions above say why)"}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")  # a name of its own for each run of the job
    plan = campaign.Campaign(name=f"demo-winback-{stamp}", budget=2000.0, max_contacts=500, control_fraction=0.1,
                             target="uplift")
    chosen, counts = campaign.build(home, plan)
    output = Home(home).campaigns / f"{plan.name}.csv"
    digest = campaign.record(home, plan, chosen, counts, output)
    return {"campaign": counts | {"name": plan.name, "output": str(output), "list_sha256": digest}}


def _train_recommender(home: Path) -> dict:
    """Train on every purchase (no tuning: the main job shows the product working; tuning is `--trials`), then
    answer the for_you rail for three customers from the registered champion."""
    train_end = day_after_last_purchase(home)
    summary = train_recommender(home, train_end, trials=0, draws=200)
    # The champion answers (a first recommender is always promoted: each rail has its best recipe); where the alias
    # was taken away by hand, the version just trained answers, and the summary says which.
    version = None if champion_version(rails.MODEL_NAME) is not None else summary["version"]
    first_three = pq.read_table(table_path(home, TRANSACTIONS), columns=[CUSTOMER_ID])[CUSTOMER_ID].unique()[:3]
    sample = rails.recommend(home, first_three.to_pylist(), "for_you", 5, version=version)
    answered_by = "champion" if version is None else f"version {version} (no champion yet)"
    return {"recommender": summary, "recommendations": sample.to_dict(orient="records"), "answered_by": answered_by}


def _train_churn(home: Path) -> dict:
    """Train on every monthly snapshot whose 90-day window the data cover (no tuning), then score everyone known at
    the end of the data with the champion, or the version just trained where it was not promoted."""
    data_end = day_after_last_purchase(home)
    summary = train_churn(home, data_end, trials=0, draws=200)
    version = None if champion_version(churn_scoring.MODEL_NAME) is not None else summary["version"]
    scores = churn_scoring.score(home, data_end, version)
    answered_by = "champion" if version is None else f"version {version} (no champion yet)"
    riskiest = scores.sort_values("churn_probability", ascending=False).head(3)
    return {"churn": summary, "churn_scores": {
        "customers": len(scores), "answered_by": answered_by,
        "risk_segments": scores["risk_segment"].value_counts().to_dict(),
        "riskiest": riskiest.to_dict(orient="records"),
    }}


def _answer_an_offer(home: Path, customer_id: str) -> dict:
    """Start the offer service on a free loopback port, ask it for one offer, and stop it."""
    missing = missing_champions()
    if missing:
        return {"offer": f"not served: no champion for {missing} (the decisions above say why)"}
    with tempfile.TemporaryDirectory() as folder, loyal_service(home, Path(folder) / "serve.log") as base:
        answer = httpx.post(f"{base}/offers", json={"customer_id": customer_id, "k": 3}, timeout=30)
        answer.raise_for_status()
        live = _follow_a_first_time_buyer(home, base)
    return {"offer": {"served_at": base, "answer": answer.json()}, "real_time": live}


def _follow_a_first_time_buyer(home: Path, base: str) -> dict:
    """Show the rails following a customer as it happens: a made-up first-time shopper gets trending items; after
    two events sent to POST /events (a view, then a purchase), the very next answers are theirs. Then the shopper
    is forgotten (`loyal forget`), so nothing invented stays in the home."""
    shopper = f"demo-shopper-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"

    def rail(name: str) -> dict:
        answer = httpx.post(f"{base}/recommend", json={"customer_id": shopper, "rail": name, "k": 5}, timeout=30)
        answer.raise_for_status()
        return {"cold_start": answer.json()["cold_start"], "items": [i["item_id"] for i in answer.json()["items"]]}

    before = rail("for_you")
    item = before["items"][0]
    now = datetime.now(timezone.utc)
    events = [{"event_id": f"{shopper}-view", "customer_id": shopper, "item_id": item, "type": "view",
               "timestamp": (now - timedelta(seconds=2)).isoformat()},
              {"event_id": f"{shopper}-purchase", "customer_id": shopper, "item_id": item, "type": "purchase",
               "quantity": 1, "unit_price": 1.0, "timestamp": (now - timedelta(seconds=1)).isoformat()}]
    try:
        taken = httpx.post(f"{base}/events", json={"events": events}, timeout=30)
        taken.raise_for_status()
        after = {name: rail(name) for name in ("for_you", "buy_again", "recently_viewed")}
    finally:
        forget(home, [shopper])
    return {"customer": shopper, "for_you_before": before, "events_sent": taken.json(), "after": after,
            "forgotten_after": rail("for_you")}
