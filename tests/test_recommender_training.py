"""The re-ranker never sees the test window; the rails keep their promises; `loyal train recommender` registers a
real MLflow model whose champion alias moves by a recorded decision, and `loyal recommend` answers from it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loyal.app.cli import app
from loyal.ingest import ingest_synthetic
from loyal.schema import TIMESTAMP
from loyal.store import read_table
from loyal.synthetic import SyntheticConfig
from loyal.training.recommender.evaluate import split
from loyal.training.recommender.training import PENALTIES, SESSION_WEIGHTS
from loyal.features.engines import purchase_history
from loyal.training.recommender.rails import Recommender, _cut, load_model
from loyal.training.recommender.ranker import (
    LabelledStage,
    RankerConfig,
    Reranker,
    Stage,
    customer_features,
    no_features,
)

CUTOFF = "2024-04-15"
SMALL = dict(candidates_per_source=20, epochs=5)


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> pd.DataFrame:
    home = tmp_path_factory.mktemp("synthetic")
    ingest_synthetic(SyntheticConfig(customers=300, days=150, seed=4), home)
    return read_table(home, "transactions")


def _fit(train):
    stages = (LabelledStage.before(train, no_features), Stage(train, no_features))
    return Recommender(*(Reranker(RankerConfig(view=view, **SMALL)).fit_stages(*stages) for view in ("all", "explore")))


def test_no_test_window_purchase_reaches_a_training_matrix(transactions):
    """Everything on or after the cutoff, replaced by a flood of other purchases, changes no score."""
    train, test = split(transactions, CUTOFF)
    cutoff = pd.Timestamp(CUTOFF, tz="UTC")
    earlier, later = train.earlier(30)
    assert (earlier.purchases["age_days"] > 0).all() and (train.purchases["age_days"] > 0).all()
    assert earlier.counts.sum() + len(train.purchases[train.purchases["age_days"] <= 30]) == train.counts.sum()
    flooded = transactions[transactions[TIMESTAMP] < cutoff]
    after = flooded.sample(2000, replace=True, random_state=0).assign(**{TIMESTAMP: cutoff + pd.Timedelta(days=3)})
    flooded = pd.concat([flooded, after], ignore_index=True)
    flooded[TIMESTAMP] = pd.to_datetime(flooded[TIMESTAMP], utc=True)
    customers = test.customers[:50]
    first = Reranker(RankerConfig(**SMALL)).fit(train).score(customers)
    again = Reranker(RankerConfig(**SMALL)).fit(split(flooded, CUTOFF)[0]).score(customers)
    np.testing.assert_array_equal(first, again)


def test_rails_keep_their_promises(transactions):
    train, _ = split(transactions, CUTOFF)
    recommender = _fit(train)
    history = purchase_history(transactions, pd.Timestamp(CUTOFF, tz="UTC"))
    ids = list(train.customers[:40]) + ["a stranger"]
    bought = {c: set(train.items[train.counts[i].indices]) for i, c in enumerate(train.customers[:40])}

    def recommend(ids, rail):
        return recommender.recommend(history, ids, rail, 10, CUTOFF)

    buy_again = recommend(ids, "buy_again")
    assert all(row.item_id in bought[row.customer_id] for row in buy_again.itertuples() if row.customer_id in bought)
    discover = recommend(ids, "discover")
    assert not any(row.item_id in bought[row.customer_id] for row in discover.itertuples()
                   if row.customer_id in bought)
    trending = recommend(["x"], "trending")
    for rail in ("for_you", "discover", "buy_again", "similar_items"):
        stranger = recommend(ids, rail).query("customer_id == 'a stranger'")
        assert stranger["item_id"].tolist() == trending["item_id"].tolist(), rail
    for_you = recommend(ids, "for_you")
    assert (for_you.groupby("customer_id").size() == 10).all()
    assert (for_you.groupby("customer_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    item = train.items[0]
    similar = recommender.similar_to([item], 5)
    assert item not in set(similar["item_id"]) and len(similar) > 0


def test_lists_are_the_whole_catalogue_cut_at_k_whatever_the_batch(transactions):
    """Batch lists (threads over blocks, re-ranked rails ranked among their candidates) equal the top k of each
    customer's whole-catalogue scores, for every rail and k, including k beyond the candidates; and a customer's
    scores do not depend on who else is scored beside them."""
    train, _ = split(transactions, CUTOFF)
    recommender = _fit(train)
    history = purchase_history(transactions, pd.Timestamp(CUTOFF, tz="UTC"))
    ids = pd.Index([*train.customers[:120], "a stranger"])
    lines = recommender.lines(history, ids, CUTOFF)
    known = np.flatnonzero(np.diff(lines.counts.indptr) > 0)
    features = customer_features(pd.DataFrame(), ids)
    for rail in ("for_you", "discover", "buy_again", "trending", "similar_items"):
        full = np.tile(recommender.trending_scores.astype(np.float64), (len(ids), 1))
        full[known] = recommender.scores(lines.rows(known), features[known], rail)
        for k in (1, 5, 200):
            pd.testing.assert_frame_equal(recommender.recommend(history, ids, rail, k, CUTOFF, block=32),
                                          recommender._frame(ids, *_cut(full, k)), check_exact=False, rtol=1e-6)
    # (Up to float32 rounding: the network's arithmetic may take another path for another batch size.)
    alone = recommender.for_you.score(np.array([3]))
    np.testing.assert_allclose(alone[0], recommender.for_you.score(np.arange(40))[3], rtol=1e-6)


def test_the_discover_popularity_penalty_shows_less_popular_items(transactions):
    train, _ = split(transactions, CUTOFF)
    model = Reranker(RankerConfig(view="explore", popularity_penalty=0.0, **SMALL)).fit(train)
    customers = np.arange(100)
    buyers = model.stage.sources["global_popularity"].buyers

    def buyers_of_top_10():
        return buyers[np.argsort(-model.score(customers), axis=1)[:, :10]].mean()

    plain = buyers_of_top_10()
    model.config = replace(model.config, popularity_penalty=1.0)
    assert buyers_of_top_10() < plain
    assert RankerConfig(view="explore").penalty > 0 and RankerConfig(view="all").penalty == 0


def test_train_registers_a_champion_and_recommend_answers_from_it(home, tmp_path):
    from mlflow import MlflowClient

    from loyal.features.repo import build

    ingest_synthetic(SyntheticConfig(customers=300, days=150, seed=4), home)
    build(home)
    runner = CliRunner()
    first = runner.invoke(app, ["train", "recommender", "--train-end", CUTOFF, "--trials", "2", "--draws", "50"])
    assert first.exit_code == 0, first.output
    client = MlflowClient()
    champion = client.get_model_version_by_alias("loyal-recommender", "champion")
    assert champion.tags["feature_service"] == "offers_v1" and champion.tags["train_window_end"] == CUTOFF
    assert champion.tags["champion_reason"]
    run = client.get_run(champion.run_id)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/recall_at_k.png", "plots/coverage.png", "plots/popularity_bias.png"}
    assert "test.for_you.all.ndcg_at_10" in run.data.metrics
    # The discover popularity penalty was chosen on the validation window, among those tried, and is the one served.
    saved = client.download_artifacts(run.info.run_id, "evaluation.json", str(tmp_path))
    evaluation = json.loads(Path(saved).read_text())
    chosen = evaluation["discover_popularity_penalty"]
    assert set(chosen["validation_ndcg_at_10"]) == {str(p) for p in PENALTIES}
    assert chosen["validation_ndcg_at_10"][str(chosen["chosen"])] == max(chosen["validation_ndcg_at_10"].values())
    assert evaluation["configs"]["discover"]["popularity_penalty"] == chosen["chosen"]
    # So was the session's weight on for_you, replaying the validation window's orders, and it is the one served.
    session = evaluation["session_weight"]
    assert set(session["validation_ndcg_at_10"]) == {str(w) for w in SESSION_WEIGHTS} and session["orders"] > 0
    assert session["validation_ndcg_at_10"][str(session["chosen"])] == max(session["validation_ndcg_at_10"].values())
    assert load_model(home).session_weight == session["chosen"] > 0

    # A model trained on earlier data never takes the alias from one trained on later data.
    earlier = runner.invoke(app, ["train", "recommender", "--train-end", "2024-04-10", "--draws", "50"])
    assert earlier.exit_code == 0, earlier.output
    assert client.get_model_version_by_alias("loyal-recommender", "champion").version == champion.version
    second = client.get_model_version("loyal-recommender", str(int(champion.version) + 1))
    assert second.tags["champion_decision"] == "kept" and second.tags["champion_reason"]

    customers = tmp_path / "customers.txt"
    known = read_table(home, "transactions")["customer_id"].unique()[:3].tolist()
    customers.write_text("\n".join([*known, known[0], "nobody"]) + "\n")  # a repeat is answered once
    output = tmp_path / "rails.csv"
    result = runner.invoke(app, ["recommend", "--customers", str(customers), "--rail", "for_you", "--k", "5",
                                 "--output", str(output)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(output, dtype={"customer_id": str, "item_id": str})
    assert list(rows.columns) == ["customer_id", "rank", "item_id", "score"]
    assert rows.groupby("customer_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    assert set(rows["customer_id"]) == {*known, "nobody"}

    for bad, message in ((["--rail", "nope"], "not a rail"), (["--k", "0"], "between 1 and 100")):
        arguments = ["recommend", "--customers", str(customers), "--rail", "for_you", "--k", "5",
                     "--output", str(tmp_path / "x.csv")]
        for flag, value in zip(bad[::2], bad[1::2]):
            arguments[arguments.index(flag) + 1] = value
        failed = runner.invoke(app, arguments)
        assert failed.exit_code == 2 and message in failed.stderr
        assert not (tmp_path / "x.csv").exists()
