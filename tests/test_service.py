"""The offer service: every endpoint through BentoML's ASGI app, bad input never a 500 (schemathesis fuzzes the
OpenAPI spec), and one real server started by `loyal serve`, whose logs must hold no customer id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from loyal.serving.engine import CHURN, RECOMMENDER
from loyal.serving.policy import choose, load_policy
from conftest import trained_shop


@pytest.fixture(scope="module")
def served_home(tmp_path_factory):
    """A synthetic shop, its features in the online store and both models carrying `champion`."""
    from loyal.synthetic import SyntheticConfig

    home = tmp_path_factory.mktemp("serving") / "home"
    patch = pytest.MonkeyPatch()
    patch.setenv("LOYAL_RELOAD_SECONDS", "1")  # the service looks for new champions every second here
    patch.setenv("LOYAL_ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")  # the test client's Host is testserver
    with trained_shop(home, SyntheticConfig(customers=300, days=400, seed=3), materialized=True):
        yield home
    patch.undo()


@pytest.fixture(scope="module")
def app(served_home):
    from loyal.serving.service import Loyal

    return Loyal.to_asgi()


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def known(served_home):
    from loyal.store import read_table

    transactions = read_table(served_home, "transactions")
    return transactions.groupby("customer_id").size().sort_values().index[-3:].tolist()  # long histories


def test_every_rail_answers_with_reasons_descriptions_and_the_model_version(client, known):
    for rail in ("for_you", "buy_again", "discover", "similar_items", "trending"):
        answer = client.post("/recommend", json={"customer_id": known[0], "rail": rail, "k": 5})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["cold_start"] is False and body["rail"] == rail and 1 <= len(body["items"]) <= 5
        assert list(body["model_versions"]) == [RECOMMENDER]
        assert answer.headers["cache-control"] == "no-store"  # about a customer: no proxy keeps it
        assert all(item["reason"] and item["description"] for item in body["items"])
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)
    bought_again = client.post("/recommend", json={"customer_id": known[0], "rail": "buy_again"}).json()
    assert {item["reason"] for item in bought_again["items"]} == {"you bought this before"}


def test_an_unknown_customer_gets_trending_items_as_a_cold_start(client):
    body = client.post("/recommend", json={"customer_id": "never-seen", "k": 4}).json()
    trending = client.post("/recommend", json={"customer_id": "never-seen", "rail": "trending", "k": 4}).json()
    assert body["cold_start"] is True and len(body["items"]) == 4
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in trending["items"]]
    assert {i["reason"] for i in body["items"]} == {"popular this week"}


def test_excluded_items_are_never_shown(client, known):
    first = client.post("/recommend", json={"customer_id": known[1], "k": 10}).json()["items"]
    excluded = [item["item_id"] for item in first[:5]]
    again = client.post("/recommend", json={"customer_id": known[1], "k": 10, "exclude_item_ids": excluded}).json()
    shown = [item["item_id"] for item in again["items"]]
    assert len(shown) == 10 and not set(shown) & set(excluded)
    assert shown[:5] == [item["item_id"] for item in first[5:]]  # the rest keep their order


def test_similar_items_of_an_item_and_a_404_for_one_the_model_does_not_know(client, known):
    item = client.post("/recommend", json={"customer_id": known[0], "k": 1}).json()["items"][0]
    similar = client.post("/recommend", json={"customer_id": "anyone", "rail": "similar_items",
                                              "item_id": item["item_id"], "k": 3})
    assert similar.status_code == 200
    assert item["item_id"] not in [i["item_id"] for i in similar.json()["items"]]
    assert all(i["reason"].startswith("similar to ") for i in similar.json()["items"])
    missing = client.post("/recommend", json={"customer_id": "anyone", "rail": "similar_items", "item_id": "nope"})
    assert missing.status_code == 404 and "'nope' is not in the catalogue" in missing.text


@pytest.mark.parametrize("path, body, field", [
    ("/recommend", {"customer_id": "a", "k": 0}, "k"),
    ("/recommend", {"customer_id": "a", "k": 101}, "k"),
    ("/recommend", {"customer_id": "a", "k": "ten"}, "k"),
    ("/recommend", {"customer_id": "a", "rail": "everything"}, "rail"),
    ("/recommend", {"rail": "for_you"}, "customer_id"),
    ("/recommend", {"customer_id": ""}, "customer_id"),
    ("/recommend", {"customer_id": "a", "exclude_item_ids": "x"}, "exclude_item_ids"),
    ("/recommend", {"customer_id": "a", "colour": "red"}, "colour"),
    ("/churn", {"customer_ids": [str(i) for i in range(1001)]}, "customer_ids"),
    ("/churn", {"customer_ids": []}, "customer_ids"),
    ("/offers", {"customer_id": "a", "channel": "fax"}, "channel"),
])
def test_a_bad_request_is_a_400_naming_the_field(client, path, body, field):
    answer = client.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert field in {str(part) for error in answer.json()["detail"] for part in error["loc"]}


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b"null", "{\"customer_id\": \"\u00e9\"".encode()])
def test_malformed_json_is_a_400(client, content):
    for path in ("/recommend", "/churn", "/offers"):
        answer = client.post(path, content=content, headers={"content-type": "application/json"})
        assert answer.status_code == 400, (path, content, answer.text)


@pytest.mark.parametrize("headers, content, status", [
    ({"content-type": "application/json"}, b'{"customer_ids": ["' + b"1" * (1 << 20) + b'"]}', 413),
    ({"content-type": "text/plain"}, b'{"customer_id": "17850"}', 415),
    ({}, b'{"customer_id": "17850"}', 415),
    ({"content-type": "application/x-www-form-urlencoded"}, b"customer_id=17850", 415),
    ({"content-type": "application/json", "host": "evil.example"}, b'{"customer_id": "17850"}', 400),
])
def test_bodies_over_the_limit_of_another_type_or_for_another_host_are_refused(client, headers, content, status):
    """On 8bbd558 a 100 MB body to /churn was answered 200 (and echoed), text/plain and no content type were read as
    JSON, and any Host was served."""
    for path in ("/churn", "/offers", "/recommend"):
        answer = client.post(path, content=content, headers=headers)
        assert answer.status_code == status, (path, answer.text)


@pytest.mark.parametrize("path, body, field", [
    ("/recommend", {"customer_id": "a", "k": "5"}, "k"),
    ("/recommend", {"customer_id": "a", "k": True}, "k"),
    ("/recommend", {"customer_id": "a", "k": 5.0}, "k"),
    ("/recommend", {"customer_id": 17850}, "customer_id"),
    ("/recommend", {"customer_id": "a", "exclude_item_ids": ["x" * 65]}, "exclude_item_ids"),
    ("/churn", {"customer_ids": ["x" * 65]}, "customer_ids"),
    ("/churn", {"customer_ids": [""]}, "customer_ids"),
    ("/offers", {"customer_id": "x" * 65}, "customer_id"),
])
def test_json_types_are_taken_as_they_are_and_ids_are_bounded(client, path, body, field):
    answer = client.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert field in {str(part) for error in answer.json()["detail"] for part in error["loc"]}


def test_churn_scores_known_and_unknown_customers_alike(client, known):
    body = client.post("/churn", json={"customer_ids": [*known, "never-seen"]}).json()
    assert [c["customer_id"] for c in body["customers"]] == [*known, "never-seen"]
    for customer in body["customers"][:-1]:
        assert customer["known"] and 0 <= customer["churn_probability"] <= 1 and customer["expected_value"] >= 0
        assert customer["risk_segment"] in ("high", "medium", "low")
        assert all(" pts" in driver for driver in customer["top_drivers"])
    stranger = body["customers"][-1]
    assert stranger == {"customer_id": "never-seen", "known": False, "churn_probability": None,
                        "expected_value": None, "risk_segment": "unknown", "top_drivers": []}
    assert body["horizon_days"] == 90 and list(body["model_versions"]) == [CHURN]
    many = client.post("/churn", json={"customer_ids": [f"c{i}" for i in range(1000)]})
    assert many.status_code == 200 and len(many.json()["customers"]) == 1000


def test_an_offer_is_the_policys_choice_for_the_customers_scores(client, known, served_home):
    policy = load_policy()
    before = datetime.now(timezone.utc)
    for customer_id in known:
        offer = client.post("/offers", json={"customer_id": customer_id, "k": 3}).json()
        churn = client.post("/churn", json={"customer_ids": [customer_id]}).json()["customers"][0]
        assert offer["churn_probability"] == churn["churn_probability"]
        assert offer["cold_start"] is False and len(offer["items"]) == 3
        assert set(offer["model_versions"]) == {RECOMMENDER, CHURN}
        tier = _tier(served_home, customer_id)
        expected = choose(policy, [offer["churn_probability"]], [offer["expected_value"]], [tier]).iloc[0]
        assert offer["incentive"]["type"] == expected["incentive"]
        assert offer["reason_codes"] == expected["reason_codes"]
        if expected["incentive"] == "percent_off":
            assert offer["incentive"]["percent"] <= policy.max_discount_percent
        expires = datetime.fromisoformat(offer["expires_at"])
        assert timedelta(days=14) <= expires - before <= timedelta(days=14, minutes=5)


def _tier(home: Path, customer_id: str):
    from loyal.store import read_table

    customers = read_table(home, "customers").set_index("customer_id")
    return customers.loc[customer_id, "loyalty_tier"] if customer_id in customers.index else None


def test_an_unknown_customer_gets_trending_items_and_no_incentive(client):
    offer = client.post("/offers", json={"customer_id": "never-seen"}).json()
    assert offer["cold_start"] is True and offer["incentive"]["type"] == "none"
    assert offer["reason_codes"] == ["UNKNOWN_CUSTOMER"] and len(offer["items"]) == 5


def test_readiness_metrics_and_a_self_documenting_api(client):
    assert client.get("/readyz").status_code == 200
    client.post("/offers", json={"customer_id": "never-seen"})
    metrics = client.get("/metrics").text
    assert "bentoml_service_request" in metrics and 'endpoint="/offers"' in metrics
    spec = client.get("/docs.json").json()
    assert {"/recommend", "/churn", "/offers", "/readyz"} <= set(spec["paths"])
    request = spec["components"]["schemas"]["RecommendRequestIODescriptor"]
    assert "without a history gets trending" in request["properties"]["customer_id"]["description"]


def test_a_new_champion_is_served_without_a_restart(client, known):
    """The service looks for a moved `champion` (every second here, LOYAL_RELOAD_SECONDS), builds a whole new engine
    beside the old and swaps it in: every answer meanwhile is a 200 from one engine or the other."""
    import time

    from mlflow import MlflowClient

    registry = MlflowClient()
    current = registry.get_model_version_by_alias(CHURN, "champion")
    first = client.post("/offers", json={"customer_id": known[1]})
    assert first.status_code == 200, first.text
    assert first.json()["model_versions"][CHURN] == str(current.version)
    challenger = registry.create_model_version(CHURN, current.source, current.run_id)
    registry.set_registered_model_alias(CHURN, "champion", challenger.version)
    try:
        deadline = time.monotonic() + 120
        while True:
            answer = client.post("/offers", json={"customer_id": known[1]})
            assert answer.status_code == 200
            if answer.json()["model_versions"][CHURN] == str(challenger.version):
                break
            assert time.monotonic() < deadline, "the new champion was not picked up"
            time.sleep(0.2)
    finally:
        registry.set_registered_model_alias(CHURN, "champion", current.version)


def test_loyal_recommend_campaign_items_and_the_service_give_the_same_items(known, served_home, tmp_path):
    """One rail path from one state: `loyal recommend --as-of D` on every rail and a campaign's items as of D (the
    state as of D, from the tables and the offline features) answer a customer, known or not, exactly as the
    service's rails do from the online state at the moment D."""
    from typer.testing import CliRunner

    from loyal.app.cli import app
    from loyal.serving.campaign import ITEMS_PER_CONTACT, _items
    from loyal.serving.engine import Engine
    from loyal.store import day_after_last_purchase
    from loyal.training.recommender.rails import RAILS

    rails = Engine(served_home).rails
    moment = day_after_last_purchase(served_home)
    customers = [*known, "never-seen"]
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(customers) + "\n")
    for rail in RAILS:
        done = CliRunner().invoke(app, ["recommend", "--customers", str(ids), "--rail", rail, "--k", "5",
                                        "--as-of", str(moment), "--output", str(tmp_path / "rails.csv")])
        assert done.exit_code == 0, done.output
        listed = pd.read_csv(tmp_path / "rails.csv", dtype=str)
        for customer in customers:
            served = rails.answer(customer, rail, 5, at=pd.Timestamp(moment, tz="UTC"))
            assert listed.loc[listed["customer_id"] == customer, "item_id"].tolist() == served.items, (rail, customer)
    emailed = _items(served_home, pd.Series(customers), moment)
    for customer, items in zip(customers, emailed):
        served = rails.answer(customer, "for_you", ITEMS_PER_CONTACT, at=pd.Timestamp(moment, tz="UTC"))
        assert [i for i in items.split(";") if i] == served.items


