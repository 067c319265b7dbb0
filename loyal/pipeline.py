"""The main job, end to end on the default data. Today: ingest, then the feature store (build and materialize).
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
    return {"ingest": ingest, "features": features, "online_store": online}
