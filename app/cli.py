"""The `loyal` command line: each command parses its options and calls one function of the package.

Each command imports the layer that does its work inside its own body, the one place in Loyal that imports below
the top of a module: a command then loads only what it needs (`loyal ingest` loads neither Feast, torch nor MLflow,
about five seconds of imports)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from loyal.errors import LoyalError
from loyal.home import ENGINE_ENV, ONLINE_STORE_ENV, OWNER_ONLY, Home, loyal_home
from loyal.locking import BUSY_EXIT_CODE, HomeBusy, writing
from loyal.noise import silence_third_parties

app = typer.Typer(
    help="Loyal: recommendations, churn risk and personalised offers for retailers.\n\n"
    "Data lives under $LOYAL_HOME (default ./.loyal).",
    epilog="Example: loyal run --data ../shared/data/online_retail.csv.gz",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _every_command() -> None:
    # What any command writes (the home, a campaign list, scores) is about customers: for its owner's eyes only.
    os.umask(OWNER_ONLY)
    silence_third_parties()


def _fail(error: LoyalError) -> typer.Exit:
    # One line, no traceback: the user's mistake is theirs to fix, and the message says what it is. A home kept
    # busy by another command is not a mistake: 75 (EX_TEMPFAIL) says "try again later".
    typer.echo(f"loyal: {error}", err=True)
    return typer.Exit(code=BUSY_EXIT_CODE if isinstance(error, HomeBusy) else 2)


def main() -> None:
    """The `loyal` command: the app, with what the environment refuses said in one line, not a traceback."""
    from redis.exceptions import RedisError

    try:
        app()
    except RedisError as error:
        typer.echo(f"loyal: the Redis online store ({ONLINE_STORE_ENV}) cannot be used: {error}", err=True)
        sys.exit(2)
    except PermissionError as error:
        typer.echo(f"loyal: permission denied: {error.filename or error}", err=True)
        sys.exit(2)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        typer.echo(f"loyal: no space left on the disk ({error.filename or 'writing'}); nothing was committed", err=True)
        sys.exit(1)


def _print_json(result: dict) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


def _write_report(folder: Path, stem: str, report: dict, text: str) -> None:
    """A report as STEM.json and STEM.md in `folder`, each written beside its place and renamed into it."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".json", json.dumps(report, indent=2) + "\n"), (".md", text)):
        tmp = folder / f".{stem}{suffix}.tmp"
        tmp.write_text(content)
        os.replace(tmp, folder / f"{stem}{suffix}")