def test_a_forgotten_customer_appears_nowhere_afterwards(served_home, client, known, tmp_path):
    """`loyal forget`: tables, quarantine, offline and online features, contact history, the next campaign and the
    running service (which is not restarted); a later ingest of the same rows keeps them out. Runs after the other
    tests that use `known`: it erases one of them. (Before the fuzzing, whose lifespan ends the app's.)"""
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from loyal.serving.campaign import Campaign, build
    from loyal.app.cli import app
    from loyal.features.online import OnlineReader
    from loyal.features.repo import open_store
    from loyal.home import Home
    from loyal.ingest import ingest_file
    from loyal.store import read_table

    customers = read_table(served_home, "customers")
    opted_in = customers.loc[customers["email_opt_in"].fillna(False).astype(bool), "customer_id"]
    gone = next(c for c in known if c in set(opted_in))
    before = client.post("/offers", json={"customer_id": gone}).json()
    assert not before["cold_start"] and before["churn_probability"] is not None
    theirs = read_table(served_home, "transactions").query("customer_id == @gone")
    rows = tmp_path / "again.csv"
    theirs.to_csv(rows, index=False)

    result = CliRunner().invoke(app, ["forget", gone])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["canonical_rows"]["transactions"] == len(theirs) > 0
    assert summary["offline_feature_rows"] > 0 and summary["online_store_entries"] > 0
    assert summary["online_state_lines"] > 0

    for table in ("transactions", "events", "customers"):
        assert gone not in set(read_table(served_home, table)["customer_id"]), table
    for path in (Home(served_home).feast / "offline").glob("*/*.parquet"):
        frame = pq.read_table(path).to_pandas()
        assert "customer_id" not in frame or gone not in set(frame["customer_id"]), path
    _, known_online = OnlineReader(open_store(served_home)).read_many("customer_id", [gone])
    assert known_online == [False]
    after = client.post("/offers", json={"customer_id": gone}).json()
    assert after["cold_start"] and after["churn_probability"] is None
    assert client.post("/churn", json={"customer_ids": [gone]}).json()["customers"][0]["known"] is False
    listed, _ = build(served_home, Campaign(name="after-erasure", budget=10_000.0, control_fraction=0.0))
    assert gone not in set(listed["customer_id"])
    # `loyal recommend` answers them exactly as a customer it never saw (on 8bbd558 buy_again still listed their
    # purchases).
    ids = tmp_path / "ids.txt"
    for rail in ("buy_again", "for_you", "similar_items"):
        ids.write_text(f"{gone}\nnever-seen\n")
        answered = CliRunner().invoke(app, ["recommend", "--customers", str(ids), "--rail", rail, "--k", "5",
                                            "--output", str(tmp_path / "rails.csv")])
        assert answered.exit_code == 0, answered.output
        answers = pd.read_csv(tmp_path / "rails.csv", dtype=str)
        as_gone, as_stranger = (answers[answers["customer_id"] == c][["rank", "item_id", "score"]]
                                .reset_index(drop=True) for c in (gone, "never-seen"))
        pd.testing.assert_frame_equal(as_gone, as_stranger)
    audit = (served_home / "erasures.jsonl").read_text()
    assert json.loads(audit.splitlines()[-1])["customers"] == 1 and gone not in audit
    assert gone not in (served_home / "suppression.parquet").read_bytes().decode("latin-1")

    again = ingest_file("canonical", rows, served_home)
    assert again["rows_of_erased_customers_dropped"] == len(theirs)
    assert gone not in set(read_table(served_home, "transactions")["customer_id"])


