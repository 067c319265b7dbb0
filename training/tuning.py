"""Tuning with Optuna, on the window before the test window and never on it.

For a model to be used from a cutoff C, every trial fits on the purchases before C - 30 days and is measured on
[C - 30, C): the protocol's 30-day window, one window earlier. Each study optimises NDCG@10 in one view ("all" for
`for_you`, "explore" for `discover`). The tuned baselines get the same number of trials as the re-ranker, per view.
Studies live in the home's SQLite database, or in a shared one (LOYAL_OPTUNA_STORAGE, PostgreSQL say), named by
model, view and cutoff, so an interrupted tuning run resumes where it stopped and workers elsewhere join a study by its
name (`--tuning-workers N` runs N here, each in a process of its own); the re-ranker's trials report validation NDCG
while they train, and Optuna's median pruner stops the poor ones early.

The churn network is tuned the same way one snapshot earlier: its trials train on the monthly snapshots before the
last two and are measured by ROC-AUC on the second to last, so the last, where its champion decision is taken,
stays unseen by tuning.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd
import torch

from loyal.errors import LoyalError
from loyal.home import OPTUNA_ENV, Home
from loyal.training.churn.evaluate import roc_auc
from loyal.training.churn.model import ChurnConfig, ChurnModel
from loyal.training.recommender.evaluate import TEST_DAYS, Interactions, K, TestSet, evaluate_scores, test_set
from loyal.training.recommender.ranker import LABEL_DAYS, FeatureSource, LabelledStage, RankerConfig, Reranker, Stage
from loyal.training.recommender.models import (
    ALS,
    BPR,
    EASE,
    ALSConfig,
    BPRConfig,
    EASEConfig,
    ItemKNN,
    ItemKNNConfig,
    PersonalFrequency,
    PersonalFrequencyConfig,
)

PRUNE_EVERY = 10  # epochs between the re-ranker's validation reports

# The baselines' search spaces: each turns a trial into an unfitted model.
BASELINE_SPACES: dict[str, Callable[[optuna.Trial], object]] = {
    "personal_frequency": lambda t: PersonalFrequency(PersonalFrequencyConfig(
        half_life_days=t.suggest_float("half_life_days", 7, 365, log=True),
        fill_recent_days=t.suggest_float("fill_recent_days", 7, 90, log=True),
    )),
    "item_knn_bm25": lambda t: ItemKNN(ItemKNNConfig(
        neighbours=t.suggest_int("neighbours", 10, 500, log=True),
        k1=t.suggest_float("k1", 0.2, 3.0),
        b=t.suggest_float("b", 0.0, 1.0),
    )),
    "ease": lambda t: EASE(EASEConfig(l2=t.suggest_float("l2", 1.0, 5000.0, log=True))),
    "als": lambda t: ALS(ALSConfig(
        factors=t.suggest_categorical("factors", [16, 32, 64, 128]),
        regularization=t.suggest_float("regularization", 1e-3, 1.0, log=True),
        alpha=t.suggest_float("alpha", 0.1, 40.0, log=True),
        iterations=t.suggest_int("iterations", 5, 30),
    )),
    "bpr": lambda t: BPR(BPRConfig(
        factors=t.suggest_categorical("factors", [16, 32, 64, 128]),
        learning_rate=t.suggest_float("learning_rate", 1e-3, 0.1, log=True),
        regularization=t.suggest_float("regularization", 1e-4, 0.1, log=True),
        iterations=t.suggest_int("iterations", 20, 150, step=10),
    )),
}


def ranker_config(trial: optuna.Trial, view: str) -> RankerConfig:
    return RankerConfig(
        view=view,
        candidates_per_source=trial.suggest_int("candidates_per_source", 20, 120, step=10),
        hidden=trial.suggest_categorical("hidden", [16, 32, 64, 128]),
        epochs=trial.suggest_int("epochs", PRUNE_EVERY, 50, step=PRUNE_EVERY),
        learning_rate=trial.suggest_float("learning_rate", 5e-4, 2e-2, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
    )


@dataclass
class Validation:
    """The tuning window of a training matrix: fit before C - 30 days, measure on [C - 30, C)."""

    train: Interactions
    test: TestSet

    @classmethod
    def before(cls, train: Interactions, days: int = TEST_DAYS) -> Validation:
        earlier, later = train.earlier(days)
        return cls(earlier, test_set(earlier, later))

    def ndcg(self, scores: np.ndarray, view: str) -> float:
        return float(evaluate_scores(scores, self.train, self.test)[view][f"ndcg@{K}"].mean())


def storage(home: Path) -> optuna.storages.BaseStorage:
    """LOYAL_OPTUNA_STORAGE (an SQLAlchemy URL: postgresql+psycopg://USER@HOST:PORT/DB), else the home's SQLite
    file; SQLite's writers wait for each other rather than fail, as several tuning workers write at once."""
    url = os.environ.get(OPTUNA_ENV) or f"sqlite:///{Home(home).optuna_db}"
    waits = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=waits)
    except Exception as error:  # noqa: BLE001 - an unreachable database, a bad URL: one line, not a traceback
        raise LoyalError(f"the Optuna storage cannot be used ({OPTUNA_ENV}): {str(error).splitlines()[0]}") from None