def _log_to_mlflow_run(summary: dict, prefix: str) -> None:
    """Under `mlflow run` (MLFLOW_RUN_ID set), record the summary's counts on that run."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return
    from loyal.tracking import log_counts

    log_counts(summary, prefix)


@app.command(
    epilog="Examples:\n\n"
    "  loyal ingest online-retail ../shared/data/online_retail.csv.gz\n\n"
    "  loyal ingest canonical my_export/            (a folder of transactions.csv, customers.csv, ...)\n\n"
    "  loyal ingest synthetic --customers 10000 --days 365 --seed 7",
)
def ingest(
    format: str = typer.Argument(..., help="online-retail, canonical or synthetic", metavar="FORMAT"),
    path: Optional[Path] = typer.Argument(None, help="the file (or, for canonical, a folder); not for synthetic"),
    customers: int = typer.Option(5_000, help="synthetic: how many customers"),
    days: int = typer.Option(365, help="synthetic: how many days of history"),
    items: int = typer.Option(3_000, help="synthetic: how many products"),
    seed: int = typer.Option(0, help="synthetic: random seed (the same seed gives the same data)"),
    campaigns: int = typer.Option(0, help="synthetic: past campaigns with planted effects (lists, control groups, "
                                  "outcomes; the truth under $LOYAL_HOME/ground_truth)"),
    earliest: datetime = typer.Option("1990-01-01", formats=["%Y-%m-%d"],
                                      help="rows dated before this day are set aside (the latest is a day after now)"),
    max_price: float = typer.Option(100_000.0, help="unit and item prices above this are set aside"),
    max_quantity: int = typer.Option(10_000, help="order lines of more units than this, either way, are set aside"),
) -> None:
    """Read a retailer's file into the canonical tables under $LOYAL_HOME and print a JSON summary.

    Rows that break the contract go to $LOYAL_HOME/quarantine with their reason; rows read = kept + quarantined.
    Ingesting the same file again changes nothing; a later file adds only its new rows.
    """
    from loyal.contract import Limits
    from loyal.ingest import FORMATS, IngestConfig, ingest_file, ingest_synthetic
    from loyal.synthetic import SyntheticConfig

    try:
        if not (max_price > 0 and max_quantity > 0):
            raise LoyalError("--max-price and --max-quantity must be positive")
        limits = Limits(earliest=earliest.replace(tzinfo=timezone.utc), max_price=max_price,
                        max_quantity=max_quantity)
        if format not in FORMATS:
            raise LoyalError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
        if format == "synthetic":
            if path is not None:
                raise LoyalError("synthetic takes no PATH: it generates its data (see --customers, --days, --seed)")
            summary = ingest_synthetic(SyntheticConfig(customers=customers, days=days, seed=seed, items=items,
                                                       campaigns=campaigns),
                                       loyal_home())
        else:
            if path is None:
                raise LoyalError(f"{format} needs a PATH: the file to ingest")
            summary = ingest_file(format, path, loyal_home(), IngestConfig(limits=limits))
    except LoyalError as error:
        raise _fail(error) from None
    _log_to_mlflow_run(summary, "ingest")
    _print_json(summary)


@app.command(
    epilog="Example:\n\n  LOYAL_HOME=/tmp/loyal loyal run --data ../shared/data/online_retail.csv.gz",
)
def run(
    data: Optional[Path] = typer.Option(
        None,
        help="the UCI Online Retail file (.csv, .csv.gz or .xlsx); default $LOYAL_DATA, else "
        "../shared/data/online_retail.csv.gz",
    ),
    customers: int = typer.Option(5_000, help="customers to generate where the data file is absent"),
) -> None:
    """Run the main job end to end on the default data (where it is absent: on synthetic data)."""
    from loyal.app.pipeline import MAIN_JOB_SYNTHETIC, default_data, run_main_job

    try:
        result = run_main_job(data or default_data(), loyal_home(), replace(MAIN_JOB_SYNTHETIC, customers=customers))
    except LoyalError as error:
        raise _fail(error) from None
    _log_to_mlflow_run(result["ingest"], "ingest")
    _log_to_mlflow_run(result["features"], "features")
    _print_json(result)


features_app = typer.Typer(
    help="The Feast feature store: compute features, fill the online store, read them back.\n\n"
    "The live Feast repo is $LOYAL_HOME/feast. The online store is SQLite; set "
    "LOYAL_ONLINE_STORE=redis://HOST:PORT for Redis.",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")


@contextlib.contextmanager
def _stale_warnings_to_stderr():
    """Stale-feature warnings become one `loyal: warning:` line each; the command still succeeds."""
    from loyal.features.online import StaleFeaturesWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StaleFeaturesWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, StaleFeaturesWarning):
            typer.echo(f"loyal: warning: {warning.message}", err=True)


@features_app.command(
    "build",
    epilog="Examples:\n\n  loyal features build\n\n  loyal features build --start 2011-01-01 --every 7",
)
def features_build(
    start: Optional[datetime] = typer.Option(
        None, formats=["%Y-%m-%d"], help="first snapshot date (default: the day after the first event)"
    ),
    end: Optional[datetime] = typer.Option(
        None, formats=["%Y-%m-%d"], help="last snapshot date (default: the day after the last event)"
    ),
    every: int = typer.Option(1, help="days between snapshots"),
    engine: Optional[str] = typer.Option(
        None, help="what runs the feature definitions: embedded (DuckDB, in this process) or spark "
                   "(default: $LOYAL_ENGINE, else embedded)"),
) -> None:
    """Compute every feature at each snapshot date from the canonical tables, write the offline data and apply
    the Feast repo. A row stamped T uses only events strictly before T. Prints the build's lineage record."""
    from loyal.features.repo import BuildConfig, build

    config = BuildConfig(start=start and start.date(), end=end and end.date(), every=every,
                         engine=_engine(engine))
    try:
        record = build(loyal_home(), config)
    except LoyalError as error:
        raise _fail(error) from None
    _log_to_mlflow_run(record, "features")
    _print_json(record)