def test_events_are_answered_202_once_durable_with_duplicates_and_rejections_by_index(client, served_home):
    """POST /events: the good events kept, a repeated id a duplicate, a malformed one rejected by index and field;
    folded into the canonical tables by the next ingest."""
    from loyal.ingest import fold_events

    at, shopper = datetime.now(timezone.utc).isoformat(), "first-time-shopper"
    events = [
        {"event_id": "svc-1", "customer_id": shopper, "item_id": "i-seen", "type": "view", "timestamp": at},
        {"event_id": "svc-2", "customer_id": shopper, "item_id": "i-seen", "type": "purchase", "quantity": 1,
         "unit_price": 3.0, "timestamp": at, "channel": "app"},
        {"event_id": "svc-2", "customer_id": shopper, "item_id": "i-seen", "type": "purchase", "quantity": 1,
         "unit_price": 3.0, "timestamp": at},
        {"event_id": "svc-3", "customer_id": shopper, "item_id": "i-seen", "type": "purchase", "timestamp": at},
        ["not", "an", "object"],
    ]
    answer = client.post("/events", json={"events": events})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 2, "duplicates": 1, "suppressed": 0, "rejected": [
        {"index": 3, "error": "quantity: required for a purchase"}, {"index": 4, "error": "an event is a JSON object"}]}
    again = client.post("/events", json={"events": events[:2]})
    assert again.status_code == 202 and again.json()["duplicates"] == 2
    for body in ({"events": []}, {"events": [events[0]] * 1001}, {"events": events[0]}, {"event": [events[0]]}):
        assert client.post("/events", json=body).status_code == 400
    folded = fold_events(served_home)
    assert (folded["purchases"], folded["browsing"]) == (1, 1)


