"""Models are saved without pickle: each family writes arrays (read with allow_pickle=False) and a JSON config, and a
fresh Python process that loads them answers exactly as the trained object did. A version pickled by an older Loyal
is refused, never unpickled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from loyal.ingest import ingest_synthetic
from loyal.store import read_table
from loyal.synthetic import SyntheticConfig
from loyal.tracking import use_home
from loyal.training.churn.model import ChurnConfig, ChurnModel
from loyal.training.churn.explain import top_drivers
from loyal.training.recommender.evaluate import split
from loyal.features.engines import purchase_history
from loyal.training.recommender.rails import SCORED, Recommender
from loyal.training.recommender.ranker import LabelledStage, RankerConfig, Reranker, Stage, no_features
from loyal.training.recommender.models import EASE, EASEConfig
from loyal.training.registry import UnloadableModel, load_version, seal

from test_churn_model import _snapshot

CUT = "2024-04-15"


def _in_a_fresh_process(script: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _no_pickle_in(folder: Path) -> None:
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.pickle"))
    for arrays in folder.rglob("*.npz"):
        with np.load(arrays, allow_pickle=False) as stored:  # an object array would raise here
            assert all(stored[name].dtype != object for name in stored.files)


def test_a_saved_recommender_answers_in_a_fresh_process_exactly_as_the_trained_one(tmp_path):
    home = tmp_path / "shop"
    ingest_synthetic(SyntheticConfig(customers=300, days=150, seed=4), home)
    train, _ = split(read_table(home, "transactions"), CUT)
    stages = (LabelledStage.before(train, no_features), Stage(train, no_features))
    # discover answered by a baseline, as where one did better on the validation window: it is saved and served too.
    trained = Recommender(*(Reranker(RankerConfig(view=view, candidates_per_source=20, epochs=5)).fit_stages(*stages)
                            for view in ("all", "explore")), served={"discover": EASE(EASEConfig(l2=50.0)).fit(train)})
    trained.served["discover"].name = "ease_tuned_explore"
    assert trained.recipes()["discover"] == "ease_tuned_explore" and trained.recipes()["for_you"] == "reranker_for_you"
    folder = trained.save(tmp_path / "recommender")
    _no_pickle_in(folder)

    history = purchase_history(read_table(home, "transactions"), CUT)
    history.to_parquet(tmp_path / "history.parquet")
    customers = [*train.customers[:60].astype(str), "never-seen"]
    items = list(trained.items[:20].astype(str))
    (tmp_path / "ask.json").write_text(json.dumps({"customers": customers, "items": items}))
    _in_a_fresh_process(f"""
        import json, sys
        import pandas as pd
        from loyal.training.recommender.rails import SCORED, Recommender
        ask = json.load(open("ask.json"))
        history = pd.read_parquet("history.parquet")
        loaded = Recommender.load("{folder}")
        assert loaded.served["discover"].config.l2 == 50.0
        assert loaded.recipes()["discover"] == "ease_tuned_explore"
        assert "loyal.training.recommender.training" not in sys.modules and "optuna" not in sys.modules
        frames = [loaded.recommend(history, ask["customers"], rail, 10, "{CUT}").assign(rail=rail) for rail in SCORED]
        frames.append(loaded.similar_to(ask["items"], 10).rename(columns={{"query_item_id": "customer_id"}})
                      .assign(rail="similar_to"))
        pd.concat(frames).to_parquet("answers.parquet")
    """, tmp_path)
    expected = pd.concat([trained.recommend(history, customers, rail, 10, CUT).assign(rail=rail) for rail in SCORED]
                         + [trained.similar_to(items, 10).rename(columns={"query_item_id": "customer_id"})
                            .assign(rail="similar_to")])
    discover = expected[expected["rail"] == "discover"]
    bought = set(zip(train.customers[train.purchases["customer"]].astype(str), train.items[train.purchases["item"]]))
    assert len(discover) and not any(pair in bought for pair in zip(discover["customer_id"], discover["item_id"]))
    answered = pd.read_parquet(tmp_path / "answers.parquet")
    assert len(expected) > 60 * 10
    pd.testing.assert_frame_equal(answered.reset_index(drop=True), expected.reset_index(drop=True),
                                  check_exact=True, check_dtype=False)

    # The saved model holds items only: no customer id of the training data in any of its bytes, as text (the
    # config) or as numpy's fixed-width unicode (UTF-32, the id arrays).
    stored = b"".join(path.read_bytes() for path in folder.rglob("*") if path.is_file())
    assert str(trained.items[0]).encode("utf-32-le") in stored  # the search finds ids where there are some
    assert not [c for c in train.customers.astype(str)
                if c.encode() in stored or c.encode("utf-32-le") in stored]


def test_a_saved_churn_model_answers_in_a_fresh_process_exactly_as_the_trained_one(tmp_path):
    trained = ChurnModel(ChurnConfig(epochs=5)).fit(_snapshot(1500, 1), _snapshot(800, 2))
    folder = trained.save(tmp_path / "churn")
    _no_pickle_in(folder)
    frame = _snapshot(300, 3)
    frame.to_parquet(tmp_path / "frame.parquet")
    _in_a_fresh_process(f"""
        import pandas as pd
        from loyal.training.churn.explain import top_drivers
        from loyal.training.churn.model import ChurnModel
        loaded = ChurnModel.load("{folder}")
        frame = pd.read_parquet("frame.parquet")
        loaded.predict(frame).assign(drivers=top_drivers(loaded, frame).to_numpy()).to_parquet("answers.parquet")
    """, tmp_path)
    expected = trained.predict(frame).assign(drivers=top_drivers(trained, frame).to_numpy())
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "answers.parquet"), expected, check_exact=True)


class _RunsACommand(mlflow.pyfunc.PythonModel):
    """What a version pickled by an older Loyal could hold, once replaced: unpickling it runs a command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return model_input


def test_a_version_saved_with_pickle_is_refused_and_never_unpickled(home, tmp_path):
    """Even sealed with the right digest (as every version since the digest was), a pickled version is not loaded."""
    marker = tmp_path / "ran"
    use_home(home)
    with mlflow.start_run():
        # Requirements given: MLflow would otherwise load the model to infer them, which runs the command.
        info = mlflow.pyfunc.log_model(name="model", python_model=_RunsACommand(f"touch {marker}"),
                                       registered_model_name="loyal-churn", pip_requirements=["mlflow"])
        seal(info.model_uri)
    assert not marker.exists()
    with pytest.raises(UnloadableModel, match="saved with pickle by an older Loyal.*train it again"):
        load_version("loyal-churn", str(info.registered_model_version))
    assert not marker.exists()