@features_app.command("materialize")
def features_materialize(
    full: bool = typer.Option(False, "--full", help="rewrite every view from its earliest row, not incrementally"),
) -> None:
    """Fill the online store with the latest values of the last build; after new data, only what is new."""
    from loyal.features.repo import materialize

    try:
        _print_json(materialize(loyal_home(), full=full))
    except LoyalError as error:
        raise _fail(error) from None


@features_app.command(
    "historical",
    epilog="Example:\n\n  loyal features historical --entities entities.csv --output training.parquet\n\n"
    "entities.csv:  customer_id,event_timestamp\n               17850,2011-06-01",
)
def features_historical(
    entities: Path = typer.Option(..., help="CSV or parquet with customer_id and event_timestamp (and item_id "
                                  "for offers_v1)"),
    output: Path = typer.Option(..., help="where to write the features: .parquet or .csv"),
    service: Optional[str] = typer.Option(None, help="a FeatureService (churn_v1, offers_v1); default: every "
                                          "customer feature"),
) -> None:
    """The features of each (customer, time) row as they were at that time, through Feast's point-in-time join."""
    from loyal.features.repo import historical_features
    from loyal.readers import read_raw

    try:
        if output.suffix not in (".parquet", ".csv"):
            raise LoyalError(f"{output}: the output must end in .parquet or .csv")
        with _stale_warnings_to_stderr():
            frame = historical_features(loyal_home(), read_raw(entities), service)
        _write_atomically(frame, output)
    except LoyalError as error:
        raise _fail(error) from None
    typer.echo(json.dumps({"rows": len(frame), "columns": len(frame.columns), "output": str(output)}))


@features_app.command("show", epilog="Example:\n\n  loyal features show 17850")
def features_show(customer_id: str = typer.Argument(..., help="the customer's id")) -> None:
    """Print (JSON) what the online store holds for one customer, with the time each view is as of."""
    from loyal.features.repo import show

    try:
        with _stale_warnings_to_stderr():
            result = show(loyal_home(), customer_id)
    except LoyalError as error:
        raise _fail(error) from None
    _print_json(result)


def _evaluation(kind: str, measure, markdown, folder: Path | None = None, then=None) -> tuple[dict, object]:
    """`loyal evaluate KIND`: measure under the home's write lock, write the report pair KIND-CUTOFF.{md,json} (into
    `folder`, default $LOYAL_HOME/reports), then `then(report)` under the same lock; a LoyalError is one line."""
    try:
        with writing(loyal_home(), f"evaluate {kind}"):
            with _stale_warnings_to_stderr():
                report = measure()
            _write_report(folder or Home(loyal_home()).reports, f"{kind}-{report['cutoff']}", report,
                          markdown(report))
            return report, then(report) if then else None
    except LoyalError as error:
        raise _fail(error) from None


evaluate_app = typer.Typer(help="Measure models under the fixed protocol of DESIGN.md.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command(
    "recommender", epilog="Example:\n\n  loyal evaluate recommender --cutoff 2011-11-09 --trials 20"
)
def evaluate_recommender(
    cutoff: datetime = typer.Option(..., formats=["%Y-%m-%d"], help="train before this date, test on the 30 after"),
    trials: int = typer.Option(0, min=0, help="Optuna trials per study (each baseline and the re-ranker, per view)"),
    output: Optional[Path] = typer.Option(None, help="folder for the report (default $LOYAL_HOME/reports)"),
    draws: int = typer.Option(1000, min=10, help="bootstrap draws for the intervals"),
) -> None:
    """The `for_you` and `discover` re-rankers beside every baseline (and, with --trials, every tuned baseline),
    trained on the purchases before CUTOFF and measured on the next 30 days in the "all" and "explore" views;
    writes recommender-CUTOFF.md and .json, logs them with their plots to MLflow as a run of its own, and prints
    each rail's comparison with its best baseline."""
    from loyal.training.recommender.training import (
        fit_and_evaluate,
        log_evaluation,
        markdown,
    )

    report, run_id = _evaluation("recommender", lambda: fit_and_evaluate(loyal_home(), cutoff.date(), trials,
                                                                         draws).report,
                                 markdown, output, then=lambda report: log_evaluation(loyal_home(), report))
    _print_json({window: report[window]["comparison"] for window in ("validation", "test") if window in report}
                | {"mlflow_run_id": run_id})


