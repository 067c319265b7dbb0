"""Training the recommender, end to end: tune (optionally), fit the `for_you` and `discover` re-rankers, measure
them beside every baseline, log everything to MLflow, register `loyal-recommender` and decide on `champion`.

Windows, for a training cutoff C (`--train-end`):
- tuning and the champion decision: the validation window [C - 30, C), models fitted before C - 30;
- the model that is registered: fitted on everything before C;
- the test window [C, C + 30), measured only when the data reaches past C (evaluation; never used to choose).

The current champion is measured on the same validation window, and the gate in `champion.yaml` decides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from loyal.dates import midnight
from loyal.errors import LoyalError
from loyal.locking import writes_home
from loyal.features.compute import DAY_US
from loyal.features.engines import purchase_history
from loyal.schema import CUSTOMER_ID, ITEM_ID, ORDER_ID, TIMESTAMP
from loyal.store import read_table
from loyal.tracking import use_home
from loyal.training import plots
from loyal.training.recommender.evaluate import (
    TEST_DAYS,
    Interactions,
    K,
    difference_interval,
    evaluate_recommenders,
    metrics_at_k,
    report_markdown,
    split,
    top_k,
)
from loyal.training.family import Trained, train
from loyal.training.recommender.rails import ARTIFACT, MODEL_NAME, RERANKED, Recommender
from loyal.training.recommender.ranker import (
    VIEWS,
    FeastFeatures,
    FeatureSource,
    LabelledStage,
    RankerConfig,
    Reranker,
    Stage,
)
from loyal.training.recommender.models import BASELINES, from_recipe, recipe
from loyal.training.recommender.replay import replay, window_orders, with_sessions
from loyal.training.registry import (
    Champion,
    Decision,
    champion_version,
    decided,
    load_gate,
)
from loyal.training.tuning import (
    BASELINE_SPACES,
    Validation,
    baseline_from,
    check_workers,
    ranker_from,
    tune_baseline,
    tune_ranker,
)

FEATURE_SERVICE = "offers_v1"
RAIL_VIEW = RERANKED  # the rail each re-ranker answers, and the view it is judged in
NDCG = f"ndcg@{K}"


def _transactions(home: Path) -> pd.DataFrame:
    transactions = read_table(home, "transactions")
    if transactions is None or transactions.empty:
        raise LoyalError(f"no transactions under {home}: run `loyal ingest` first")
    return transactions


def check_cutoff(transactions: pd.DataFrame, cutoff) -> pd.Timestamp:
    """The cutoff as a UTC midnight, when the data hold 90 days before it (three 30-day windows: the network's
    labels, validation, and the history before them) and it is no later than the day after the data's last."""
    cutoff = midnight(cutoff)
    first, last = transactions[TIMESTAMP].min(), transactions[TIMESTAMP].max()
    if cutoff - pd.Timedelta(days=90) < first or cutoff > last + pd.Timedelta(days=1):
        raise LoyalError(
            f"the cutoff {cutoff.date()} needs 90 days of data before it and none after the data's last day: "
            f"the data runs from {first.date()} to {last.date()}"
        )
    return cutoff


class _Fitted:
    """A model fitted elsewhere (the re-rankers, whose stages are shared), shown to the evaluation as fitted."""

    def __init__(self, model):
        self.model = model

    def fit(self, train):
        return self

    def score(self, customers):
        return self.model.score(customers)


class _Registered:
    """A registered recommender scoring another window's customers: their histories mapped onto its catalogue (items
    it never saw ranked last), a customer without a history there given its trending list (as the service answers
    them), their features those of the window's stage."""

    def __init__(self, recommender: Recommender, rail: str, stage: Stage):
        self.recommender, self.rail, self.stage = recommender, rail, stage
        self.columns = recommender.items.get_indexer(stage.train.items)

    def fit(self, train):
        return self

    def score(self, customers: np.ndarray) -> np.ndarray:
        window, features = self.stage.rows(customers)
        mapped = self.columns[window.purchases["item"].to_numpy()]
        kept = window.purchases[mapped >= 0].assign(item=mapped[mapped >= 0])
        lines = Interactions.of(window.customers, self.recommender.items, kept, window.cutoff)
        known = np.diff(lines.counts.indptr) > 0
        theirs = np.tile(self.recommender.trending_scores.astype(np.float64), (len(customers), 1))
        if known.any():
            rows = np.flatnonzero(known)
            theirs[known] = self.recommender.scores(lines.rows(rows), features[rows], self.rail)
        scores = np.full((len(customers), len(self.columns)), -np.inf)
        seen = self.columns >= 0
        scores[:, seen] = theirs[:, self.columns[seen]]
        return scores