def _study(home: Path, name: str, seed: int, worker: int = 0) -> optuna.Study:
    """The study `name`, created or joined. Each worker samples with a seed of its own; `constant_liar` makes a
    worker's sampler count the trials others are running, so that workers spread out rather than repeat."""
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna.create_study(
        study_name=name,
        storage=storage(home),
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed + worker, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def check_workers(workers: int) -> None:
    if workers < 1:
        raise LoyalError(f"--tuning-workers must be at least 1, not {workers}")


def _run(study: optuna.Study, objective, trials: int, home: Path | None = None, workers: int = 1,
         seed: int = 0) -> optuna.Study:
    """Run the trials the study still lacks (a resumed study counts the finished and pruned ones), in `workers`
    processes: this one and workers - 1 forked from it, which share the objective's data and split the trials.
    Every worker also stops once the study holds `trials` finished ones, so a worker that joined the study from
    another machine does not run it over its budget."""
    done = [t for t in study.trials if t.state in FINISHED]
    remaining = max(trials - len(done), 0)
    if not remaining:
        return study
    budget = optuna.study.MaxTrialsCallback(trials, states=FINISHED)
    workers = max(1, min(workers, remaining))
    if workers == 1:
        study.optimize(objective, n_trials=remaining, callbacks=[budget], catch=())
        return study
    shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    threads = torch.get_num_threads()
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=_worker, args=(home, study.study_name, objective, shares[i], budget, seed, i,
                                                    threads // workers), daemon=True)
                for i in range(1, workers)]
    for child in children:
        child.start()
    try:
        torch.set_num_threads(max(1, threads // workers))
        study.optimize(objective, n_trials=shares[0], callbacks=[budget], catch=())
    finally:
        torch.set_num_threads(threads)
        for child in children:
            child.join()
    failed = [child.exitcode for child in children if child.exitcode != 0]
    if failed:
        raise LoyalError(f"{len(failed)} of {workers} tuning workers of {study.study_name} failed (exit codes "
                         f"{failed}); the study keeps the trials they finished")
    return study


def _worker(home: Path, name: str, objective, trials: int, budget, seed: int, index: int, threads: int) -> None:
    """A forked tuning worker: its own connection to the study, its own sampler seed, its share of the CPU. It
    leaves by os._exit, so that none of the parent's exit handlers (temporary folders, MLflow runs) run twice."""
    code = 0
    try:
        torch.set_num_threads(max(1, threads))
        study = _study(home, name, seed, index)
        study.optimize(objective, n_trials=trials, callbacks=[budget], catch=())
    except BaseException as error:  # noqa: BLE001 - reported to the parent by the exit code, and here in one line
        print(f"loyal: tuning worker {index} of {name}: {type(error).__name__}: {error}", file=sys.stderr)
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def tune_baseline(home: Path, name: str, view: str, validation: Validation, trials: int, tag: str,
                  workers: int = 1) -> optuna.Study:
    """`trials` trials of one baseline for one view; the study is named `recommender-<name>-<view>-<tag>`."""
    space = BASELINE_SPACES[name]

    def objective(trial: optuna.Trial) -> float:
        model = space(trial).fit(validation.train)
        return validation.ndcg(model.score(validation.test.customers), view)

    return _run(_study(home, f"recommender-{name}-{view}-{tag}", seed=0), objective, trials, home, workers)


def tune_ranker(
    home: Path, view: str, validation: Validation, features: FeatureSource, trials: int, tag: str,
    stages: tuple[LabelledStage, Stage] | None = None, workers: int = 1,
) -> optuna.Study:
    """`trials` trials of the re-ranker for one view. Its network learns on the window before the validation
    window, with its sources fitted before that; it is measured on the validation window, with the sources fitted
    on the validation's training matrix. Every trial shares those two `stages` (built here when not given)."""
    labelled, current = stages or (LabelledStage.before(validation.train, features, LABEL_DAYS),
                                   Stage(validation.train, features))

    def objective(trial: optuna.Trial) -> float:
        def report(epoch: int, model: Reranker) -> None:
            if (epoch + 1) % PRUNE_EVERY == 0 and epoch + 1 < model.config.epochs:
                trial.report(validation.ndcg(model.score(validation.test.customers), view), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        model = Reranker(ranker_config(trial, view), features).fit_stages(labelled, current, report)
        return validation.ndcg(model.score(validation.test.customers), view)

    return _run(_study(home, f"recommender-reranker-{view}-{tag}", seed=0), objective, trials, home, workers)


def baseline_from(name: str, params: dict):
    """The baseline `name` with the parameters of a finished trial."""
    return BASELINE_SPACES[name](optuna.trial.FixedTrial(params))


def ranker_from(params: dict, view: str) -> RankerConfig:
    return ranker_config(optuna.trial.FixedTrial(params), view)


# ------------------------------------------------------------------------------------------------ churn


def churn_config(trial: optuna.Trial) -> ChurnConfig:
    return ChurnConfig(
        hidden=trial.suggest_categorical("hidden", [16, 32, 64, 128]),
        dropout=trial.suggest_float("dropout", 0.0, 0.4),
        epochs=trial.suggest_int("epochs", CHURN_REPORT_EVERY, 60, step=CHURN_REPORT_EVERY),
        learning_rate=trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        value_weight=trial.suggest_float("value_weight", 0.05, 1.0, log=True),
        batch=trial.suggest_categorical("batch", [128, 256, 512]),
    )


CHURN_REPORT_EVERY = 10  # epochs between the churn network's validation reports


def tune_churn(home: Path, train: pd.DataFrame, validation: pd.DataFrame, trials: int, tag: str,
               workers: int = 1) -> optuna.Study:
    """`trials` trials of the churn network, each trained on `train` and measured by ROC-AUC on `validation` (a
    snapshot before the one its champion decision is taken on); the study is named `churn-<tag>`."""

    def objective(trial: optuna.Trial) -> float:
        def report(epoch: int, model: ChurnModel) -> None:
            if (epoch + 1) % CHURN_REPORT_EVERY == 0 and epoch + 1 < model.config.epochs:
                trial.report(_auc(model, validation), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        return _auc(ChurnModel(churn_config(trial)).fit(train, validation, report), validation)

    return _run(_study(home, f"churn-{tag}", seed=0), objective, trials, home, workers)


def _auc(model: ChurnModel, frame: pd.DataFrame) -> float:
    return roc_auc(frame["churned"].to_numpy(), model.predict(frame)["churn_probability"].to_numpy())


def churn_from(params: dict) -> ChurnConfig:
    return churn_config(optuna.trial.FixedTrial(params))