@evaluate_app.command(
    "realtime", epilog="Example:\n\n  loyal evaluate realtime --cutoff 2011-11-09 --days 30"
)
def evaluate_realtime(
    cutoff: datetime = typer.Option(..., formats=["%Y-%m-%d"], help="train before this date, replay the days after"),
    days: int = typer.Option(30, min=1, help="how many days of orders to replay"),
    draws: int = typer.Option(1000, min=10, help="bootstrap draws for the intervals"),
    trials: int = typer.Option(0, min=0, help="Optuna trials per study for the model trained at the cutoff"),
) -> None:
    """What real time is worth: train the recommender at CUTOFF, replay the next DAYS' orders in time order through
    the code the service uses, and score each order of a customer known before the cutoff with the rail they would
    have seen just before it: the real-time champion, the same champion frozen at the cutoff, and real-time
    buy-again (per-order NDCG@10, both views, 95% intervals). Writes $LOYAL_HOME/reports/realtime-CUTOFF.md and
    .json and prints the JSON."""
    from loyal.training.recommender.realtime import evaluate_realtime as replay
    from loyal.training.recommender.realtime import markdown

    report, _ = _evaluation("realtime", lambda: replay(loyal_home(), cutoff.date(), days, draws, trials), markdown)
    _print_json(report)


@evaluate_app.command(
    "uplift", epilog="Example:\n\n  loyal evaluate uplift --campaign synthetic-6 --budget 500"
)
def evaluate_uplift(
    budget: float = typer.Option(..., help="what the incentives may cost in all (their expected cost)"),
    campaign: Optional[str] = typer.Option(None, help="a measured campaign the uplift model never learnt from "
                                           "(default: the latest, which `loyal train uplift` holds out)"),
    draws: int = typer.Option(200, min=10, help="bootstrap draws for the intervals"),
) -> None:
    """Uplift, churn-risk and random targeting judged on a past campaign's randomised list: each one's Qini and AUUC
    (bootstrap intervals) and the incremental revenue it would have earned at the budget (estimated from treatment
    against control, and the truth where the synthetic shop saved it), with the budget curve around it. Writes
    $LOYAL_HOME/reports/uplift-CAMPAIGN.json and .md, logs them to MLflow and prints the figures."""
    from loyal.app.uplift_evaluation import STRATEGIES, evaluate_uplift as judge, write_report

    home = loyal_home()
    try:
        with writing(home, "evaluate uplift"), _stale_warnings_to_stderr():
            report = judge(home, budget, campaign, draws)
            path = write_report(home, report)
    except LoyalError as error:
        raise _fail(error) from None
    _print_json({"campaign": report["campaign"], "budget": budget, "report": str(path)}
                | {name: {key: report[name].get(key) for key in ("qini", "incremental_revenue",
                                                                 "true_incremental_revenue", "picked", "spent")}
                   for name in STRATEGIES} | {"mlflow_run_id": report["mlflow_run_id"]})


train_app = typer.Typer(help="Train models, log them to MLflow and register them.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command(
    "recommender", epilog="Example:\n\n  loyal train recommender --train-end 2011-11-09 --trials 20"
)
def train_recommender(
    train_end: datetime = typer.Option(..., formats=["%Y-%m-%d"], help="train on the purchases before this date"),
    trials: int = typer.Option(0, min=0, help="Optuna trials per study; 0 keeps the default settings"),
    tuning_workers: int = typer.Option(
        1, min=1, help="processes running the Optuna trials, which split them; workers elsewhere join a study by its "
                       "name in the storage LOYAL_OPTUNA_STORAGE names"),
    draws: int = typer.Option(1000, min=10, help="bootstrap draws for the intervals"),
) -> None:
    """Train the recommender on the purchases before TRAIN_END, measure it beside every baseline, register it in
    MLflow as loyal-recommender and move the alias champion to it when it beats them (the reason is recorded)."""
    from loyal.training.recommender.training import train_recommender as train

    try:
        with _stale_warnings_to_stderr():
            summary = train(loyal_home(), train_end.date(), trials, draws, tuning_workers=tuning_workers)
    except LoyalError as error:
        raise _fail(error) from None
    _print_json(summary)