def _event(event_id: str, customer_id: str, item_id: str, kind: str = "purchase", minutes_ago: float = 1.0) -> dict:
    at = (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).isoformat()
    return {"event_id": event_id, "customer_id": customer_id, "item_id": item_id, "type": kind, "timestamp": at,
            **({"quantity": 1, "unit_price": 2.0} if kind == "purchase" else {})}


def test_rails_follow_events_at_once_and_a_first_time_buyer_gets_personal_rails(client, served_home, known):
    """No retraining: a purchase shows in buy_again and in the reasons of the very next answer; a customer the model
    never saw gets personal rails right after a first purchase; views make recently_viewed, latest first, and
    move similar_items to the item just viewed."""
    from loyal.store import read_table

    items = read_table(served_home, "transactions")["item_id"].value_counts().index
    newcomer = "brand-new-4711"
    cold = client.post("/recommend", json={"customer_id": newcomer, "rail": "for_you", "k": 5}).json()
    assert cold["cold_start"]
    answer = client.post("/events", json={"events": [_event("rt-1", newcomer, items[0]),
                                                     _event("rt-2", newcomer, items[1], minutes_ago=0.5)]})
    assert answer.status_code == 202 and answer.json()["accepted"] == 2
    buy_again = client.post("/recommend", json={"customer_id": newcomer, "rail": "buy_again", "k": 5}).json()
    assert not buy_again["cold_start"] and {i["item_id"] for i in buy_again["items"]} == {items[0], items[1]}
    for_you = client.post("/recommend", json={"customer_id": newcomer, "rail": "for_you", "k": 10}).json()
    assert not for_you["cold_start"] and for_you["items"] != cold["items"]
    offer = client.post("/offers", json={"customer_id": newcomer}).json()
    assert offer["items"] and offer["churn_probability"] is None  # personal items; no churn features yet

    someone = read_table(served_home, "transactions")["customer_id"].value_counts().index[3]  # not one of `known`
    before = client.post("/recommend", json={"customer_id": someone, "rail": "buy_again", "k": 100}).json()
    new_item = next(i for i in items[::-1] if i not in {x["item_id"] for x in before["items"]})
    client.post("/events", json={"events": [_event("rt-3", someone, new_item)]})
    after = client.post("/recommend", json={"customer_id": someone, "rail": "buy_again", "k": 100}).json()
    assert new_item in {x["item_id"] for x in after["items"]}

    views = [_event(f"rt-view-{i}", someone, item, "view", minutes_ago=0.6 - 0.2 * i)  # after the purchase
             for i, item in enumerate(items[5:8])]
    client.post("/events", json={"events": views})
    viewed = client.post("/recommend", json={"customer_id": someone, "rail": "recently_viewed", "k": 5}).json()
    assert [i["item_id"] for i in viewed["items"]][:3] == list(items[5:8][::-1])  # then what they viewed before
    assert {i["reason"] for i in viewed["items"]} == {"you viewed this"}
    similar = client.post("/recommend", json={"customer_id": someone, "rail": "similar_items", "k": 5}).json()
    assert {i["reason"] for i in similar["items"]} <= {f"similar to {d}" for d in _descriptions(served_home, items[7])}


