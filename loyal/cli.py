"""The `loyal` command line: each command parses its options and calls one function of the package."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from loyal.errors import LoyalError
from loyal.home import loyal_home

app = typer.Typer(
    help="Loyal: recommendations, churn risk and personalised offers for retailers.\n\n"
    "Data lives under $LOYAL_HOME (default ./.loyal).",
    epilog="Example: loyal run --data ../shared/data/online_retail.csv.gz",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _fail(error: LoyalError) -> typer.Exit:
    # One line, no traceback: the user's mistake is theirs to fix, and the message says what it is.
    typer.echo(f"loyal: {error}", err=True)
    return typer.Exit(code=2)


def _print_json(result: dict) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


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
    seed: int = typer.Option(0, help="synthetic: random seed (the same seed gives the same data)"),
) -> None:
    """Read a retailer's file into the canonical tables under $LOYAL_HOME and print a JSON summary.

    Rows that break the contract go to $LOYAL_HOME/quarantine with their reason; rows read = kept + quarantined.
    Ingesting the same file again changes nothing; a later file adds only its new rows.
    """
    from loyal.ingest import FORMATS, ingest_file, ingest_synthetic
    from loyal.synthetic import SyntheticConfig

    try:
        if format not in FORMATS:
            raise LoyalError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
        if format == "synthetic":
            if path is not None:
                raise LoyalError("synthetic takes no PATH: it generates its data (see --customers, --days, --seed)")
            summary = ingest_synthetic(SyntheticConfig(customers=customers, days=days, seed=seed), loyal_home())
        else:
            if path is None:
                raise LoyalError(f"{format} needs a PATH: the file to ingest")
            summary = ingest_file(format, path, loyal_home())
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
    from loyal.pipeline import default_data, run_main_job
    from loyal.synthetic import SyntheticConfig

    try:
        result = run_main_job(data or default_data(), loyal_home(), SyntheticConfig(customers=customers))
    except LoyalError as error:
        raise _fail(error) from None
    _log_to_mlflow_run(result["ingest"], "ingest")
    _print_json(result)


if __name__ == "__main__":
    app()