@train_app.command(
    "churn", epilog="Example:\n\n  loyal train churn --train-end 2011-09-10 --horizon-days 90 --trials 20"
)
def train_churn(
    train_end: datetime = typer.Option(..., formats=["%Y-%m-%d"],
                                       help="train on snapshots whose whole label window ends by this date"),
    horizon_days: int = typer.Option(90, min=7, max=730, help="churn = no purchase in this many days"),
    trials: int = typer.Option(0, min=0, help="Optuna trials; 0 keeps the default settings"),
    tuning_workers: int = typer.Option(
        1, min=1, help="processes running the Optuna trials, which split them; workers elsewhere join a study by its "
                       "name in the storage LOYAL_OPTUNA_STORAGE names"),
    draws: int = typer.Option(1000, min=10, help="bootstrap draws for the intervals"),
) -> None:
    """Train the churn and value model on monthly snapshots before TRAIN_END, measure it beside its baselines,
    register it in MLflow as loyal-churn and move the alias champion to it when it beats them (the reason is
    recorded)."""
    from loyal.training.churn.training import train_churn as train

    try:
        with _stale_warnings_to_stderr():
            summary = train(loyal_home(), train_end.date(), horizon_days, trials, draws,
                            tuning_workers=tuning_workers)
    except LoyalError as error:
        raise _fail(error) from None
    _print_json(summary)


@train_app.command("uplift", epilog="Example:\n\n  loyal train uplift --hold-out synthetic-6")
def train_uplift(
    hold_out: Optional[str] = typer.Option(None, help="the campaign nothing learns from (default: the latest "
                                           "measured one), for `loyal evaluate uplift`"),
    draws: int = typer.Option(200, min=10, help="bootstrap draws for the intervals"),
) -> None:
    """The uplift model, from the campaigns already measured (each a randomised experiment): per customer and
    incentive, the incremental revenue and purchase probability over the 30 days after an offer. Trained on all but
    the last two campaigns and stopped on the second latest; judged beside causalml's T- and X-learners and churn
    risk on the last three campaigns before the held-out one (each by what was fitted on those before it),
    registered as loyal-uplift, and promoted to champion only if it beats them (and the champion)."""
    from loyal.training.uplift.training import train_uplift as train

    try:
        with _stale_warnings_to_stderr():
            summary = train(loyal_home(), hold_out, draws=draws)
    except LoyalError as error:
        raise _fail(error) from None
    _print_json(summary)


@app.command(
    epilog="Example:\n\n  loyal recommend --customers customers.txt --rail for_you --k 10 --output rails.csv"
)
def recommend(
    customers: Path = typer.Option(..., help="a text file with one customer id per line"),
    rail: str = typer.Option("for_you", help="for_you, buy_again, discover, similar_items, trending or "
                             "recently_viewed"),
    k: int = typer.Option(10, help="items per customer"),
    output: Path = typer.Option(..., help="where to write the rows (.csv or .parquet)"),
    as_of: Optional[datetime] = typer.Option(None, formats=["%Y-%m-%d"],
                                             help="the customers as they were at this day's start (default: the day after "
                                                  "the last purchase)"),
) -> None:
    """Recommendations from the champion loyal-recommender: one row per (customer_id, rank, item_id, score), from
    each customer's history and features as of --as-of (the canonical tables and the offline features; events not
    yet ingested are not seen). Customers without a history get trending items."""
    from loyal.training.recommender.rails import RAILS
    from loyal.training.recommender.rails import recommend as answer

    try:
        if rail not in RAILS:
            raise LoyalError(f"--rail {rail!r} is not a rail: choose one of {', '.join(RAILS)}")
        if not 1 <= k <= 100:
            raise LoyalError(f"--k must be between 1 and 100, not {k}")
        if output.suffix not in (".csv", ".parquet"):
            raise LoyalError(f"--output {output}: write .csv or .parquet")
        ids = _customer_ids(customers)
        rows = answer(loyal_home(), ids, rail, k, as_of.replace(tzinfo=timezone.utc) if as_of else None)
    except LoyalError as error:
        raise _fail(error) from None
    _write_atomically(rows, output)
    _print_json({"customers": len(ids), "rows": len(rows), "rail": rail, "k": k, "output": str(output)})