def test_the_session_moves_for_you_towards_what_was_just_browsed(client, served_home, known):
    """The synthetic shop's sessions announce its orders (a cart a minute before the purchase), so training gives the
    session a weight on the validation window; an add-to-cart then lifts the item and the items like it in the very
    next for_you, saying why."""
    from loyal.training.recommender.rails import load_model

    model = load_model(served_home)
    assert model.session_weight > 0
    customer = known[1]
    before = client.post("/recommend", json={"customer_id": customer, "rail": "for_you", "k": 100}).json()
    carted = before["items"][-1]["item_id"]  # shown, but last of 100
    client.post("/events", json={"events": [_event("session-1", customer, carted, "add_to_cart", minutes_ago=0.1)]})
    after = client.post("/recommend", json={"customer_id": customer, "rail": "for_you", "k": 10}).json()
    assert after["items"][0]["item_id"] == carted and after["items"][0]["reason"] == "you viewed this"
    assert any(i["reason"].startswith("because you viewed ") for i in after["items"][1:])
    # A first visit: no purchase yet, and the views count at once.
    visitor = "first-visit-0815"
    client.post("/events", json={"events": [_event("session-2", visitor, carted, "view", minutes_ago=0.1)]})
    visit = client.post("/recommend", json={"customer_id": visitor, "rail": "for_you", "k": 10}).json()
    assert not visit["cold_start"] and visit["items"][0] == {**visit["items"][0], "item_id": carted,
                                                             "reason": "you viewed this"}
    assert client.post("/recommend", json={"customer_id": visitor, "rail": "buy_again", "k": 10}).json()["cold_start"]