def _champion_models(champion: Champion, train, stages) -> tuple[dict, str]:
    """The champion's two rails, ready to measure on the validation window. A champion trained before the window
    opened is measured as registered; a later one has seen the window, so its configurations are refitted on the
    challenger's stages instead, which leaves only the recipe to compare."""
    if champion.trained_to <= str(train.cutoff.date()):
        return ({f"champion_{rail}": _Registered(champion.model, rail, stages[1]) for rail in RAIL_VIEW},
                "as registered")
    served = getattr(champion.model, "served", {})
    return ({f"champion_{rail}": from_recipe(recipe(served[rail])) if rail in served
             else _Fitted(Reranker(getattr(champion.model, rail).config).fit_stages(*stages)) for rail in RAIL_VIEW},
            "its configuration refitted on the same window, which it had learnt from")


PENALTIES = (0.0, 0.1, 0.2, 0.4, 0.8)  # the discover popularity penalties tried on the validation window


def _choose_penalty(discover: Reranker, validation: Validation) -> dict:
    """The popularity penalty `discover` takes: the one of PENALTIES whose NDCG@10 in the explore view of the
    validation window is highest (the larger on a tie: the wider lists), with every one tried. The penalty only
    moves the network's scores, so nothing is fitted again; the test window is never read."""
    tried = {}
    for penalty in PENALTIES:
        discover.config = replace(discover.config, popularity_penalty=penalty)
        tried[penalty] = round(validation.ndcg(discover.score(validation.test.customers), "explore"), 4)
    best = max(tried.values())
    return {"chosen": max(p for p, value in tried.items() if value == best),
            "validation_ndcg_at_10": {str(p): value for p, value in tried.items()}}


SESSION_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # how far the session may move for_you: tried on validation
SESSION_BLOCK = 2048  # orders ranked at once: whole-catalogue scores of a block stay small