campaign_app = typer.Typer(
    help="Email campaigns: `loyal campaign --name N --budget B --output F` makes one; `loyal campaign measure "
    "--name N` measures it once its outcomes are in.",
    epilog="Example:\n\n  loyal campaign --name winback-dec --budget 500 --max-contacts 2000 "
    "--min-days-since-contact 14 --output winback.csv\n\n  loyal campaign measure --name winback-dec",
)
app.add_typer(campaign_app, name="campaign")


@campaign_app.callback(invoke_without_command=True)
def campaign(
    context: typer.Context,
    name: Optional[str] = typer.Option(None, help="the campaign's name, unique: the contact history and MLflow "
                                                  "know it by it"),
    budget: Optional[float] = typer.Option(None, help="what the incentives may cost in all (their expected cost)"),
    output: Optional[Path] = typer.Option(None, help="where to write the list (.csv or .parquet)"),
    max_contacts: Optional[int] = typer.Option(None, help="at most this many customers emailed"),
    control_fraction: float = typer.Option(0.1, help="the share of the list held out, not emailed, to measure by"),
    min_days_since_contact: int = typer.Option(0, help="skip customers emailed by a campaign this recently"),
    as_of: Optional[datetime] = typer.Option(None, formats=["%Y-%m-%d"],
                                             help="the campaign's date (default: the day after the last purchase)"),
    seed: int = typer.Option(0, help="seed of the control group's draw"),
    policy: Optional[Path] = typer.Option(None, help="another offer policy file than serving/policy.yaml"),
    engine: Optional[str] = typer.Option(
        None, help="what scores the customers: embedded (this process) or spark (the registered model as a Spark "
                   "UDF); default: $LOYAL_ENGINE, else embedded"),
    target: str = typer.Option("risk", help="risk: the likeliest to leave first (the offer policy); uplift: those "
                               "an offer changes most, by the loyal-uplift champion (risk until there is one)"),
) -> None:
    """An email campaign's target list: every customer scored, only those opted in to email (unknown consent means
    no), not suppressed and not contacted too recently, ranked by expected retained value (--target risk) or by
    predicted incremental revenue per unit of cost (--target uplift) and filled up to the budget; a random control
    group held out. Writes customer_id, group (treatment or control), incentive, items,
    expected_value and reason, records the campaign in MLflow and in the contact history."""
    if context.invoked_subcommand is not None:
        return
    from loyal.serving.campaign import Campaign, build, record

    home = loyal_home()
    try:
        missing = [option for option, value in (("--name", name), ("--budget", budget), ("--output", output))
                   if value is None]
        if missing:
            raise LoyalError(f"a campaign needs {', '.join(missing)} (see loyal campaign --help)")
        if output.suffix not in (".csv", ".parquet"):
            raise LoyalError(f"--output {output}: write .csv or .parquet")
        plan = Campaign(name=name, budget=budget, max_contacts=max_contacts, control_fraction=control_fraction,
                        min_days_since_contact=min_days_since_contact, as_of=as_of.date() if as_of else None,
                        seed=seed, engine=_engine(engine), target=target)
        # One lock from scoring to the contact history: no erasure or ingest lands between choosing and recording.
        with writing(home, "campaign"), _stale_warnings_to_stderr():
            chosen, counts = build(home, plan, policy)
            digest = record(home, plan, chosen, counts, output)
    except LoyalError as error:
        raise _fail(error) from None
    if "fallback" in counts:
        typer.echo(f"loyal: warning: {counts['fallback']}", err=True)
    _print_json(counts | {"output": str(output), "list_sha256": digest})


@campaign_app.command("measure", epilog="Example:\n\n  loyal campaign measure --name winback-dec --days 30")
def campaign_measure(
    name: str = typer.Option(..., help="the campaign, as recorded"),
    days: int = typer.Option(30, help="how many days from the campaign's date count as its outcome"),
) -> None:
    """Treatment against control once the outcomes are ingested: purchase rate and revenue per customer of each,
    and the increments with 95% intervals (also logged to the campaign's MLflow run)."""
    from loyal.serving.campaign import measure

    try:
        result = measure(loyal_home(), name, days)
    except LoyalError as error:
        raise _fail(error) from None
    _print_json(result)


events_app = typer.Typer(
    help="The event log: views, add-to-carts, purchases and returns as they happen (the service's POST /events "
    "takes the same). The next ingest or retrain folds them into the canonical tables, each once.",
    no_args_is_help=True,
)
app.add_typer(events_app, name="events")