def _descriptions(home: Path, item_id: str) -> set[str]:
    from loyal.store import read_table

    items = read_table(home, "items").set_index("item_id")["description"]
    return {items.get(item_id) or f"item {item_id}", f"item {item_id}"}


@pytest.mark.parametrize("path", ["/recommend", "/churn", "/offers", "/events"])
def test_fuzzed_requests_never_get_a_server_error(app, path):
    """Requests schemathesis makes from the OpenAPI spec, valid and invalid: any answer but a 5xx."""
    from hypothesis import strategies

    operation = schemathesis.openapi.from_asgi("/docs.json", app)[path]["POST"]
    answers = []

    @given(case=strategies.one_of(operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                                  operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)))
    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def call(case):
        response = case.call()
        answers.append(response.status_code)
        assert response.status_code < 500, (case.body, response.text)

    call()
    assert {200, 202} & set(answers) and 400 in answers  # valid bodies get through, invalid ones are told why


PERSONAL = ["personal-4711", "personal-0815", "personal-1234"]  # ids that no log line can hold by chance


def _ids_in(value) -> set[str]:
    """Every string sent as a customer or item id in a request body."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("customer_id", "customer_ids", "item_id", "exclude_item_ids"):
                found |= {v for v in (inner if isinstance(inner, list) else [inner]) if isinstance(v, str)}
            found |= _ids_in(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _ids_in(inner)
    return found


@pytest.mark.integration
def test_a_real_server_with_a_token_fuzzed_answers_no_5xx_and_logs_no_customer_id(served_home, known, tmp_path,
                                                                                  monkeypatch):
    """`LOYAL_API_TOKEN=T loyal serve`, then schemathesis (valid and invalid requests, from the spec) with the token,
    and requests meant to fail every way (bad JSON, wrong types, too long, unknown item, no token, wrong type of
    body): no answer is a 5xx, and the server's log holds none of the ids sent. On 8bbd558 every 400 was an ERROR
    with a traceback quoting the body."""
    from hypothesis import strategies

    from loyal.serving.launch import loyal_service

    token = "fuzz-t0ken"
    monkeypatch.setenv("LOYAL_API_TOKEN", token)
    auth = {"authorization": f"Bearer {token}"}
    log = tmp_path / "server.log"
    sent: set[str] = set(PERSONAL) | set(known)
    statuses: list[int] = []
    with loyal_service(served_home, log, timeout=180) as base:
        offer = httpx.post(f"{base}/offers", json={"customer_id": known[0]}, headers=auth, timeout=10)
        assert offer.status_code == 200 and offer.json()["items"]
        # Every API route needs the token; health and metrics stay open.
        view = {"event_id": "fuzz-view", "customer_id": known[0], "item_id": "i1", "type": "view",
                "timestamp": datetime.now(timezone.utc).isoformat()}
        bodies = {"/recommend": {"customer_id": known[0]}, "/churn": {"customer_ids": [known[0]]},
                  "/offers": {"customer_id": known[0]}, "/events": {"events": [view]}}
        for path, body in bodies.items():
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": token},
                            {"authorization": f"Basic {token}"}):
                answer = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=10)
                assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", (path, headers)
            assert httpx.post(f"{base}{path}", json=body, headers=auth, timeout=10).status_code in (200, 202)
        for path in ("/readyz", "/livez", "/metrics"):
            assert httpx.get(f"{base}{path}", timeout=10).status_code == 200, path
        refused = [
            ({"customer_id": PERSONAL[0], "k": "5"}, "/recommend", auth, 400),
            ({"customer_id": PERSONAL[0], "rail": "similar_items", "item_id": PERSONAL[1]}, "/recommend", auth, 404),
            ({"customer_ids": [PERSONAL[2], PERSONAL[0] * 10]}, "/churn", auth, 400),
            ({"customer_id": PERSONAL[1]}, "/offers", {}, 401),
            ({"customer_id": PERSONAL[2], "colour": PERSONAL[0]}, "/offers", auth, 400),
        ]
        for body, path, headers, status in refused:
            answer = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=10)
            assert answer.status_code == status, (path, answer.text)
        for content, kind in ((f'{{"customer_id": "{PERSONAL[0]}"', "application/json"),
                              (f'{{"customer_id": "{PERSONAL[1]}"}}', "text/plain")):
            answer = httpx.post(f"{base}/offers", content=content, headers=auth | {"content-type": kind}, timeout=10)
            assert answer.status_code in (400, 415)

        spec = httpx.get(f"{base}/docs.json", timeout=10).text
        schema = schemathesis.openapi.from_url(f"{base}/docs.json")
        before_fuzzing = log.read_text(errors="replace")  # what the server says of itself and of the requests above
        for path in ("/recommend", "/churn", "/offers", "/events"):
            operation = schema[path]["POST"]

            @given(case=strategies.one_of(operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                                          operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)))
            @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def call(case):
                response = case.call(headers=auth, timeout=30)
                statuses.append(response.status_code)
                sent.update(_ids_in(case.body))
                assert response.status_code < 500, (case.body, response.text)

            call()
    assert 200 in statuses and 400 in statuses
    text = log.read_text(errors="replace")
    assert "path=/offers" in text and "status=200" in text and "status=401" in text  # the access log is on ...
    assert "Traceback" not in text
    # ... and holds no id a client sent. Ids of under six characters could be any number or word of a log line, and
    # a fuzzed id may spell what the log says anyway ("/recommend", "loyal.serving"): those are the ids already in
    # the log before the fuzzing, which sent none of them, and the words of the API's own spec (a field name such as
    # "item_id", which a refusal names).
    fuzzed = text[len(before_fuzzing):]
    leaked = sorted(i for i in sent if len(i) >= 6 and i in fuzzed and i not in before_fuzzing and i not in spec)
    assert leaked == []
    assert not [i for i in (*PERSONAL, *known) if i in text]
    assert "invalid k" in text  # a refused request is one line naming its field


@pytest.fixture
def copied_home(served_home, tmp_path):
    """A copy of the served shop, to damage or to move, leaving the original as it was."""
    copy = tmp_path / "copied"
    shutil.copytree(served_home, copy)
    return copy


def _champion_files(home: Path, name: str) -> Path:
    """The folder holding the champion's files, in the home's own artifact store."""
    from mlflow import MlflowClient

    from loyal.tracking import use_home

    use_home(home)
    client = MlflowClient()
    version = client.get_model_version_by_alias(name, "champion")
    folder = Path(client.get_model_version_download_uri(name, version.version).removeprefix("file://"))
    assert folder.is_relative_to(home), folder  # the copy's own, not the original's
    return folder


def _loyal(home: Path, *args: str, env: dict | None = None, timeout: float = 300):
    command = [str(Path(sys.executable).parent / "loyal"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
                          | {"LOYAL_HOME": str(home)} | (env or {}))


@pytest.mark.integration
def test_a_damaged_model_stops_the_service_in_one_line_and_readiness_says_why(copied_home, tmp_path):
    """On 8bbd558 a truncated churn.pkl made `loyal serve` restart its workers every 30 s forever while /readyz
    hung. The weights are arrays now; truncated, they are refused the same way."""
    from loyal.serving.launch import free_port

    weights = next(_champion_files(copied_home, CHURN).rglob("arrays.npz"))
    weights.write_bytes(weights.read_bytes()[:1000])
    refused = _loyal(copied_home, "serve", "--port", str(free_port()))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("loyal: loyal-churn version ") and "not the ones registered" in refused.stderr

    # The server itself (past the command's check): readiness answers 503 with the reason, then it stops.
    port, log = free_port(), tmp_path / "server.log"
    bentoml = Path(sys.executable).parent / "bentoml"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "LOYAL_HOME": str(copied_home), "LOYAL_LOAD_ATTEMPTS": "2", "LOYAL_LOAD_RETRY_SECONDS": "5"}
    with log.open("wb") as output:
        server = subprocess.Popen([str(bentoml), "serve", "loyal.serving.service:Loyal", "--host", "127.0.0.1",
                                   "--port", str(port)], stdout=output, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    try:
        deadline, ready = time.monotonic() + 120, None
        while ready is None or ready.status_code != 503:
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()[-2000:]
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.3)
        assert ready.json()["ready"] is False and "loyal-churn version" in ready.json()["reason"]
        server.wait(timeout=120)  # it stops by itself
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert "stopping: the models could not be loaded in 2 attempts" in text
    assert text.count("models not loaded (attempt") <= 2 * 2  # two workers, two attempts each: no restart loop


@pytest.mark.integration
def test_a_replaced_model_file_is_never_run(copied_home, tmp_path):
    """On 8bbd558 a replaced python_model.pkl ran a shell command as the service's user during `loyal recommend`.
    No model holds a pickle any more; the file that is run (the model's code) is checked like the rest."""
    marker = tmp_path / "pwned"
    code = _champion_files(copied_home, RECOMMENDER) / "recommender.py"
    assert code.exists() and not list(_champion_files(copied_home, RECOMMENDER).rglob("*.pkl"))
    code.write_text(f"import os\nos.system('touch {marker}')\n" + code.read_text())
    ids = tmp_path / "ids.txt"
    ids.write_text("17850\n")
    done = _loyal(copied_home, "recommend", "--customers", str(ids), "--output", str(tmp_path / "r.csv"))
    assert done.returncode == 2 and "refusing to load" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


@pytest.mark.integration
def test_a_copied_home_works_on_its_own(copied_home, served_home, tmp_path, known):
    """On 8bbd558 MLflow and the Feast registry held absolute paths, so a copy read and wrote the original's models
    and features. Copied again and the first copy removed, it still loads its models, answers and records."""
    from conftest import tree_digest

    original = tree_digest(served_home / "mlartifacts")
    moved = tmp_path / "moved"
    shutil.copytree(copied_home, moved)
    shutil.rmtree(copied_home)
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{known[0]}\n")
    answered = _loyal(moved, "recommend", "--customers", str(ids), "--output", str(tmp_path / "r.csv"))
    assert answered.returncode == 0, answered.stderr
    entities = tmp_path / "entities.csv"
    entities.write_text(f"customer_id,event_timestamp\n{known[0]},2030-01-01\n")
    historical = _loyal(moved, "features", "historical", "--entities", str(entities),
                        "--output", str(tmp_path / "f.csv"))
    assert historical.returncode == 0, historical.stderr
    campaign = _loyal(moved, "campaign", "--name", "moved", "--budget", "100", "--output", str(tmp_path / "c.csv"))
    assert campaign.returncode == 0, campaign.stderr
    assert tree_digest(served_home / "mlartifacts") == original  # nothing of the copy's went to the original
    assert all(_champion_files(moved, name).is_relative_to(moved) for name in (RECOMMENDER, CHURN))


def test_serve_on_a_port_in_use_is_one_line(served_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = _loyal(served_home, "serve", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2 and "is in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_service_loads_neither_optuna_nor_a_training_pipeline(served_home):
    """What `lint-imports` holds for the code, at run time: the engine, its models loaded, pulls in no tuning and
    no training pipeline (on 8bbd558 the BentoML process loaded Optuna). Nor does it change MLflow's process-wide
    settings (on 8bbd558 Engine.__init__ set the tracking URI, its environment variable and the experiment)."""
    script = ("import os, sys, mlflow; from loyal.home import loyal_home; from loyal.serving.service import Loyal; "
              "from loyal.serving.engine import Engine; names = ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_NAME', "
              "'MLFLOW_EXPERIMENT_ID'); before = (mlflow.get_tracking_uri(), [os.environ.get(n) for n in names]); "
              "Engine(loyal_home()); "
              "assert (mlflow.get_tracking_uri(), [os.environ.get(n) for n in names]) == before; "
              "print([m for m in sys.modules if m.split('.')[0] == 'optuna' or m in "
              "('loyal.training.tuning', 'loyal.training.recommender.training', 'loyal.training.churn.training', "
              "'loyal.training.retrain', 'loyal.training.family')])")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"LOYAL_HOME": str(served_home)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_serve_without_champions_is_one_line(home):
    from typer.testing import CliRunner

    from loyal.app.cli import app as cli

    result = CliRunner().invoke(cli, ["serve", "--port", "3999"])
    assert result.exit_code == 2 and "no champion for loyal-recommender and loyal-churn" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bentoml_build_makes_a_bento_from_the_repo(tmp_path):
    """`bash scripts/bento.sh`: Loyal's wheel, then a Bento of the service, with no Docker engine."""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", "scripts/bento.sh"], cwd=repo, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"BENTOML_HOME": str(tmp_path / "bentoml")})
    assert done.returncode == 0, done.stderr[-3000:]
    tag = done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = tmp_path / "bentoml" / "bentos" / name / version
    assert name == "loyal" and (bento / "bento.yaml").exists()
    assert (bento / "env" / "python" / "wheels" / "loyal-0.1.0-py3-none-any.whl").exists()
    spec = yaml.safe_load((bento / "apis" / "openapi.yaml").read_text())
    assert {"/recommend", "/churn", "/offers"} <= set(spec["paths"])