def _choose_session_weight(recommender: Recommender, transactions: pd.DataFrame, events: pd.DataFrame | None,
                           validation: Validation) -> dict:
    """The session weight `for_you` takes: the one of SESSION_WEIGHTS whose per-order NDCG@10 is highest over the
    validation window's orders preceded by a session, each replayed from its customer's state just before it (as
    `loyal evaluate realtime` replays the test window; the smaller on a tie: a session moves the rail only as far
    as it earns). `recommender`: the validation window's, fitted before it; the test window is never read."""
    start = validation.train.cutoff
    end = start + pd.Timedelta(days=TEST_DAYS)
    nothing = {"chosen": 0.0, "orders": 0,
               "why": "no order of the validation window was preceded by a view or an add-to-cart"}
    if events is None or not ((events[TIMESTAMP] >= start - pd.Timedelta(days=TEST_DAYS))
                              & (events[TIMESTAMP] < end)).any():
        return nothing
    known = set(purchase_history(transactions, start)[CUSTOMER_ID])
    lines = window_orders(transactions, start, end, known)
    orders = with_sessions(replay(lines, purchase_history(transactions, end), recommender.items, None), events)
    browsed = np.flatnonzero(np.diff(orders.before.session.indptr) > 0)
    if not len(browsed):
        return nothing
    orders = orders.rows(browsed)
    features = recommender.stage.customer_features[validation.train.customers.get_indexer(orders.customers)]
    # Every order has a history and a session, so `rank` would answer each from its whole-catalogue scores plus the
    # weighted affinity: the scores are computed once per block, and only the sum is made per weight.
    recommender.session_weight = 0.0
    ndcg = {weight: [] for weight in SESSION_WEIGHTS}
    for block in np.array_split(np.arange(len(browsed)), -(-len(browsed) // SESSION_BLOCK)):
        state = orders.before.rows(block)
        scores, affinity = recommender.scores(state, features[block], "for_you"), recommender.session_affinity(state)
        for weight in SESSION_WEIGHTS:
            ndcg[weight].append(metrics_at_k(top_k(scores + weight * affinity, K), [orders.items[i] for i in block],
                                             K)[NDCG])
    tried = {weight: round(float(np.concatenate(values).mean()), 4) for weight, values in ndcg.items()}
    best = max(tried.values())
    return {"chosen": min(w for w, value in tried.items() if value == best), "orders": int(len(browsed)),
            "validation_ndcg_at_10": {str(w): value for w, value in tried.items()}}


def _baselines(tuned: dict[str, dict]) -> dict:
    """Unfitted baselines by name: the defaults, and each tuned one once per view it was tuned for."""
    models = {make().name: make() for make in BASELINES}
    for label, (name, params) in tuned.items():
        models[label] = baseline_from(name, params)
        models[label].name = label  # what the reports and a rail it answers call it
    return models


def _best_baseline(report: dict, baselines: list[str], view: str) -> str:
    return max(baselines, key=lambda n: report["models"][n][view][NDCG]["value"])


def _compare(report: dict, values: dict, draws: int, baselines: list[str]) -> dict:
    """Each rail against the best baseline in its view: the paired difference in NDCG@10, with its interval."""
    comparison = {}
    for rail, view in RAIL_VIEW.items():
        best = _best_baseline(report, baselines, view)
        comparison[rail] = {
            "view": view,
            "best_baseline": best,
            "model": report["models"][rail][view][NDCG]["value"],
            "baseline": report["models"][best][view][NDCG]["value"],
            "difference": difference_interval(values[rail][view][NDCG], values[best][view][NDCG], draws),
            "coverage": report["models"][rail][view]["coverage"]["value"],
        }
    return comparison


def _choose(report: dict, baselines: list[str]) -> dict[str, dict]:
    """Which recipe answers each rail, and why. A re-ranked rail: the re-ranker, unless a baseline did better in its
    view on the validation window (the best of them then answers it); the other rails have one recipe each."""
    rails = {}
    for rail, view in RAIL_VIEW.items():
        best = _best_baseline(report, baselines, view)
        model, baseline = (report["models"][name][view][NDCG]["value"] for name in (rail, best))
        if model >= baseline:
            rails[rail] = {"recipe": rail, "why": f"the re-ranker: NDCG@10 {model:.3f} on the validation window, "
                                                  f"best baseline {best} {baseline:.3f}"}
        else:
            rails[rail] = {"recipe": best, "why": f"baseline {best}: NDCG@10 {baseline:.3f} on the validation "
                                                  f"window, above the re-ranker's {model:.3f}"}
    rails["buy_again"] = {"recipe": "personal_frequency", "why": "the customer's own purchases, time-decayed"}
    rails["similar_items"] = {"recipe": "item_knn_bm25", "why": "item-to-item BM25 similarity"}
    rails["trending"] = {"recipe": "trending_7d", "why": "the most distinct buyers in the last week"}
    return rails


def _against_champion(report: dict, values: dict, draws: int, champion: Champion, compared: str,
                      chosen: dict[str, dict]) -> dict:
    """Each re-ranked rail, as the challenger would answer it (`chosen`), against the champion's, in its view:
    NDCG@10 with the paired difference, and coverage."""
    out = {"version": champion.version, "trained_to": champion.trained_to, "compared": compared}
    for rail, view in RAIL_VIEW.items():
        name = chosen[rail]["recipe"]
        mine, its = report["models"][name][view], report["models"][f"champion_{rail}"][view]
        out[rail] = {"view": view, "challenger": mine[NDCG]["value"], "champion": its[NDCG]["value"],
                     "difference": difference_interval(values[name][view][NDCG],
                                                       values[f"champion_{rail}"][view][NDCG], draws),
                     "coverage": {"challenger": mine["coverage"]["value"], "champion": its["coverage"]["value"]}}
    return out


def fit_and_evaluate(
    home: Path, cutoff, trials: int = 0, draws: int = 1000, features: FeatureSource | None = None,
    configs: dict[str, RankerConfig] | None = None, champion: Champion | None = None, tuning_workers: int = 1,
) -> Trained:
    """Tune on the validation window (with `trials` per study, unless `configs` gives the re-rankers' settings per
    view), measure on it beside the baselines and `champion`, fit on everything before the cutoff, and measure on
    the test window when the data reaches it."""
    began = time.perf_counter()
    transactions = _transactions(home)
    cutoff = check_cutoff(transactions, cutoff)
    features = features or FeastFeatures(home)
    train, test = split(transactions, cutoff)
    validation = Validation.before(train)
    stages = (LabelledStage.before(validation.train, features), Stage(validation.train, features))
    tag = str(cutoff.date())

    tuned_baselines: dict[str, tuple[str, dict]] = {}
    given = configs is not None
    configs = dict(configs) if given else {view: RankerConfig(view=view) for view in VIEWS}
    tuning = {}
    tuning_began = time.perf_counter()
    if trials and not given:
        for view in VIEWS:
            for name in BASELINE_SPACES:
                study = tune_baseline(home, name, view, validation, trials, tag, tuning_workers)
                tuned_baselines[f"{name}_tuned_{view}"] = (name, study.best_params)
                tuning[f"{name}_{view}"] = {"best_ndcg": round(study.best_value, 4), "params": study.best_params,
                                            "trials": len(study.trials)}
            study = tune_ranker(home, view, validation, features, trials, tag, stages, tuning_workers)
            configs[view] = ranker_from(study.best_params, view)
            tuning[f"reranker_{view}"] = {"best_ndcg": round(study.best_value, 4), "params": study.best_params,
                                          "trials": len(study.trials),
                                          "pruned": sum(t.state.name == "PRUNED" for t in study.trials)}
    tuning_seconds = time.perf_counter() - tuning_began

    # The validation window: what the champion decision reads.
    rerankers = {rail: Reranker(configs[view], features).fit_stages(*stages) for rail, view in RAIL_VIEW.items()}
    penalty = None
    if configs["explore"].popularity_penalty is None:  # not given: chosen on the validation window
        penalty = _choose_penalty(rerankers["discover"], validation)
        configs["explore"] = replace(configs["explore"], popularity_penalty=penalty["chosen"])
        rerankers["discover"].config = configs["explore"]
    baselines = _baselines(tuned_baselines)
    models = baselines | {rail: _Fitted(m) for rail, m in rerankers.items()}
    if champion is not None:
        rivals, compared = _champion_models(champion, validation.train, stages)
        models |= rivals
    validation_report, validation_values = evaluate_recommenders(validation.train, validation.test, models, draws)
    validation_report["comparison"] = _compare(validation_report, validation_values, draws, list(baselines))
    chosen = _choose(validation_report, list(baselines))
    if champion is not None:
        validation_report["champion"] = _against_champion(validation_report, validation_values, draws, champion,
                                                          compared, chosen)
    # The session's weight, on the validation window's orders, with for_you as the validation window answers it.
    answering = {"for_you": models[chosen["for_you"]["recipe"]]} if chosen["for_you"]["recipe"] != "for_you" else {}
    session = _choose_session_weight(Recommender(rerankers["for_you"], rerankers["discover"], answering),
                                     transactions, read_table(home, "events"), validation)

    # The model itself: the network learns on the validation window, the sources see everything before the cutoff.
    fit_began = time.perf_counter()
    labelled = LabelledStage(stages[1], train.earlier(TEST_DAYS)[1])
    current = Stage(train, features)
    rerankers = {rail: Reranker(configs[view], features).fit_stages(labelled, current)
                 for rail, view in RAIL_VIEW.items()}
    served = {rail: _baselines(tuned_baselines)[made["recipe"]].fit(train) for rail, made in chosen.items()
              if rail in RAIL_VIEW and made["recipe"] != rail}
    recommender = Recommender(rerankers["for_you"], rerankers["discover"], served,
                              session_weight=session["chosen"])
    fit_seconds = time.perf_counter() - fit_began

    report = {
        "cutoff": tag,
        "train_window": {"start": str(transactions[TIMESTAMP].min().date()), "end": tag},
        "trials_per_study": trials,
        "configs": {rail: vars(configs[view]) | {"popularity_penalty": configs[view].penalty}
                    for rail, view in RAIL_VIEW.items()},
        "tuned_baselines": {label: params for label, (_, params) in tuned_baselines.items()},
        "tuning": tuning,
        "discover_popularity_penalty": penalty or {"chosen": configs["explore"].penalty, "given": True},
        "session_weight": session,
        "rails": chosen,
        "validation": validation_report,
        "seconds": {"tuning": round(tuning_seconds, 1), "fit": round(fit_seconds, 1)},
    }
    if len(test.customers):
        models = _baselines(tuned_baselines) | {rail: _Fitted(m) for rail, m in rerankers.items()}
        test_report, test_values = evaluate_recommenders(train, test, models, draws)
        test_report["comparison"] = _compare(test_report, test_values, draws, list(_baselines(tuned_baselines)))
        report["test"] = test_report
    report["seconds"]["total"] = round(time.perf_counter() - began, 1)
    return Trained(recommender, report, example_history(recommender))


def example_history(recommender: Recommender) -> pd.DataFrame:
    """A made-up customer's history of two purchases, the input example logged with the model: a real customer's
    would put their id and purchases in the registered artifact."""
    at = recommender.cutoff.value // 1000
    return pd.DataFrame({CUSTOMER_ID: ["example-customer"] * 2, ITEM_ID: [str(i) for i in recommender.items[:2]],
                         TIMESTAMP: [at - 30 * DAY_US, at - DAY_US], ORDER_ID: ["example-order-1", "example-order-2"]})


def markdown(report: dict) -> str:
    """The report: the test window when measured (else the validation window), each rail against its best
    baseline, then every model in both views."""
    lines = ["# Which recipe answers each rail", ""]
    lines += [f"- **{rail}**: {made['recipe']} ({made['why']})" for rail, made in report["rails"].items()]
    lines.append("")
    for window in ("test", "validation"):
        if window not in report:
            continue
        part = report[window]
        lines += [f"# {window.capitalize()} window", ""]
        for rail, c in part["comparison"].items():
            d = c["difference"]
            lines.append(
                f"- **{rail}** ({c['view']} view): NDCG@10 {c['model']:.3f} against {c['best_baseline']} "
                f"{c['baseline']:.3f}; difference {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]; "
                f"coverage {c['coverage']:.3f}"
            )
        if "champion" in part:
            rival = part["champion"]
            lines.append(f"- against the champion (version {rival['version']}, {rival['compared']}):")
            for rail in RAIL_VIEW:
                c, d = rival[rail], rival[rail]["difference"]
                lines.append(f"  - {rail}: NDCG@10 {c['challenger']:.3f} vs {c['champion']:.3f}, difference "
                             f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]; coverage "
                             f"{c['coverage']['challenger']:.3f} vs {c['coverage']['champion']:.3f}")
        lines += ["", report_markdown(part).replace("# Recommenders", "## Recommenders"), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ MLflow


def _decide(name: str, report: dict, gate: dict | None = None) -> Decision:
    """Every rail is answered by its best recipe on the validation window (the re-ranker or a baseline), so a
    first model is always promoted: a shop is never left without an answer. Against a champion, promote when it was
    not trained on later data and the gate holds: for_you better by the margin, discover and every rail's coverage
    not worse than their tolerances. Otherwise keep the champion, giving every reason."""
    gate = (gate or load_gate())["recommender"]
    summary = "; ".join(f"{rail}: {made['recipe']} ({made['why']})" for rail, made in report["rails"].items())
    failures = []
    current = champion_version(name)
    if current is not None and current.tags.get("train_window_end", "") > report["cutoff"]:
        failures.append(f"the champion (version {current.version}) was trained on later data "
                        f"(to {current.tags['train_window_end']})")
    rival = report["validation"].get("champion")
    against = ""
    if rival is not None:
        guardrails = gate["guardrails"]
        against = f"against the champion (version {rival['version']}, {rival['compared']}): " + "; ".join(
            f"{rail} NDCG@10 {c['challenger']:.3f} vs {c['champion']:.3f}, difference "
            f"{c['difference']['value']:+.4f} [{c['difference']['low']:+.4f}, {c['difference']['high']:+.4f}], "
            f"coverage {c['coverage']['challenger']:.3f} vs {c['coverage']['champion']:.3f}"
            for rail, c in ((r, rival[r]) for r in RAIL_VIEW))
        if rival["for_you"]["difference"]["value"] < gate["margin"]:
            failures.append(f"for_you is not better than the champion's by the margin {gate['margin']}")
        if rival["discover"]["difference"]["value"] < -guardrails["discover_ndcg"]:
            failures.append(f"discover would get worse by more than {guardrails['discover_ndcg']}")
        failures += [f"coverage of {rail} would fall by more than {guardrails['coverage']}" for rail in RAIL_VIEW
                     if rival[rail]["coverage"]["challenger"]
                     < rival[rail]["coverage"]["champion"] - guardrails["coverage"]]
    return decided(failures, against, current, f"every rail answered by its best recipe ({summary})",
                   f"every rail answered by its best recipe ({summary}), better than the champion by at least the "
                   f"margin {gate['margin']} on for_you, no guardrail worse")


def _log_report(report: dict) -> None:
    metrics = {}
    for window in ("validation", "test"):
        if window not in report:
            continue
        for model, figures in report[window]["models"].items():
            for view in VIEWS:
                for metric, figure in figures[view].items():
                    metrics[f"{window}.{model}.{view}.{metric.replace('@', '_at_')}"] = figure["value"]
        for rail, c in report[window]["comparison"].items():
            for part in ("value", "low", "high"):
                metrics[f"{window}.{rail}.difference_to_best_baseline.{part}"] = c["difference"][part]
        rival = report[window].get("champion")
        if rival is not None:
            mlflow.set_tag("compared_with_champion", f"version {rival['version']}, {rival['compared']}")
            for rail in RAIL_VIEW:
                for part in ("value", "low", "high"):
                    metrics[f"{window}.{rail}.difference_to_champion.{part}"] = rival[rail]["difference"][part]
    metrics |= {f"seconds.{k}": v for k, v in report["seconds"].items()}
    mlflow.log_metrics(metrics)
    mlflow.log_dict(report, "evaluation.json")
    mlflow.log_text(markdown(report), "evaluation.md")
    shown = report.get("test", report["validation"])
    models = shown["models"]
    plots.log(plots.recall_at_k({n: m["recall_curve_all"] for n, m in models.items()}, "all"),
                      "plots/recall_at_k.png")
    plots.log(plots.bars({n: m["all"]["coverage"]["value"] for n, m in models.items()},
                                 "Catalogue coverage of the top 10 (all view)", "share of the catalogue"),
                      "plots/coverage.png")
    plots.log(plots.bars({n: m["mean_buyers_of_top_10"] for n, m in models.items()},
                                 "Popularity bias: mean distinct buyers of the recommended items",
                                 "distinct buyers before the cutoff"), "plots/popularity_bias.png")


@writes_home("evaluate recommender")
def log_evaluation(home: Path, report: dict) -> str:
    """`loyal evaluate recommender`'s report as an MLflow run of its own (tag loyal.kind=evaluation): the same
    metrics, report and plots a training run logs, so the MLflow UI shows them side by side. Returns the run id."""
    use_home(home)
    with mlflow.start_run(run_name=f"evaluate-recommender-{report['cutoff']}") as run:
        mlflow.set_tags({"loyal.kind": "evaluation", "model_family": "recommender", "cutoff": report["cutoff"]})
        mlflow.log_params({"cutoff": report["cutoff"], "trials_per_study": report["trials_per_study"]})
        _log_report(report)
    return run.info.run_id


@dataclass
class RecommenderFamily:
    """`loyal-recommender` on the model-family contract (training/family.py)."""
    train_end: object
    trials: int = 0
    draws: int = 1000
    configs: dict[str, RankerConfig] | None = None
    tuning_workers: int = 1
    name: str = MODEL_NAME
    family: str = "recommender"
    artifact: str = ARTIFACT

    def fit_and_evaluate(self, home: Path, champion: Champion | None) -> Trained:
        return fit_and_evaluate(home, self.train_end, self.trials, self.draws, configs=self.configs,
                                champion=champion, tuning_workers=self.tuning_workers)

    def run_name(self, report: dict) -> str:
        return f"recommender-{report['cutoff']}"

    def tags(self, report: dict) -> dict[str, str]:
        return {"model_family": self.family, "feature_service": FEATURE_SERVICE,
                "train_window_start": report["train_window"]["start"], "train_window_end": report["cutoff"]} | {
                f"rail.{rail}": made["recipe"] for rail, made in report["rails"].items()}

    def params(self, report: dict) -> dict:
        return {"train_end": report["cutoff"], "trials_per_study": self.trials} | {
            f"{rail}.{key}": value for rail, config in report["configs"].items() for key, value in config.items()
        } | {f"{label}.{k}": v for label, params in report["tuned_baselines"].items() for k, v in params.items()}

    def log(self, report: dict) -> None:
        _log_report(report)

    def signature(self, trained: Trained):
        model, example = trained.model, trained.example
        answer = model.recommend(example, example[CUSTOMER_ID].unique(), "for_you", 2, model.cutoff)
        return infer_signature(example, answer, params={"rail": "for_you", "k": K, "at": model.cutoff.isoformat()})

    def decide(self, report: dict, gate: dict) -> Decision:
        return _decide(self.name, report, gate)

    def summary(self, report: dict) -> dict:
        return {"rails": {rail: made["recipe"] for rail, made in report["rails"].items()}}


@writes_home("train recommender")
def train_recommender(home: Path, train_end, trials: int = 0, draws: int = 1000,
                      configs: dict[str, RankerConfig] | None = None, gate: dict | None = None,
                      tuning_workers: int = 1) -> dict:
    """Train, log, register `loyal-recommender` and decide on `champion` (measured against the current one), its
    trials run by `tuning_workers` processes. Returns a summary for the command line."""
    check_workers(tuning_workers)
    return train(RecommenderFamily(train_end, trials, draws, configs, tuning_workers), home, gate)