@events_app.command(
    "push",
    epilog="Columns (CSV) or keys (JSON lines): event_id, customer_id, item_id, type (view, add_to_cart, purchase, "
    "return), timestamp (ISO 8601; UTC without a zone), and for purchase and return quantity and unit_price; "
    "optional channel (web, app, store) and order_id.\n\nExample:\n\n  loyal events push todays-events.csv",
)
def events_push(
    path: Path = typer.Argument(..., help="a .csv or .jsonl file (or .gz of either)", metavar="FILE"),
) -> None:
    """Append a file's events to the event log and print a JSON summary: accepted, duplicates (an event_id already
    in the log), rejected (index and problem of each malformed event; the others are kept), suppressed (events of
    forgotten customers, not kept). Each accepted event is on disk before this returns."""
    from loyal.events import push_file
    from loyal.features.repo import online_state

    try:
        state = online_state(loyal_home())
        summary = push_file(loyal_home(), path, then=state.append_events if state is not None else None)
    except LoyalError as error:
        raise _fail(error) from None
    _print_json(summary)


@app.command(epilog="Example:\n\n  loyal forget 17850 12583")
def forget(
    customer_ids: list[str] = typer.Argument(..., help="the customers to erase", metavar="CUSTOMER_ID..."),
) -> None:
    """Erase customers everywhere Loyal keeps them: event log, canonical tables, quarantine, offline features, online
    store and contact history. They go on the suppression list, so no later ingest, training set or campaign holds them and
    the service answers them as strangers. The audit log ($LOYAL_HOME/erasures.jsonl) records the erasure's time
    and counts, never the ids."""
    from loyal.app.forget import forget as erase

    try:
        summary = erase(loyal_home(), customer_ids)
    except LoyalError as error:
        raise _fail(error) from None
    _print_json(summary)


@app.command(
    epilog="Exit codes: 0 a new champion was promoted; 10 challengers trained and kept (the reasons are MLflow tags);"
    " 11 nothing new since the last retrain; 75 another retrain is running; 2 a mistake in the input; 1 a failure."
    "\n\nExamples:\n\n  loyal retrain --data exports/this-week/ --format canonical\n\n"
    "  loyal retrain --as-of 2011-12-01 --trials 5",
)
def retrain(
    as_of: Optional[datetime] = typer.Option(None, formats=["%Y-%m-%d"],
                                             help="train on the data before this date (default: the day after the "
                                                  "last purchase)"),
    data: Optional[Path] = typer.Option(None, help="a file (or canonical folder) to ingest first"),
    format: str = typer.Option("canonical", "--format", help="the --data file's format: canonical or online-retail"),
    trials: int = typer.Option(3, min=0, help="Optuna trials per study: the tuning budget"),
    draws: int = typer.Option(200, min=10, help="bootstrap draws for the intervals"),
    force: bool = typer.Option(False, "--force", help="retrain even when this data was already decided on"),
    gate: Optional[Path] = typer.Option(None, help="another champion gate than training/champion.yaml"),
) -> None:
    """The scheduled job: ingest what is new, rebuild and materialize the features, train a challenger of each model
    with a small tuning budget, and move champion to it only when it beats the current champion on the latest
    holdout window by the gate's margin with no guardrail worse. One retrain at a time (a lock); retraining on data
    already decided on does nothing. The exit code tells the outcome; the summary (JSON) says why."""
    from loyal.training.registry import GATE
    from loyal.training.retrain import LOCKED, Locked
    from loyal.training.retrain import retrain as run_retrain

    try:
        if data is not None and format not in ("canonical", "online-retail"):
            raise LoyalError(f"unknown --format {format!r}: choose canonical or online-retail")
        with _stale_warnings_to_stderr():
            summary = run_retrain(loyal_home(), as_of.date() if as_of else None, data, format, trials, draws, force,
                                  gate or GATE)
    except Locked as error:
        typer.echo(f"loyal: {error}", err=True)
        raise typer.Exit(code=LOCKED) from None
    except LoyalError as error:
        raise _fail(error) from None
    _print_json(summary)
    raise typer.Exit(code=summary["exit_code"])


score_app = typer.Typer(help="Score every customer with a registered model.", no_args_is_help=True)
app.add_typer(score_app, name="score")


@score_app.command("churn", epilog="Example:\n\n  loyal score churn --as-of 2011-09-10 --output churn.csv")
def score_churn(
    as_of: datetime = typer.Option(..., formats=["%Y-%m-%d"], help="score the customers known before this date"),
    output: Path = typer.Option(..., help="where to write the rows (.csv or .parquet)"),
    version: str = typer.Option(None, help="a loyal-churn version instead of the champion"),
    engine: Optional[str] = typer.Option(
        None, help="what scores the customers: embedded (this process) or spark (the registered model as a Spark "
                   "UDF); default: $LOYAL_ENGINE, else embedded"),
) -> None:
    """Churn risk and expected value of every customer known before AS_OF, from the champion loyal-churn: one row
    per customer with customer_id, churn_probability, expected_value, risk_segment and top_drivers."""
    from loyal.training.churn.scoring import score

    try:
        if output.suffix not in (".csv", ".parquet"):
            raise LoyalError(f"--output {output}: write .csv or .parquet")
        with _stale_warnings_to_stderr():
            rows = score(loyal_home(), as_of.date(), version, _engine(engine))
    except LoyalError as error:
        raise _fail(error) from None
    _write_atomically(rows, output)
    _print_json({"customers": len(rows), "as_of": str(as_of.date()), "output": str(output),
                 "segments": rows["risk_segment"].value_counts().to_dict()})


def _engine(given: str | None) -> str:
    """--engine, else $LOYAL_ENGINE, else embedded."""
    return given or os.environ.get(ENGINE_ENV) or "embedded"


def _customer_ids(path: Path) -> list[str]:
    """One id per line; blank lines and repeats are skipped. A file that is not text, or holds no id, is refused."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise LoyalError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LoyalError(f"{path}: is a folder, not a file of customer ids") from None
    except UnicodeDecodeError:
        raise LoyalError(f"{path}: not a text file of customer ids (one per line)") from None
    ids = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))  # each id answered once
    if not ids:
        raise LoyalError(f"{path}: holds no customer id (one per line)")
    if "\x00" in text:
        raise LoyalError(f"{path}: not a text file of customer ids (one per line)")
    return ids


@app.command("serve", epilog="Example:\n\n  loyal serve --port 3000    # then: curl -X POST localhost:3000/offers "
                              "-H 'content-type: application/json' -d '{\"customer_id\": \"17850\"}'")
def serve(
    port: int = typer.Option(3000, min=1, max=65535, help="the port on 127.0.0.1"),
    policy: Optional[Path] = typer.Option(None, help="an offer policy file instead of the shipped one"),
) -> None:
    """Serve /recommend, /churn and /offers (BentoML) on 127.0.0.1:PORT from the champion models and the Feast
    online store; readiness at /readyz, Prometheus metrics at /metrics, the API's documentation at /."""
    from loyal.serving.engine import CHURN, RECOMMENDER, missing_champions
    from loyal.serving.launch import port_is_free
    from loyal.serving.policy import load_policy
    from loyal.tracking import client
    from loyal.training.registry import load_version

    home = loyal_home()
    try:
        if not port_is_free(port):
            raise LoyalError(f"port {port} on 127.0.0.1 is in use: choose another with --port")
        load_policy(policy)
        registry = client(home)
        missing = missing_champions(registry)
        if missing:
            raise LoyalError(f"no champion for {missing} in {home}: run `loyal run` (or `loyal train "
                             "recommender` and `loyal train churn`) first")
        for name in (RECOMMENDER, CHURN):  # a damaged or altered artifact is refused here, in one line
            load_version(name, client=registry)
    except LoyalError as error:
        raise _fail(error) from None
    environment = dict(os.environ, LOYAL_HOME=str(home))
    if policy is not None:
        environment["LOYAL_POLICY"] = str(policy.absolute())
    bentoml = Path(sys.executable).parent / "bentoml"
    os.execve(bentoml, [str(bentoml), "serve", "loyal.serving.service:Loyal", "--host", "127.0.0.1",
                        "--port", str(port)], environment)



def _write_atomically(frame, output: Path) -> None:
    from loyal.store import (
        write_atomically,  # pandas and pyarrow load only for the commands that write
    )

    write_atomically(frame, output)


if __name__ == "__main__":
    main()
