"""`loyal evaluate realtime`: the replay scores each order from the state just before it (real time) or from the state
at the cutoff (frozen), never from anything at or after the order; the report has the keys people script against."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loyal.app.cli import app
from loyal.features.engines import purchase_history
from loyal.training.recommender.replay import replay, window_orders

CUTOFF = pd.Timestamp("2024-03-01", tz="UTC")


def _purchases(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "order_id"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.assign(quantity=1, unit_price=1.0)


def test_each_order_is_scored_from_the_state_just_before_it_or_at_the_cutoff():
    transactions = _purchases([
        ("a", "x", "2024-02-01", "o1"),  # before the cutoff
        ("a", "y", "2024-03-05", "o2"),  # in the window: the first order
        ("a", "z", "2024-03-09", "o3"),  # the second: real time knows y, frozen does not
        ("a", "w", "2024-03-09", "o3"),
        ("b", "x", "2024-02-10", "o4"),
        ("b", "new-item", "2024-03-06", "o5"),  # an item the model never saw: relevant, unreachable
    ])
    items = pd.Index(["w", "x", "y", "z"])
    end = CUTOFF + pd.Timedelta(days=30)
    lines = window_orders(transactions, CUTOFF, end, {"a", "b"})
    history = purchase_history(transactions, end)
    live, frozen = replay(lines, history, items, None), replay(lines, history, items, CUTOFF)
    assert list(live.before.customers) == ["o2", "o5", "o3"]  # in time order
    bought = {order: set(items[live.before.counts[i].indices]) for i, order in enumerate(live.before.customers)}
    assert bought == {"o2": {"x"}, "o5": {"x"}, "o3": {"x", "y"}}
    assert {order: set(items[frozen.before.counts[i].indices]) for i, order in enumerate(frozen.before.customers)} \
        == {"o2": {"x"}, "o5": {"x"}, "o3": {"x"}}
    assert [list(i) for i in live.items] == [[2], [4], [0, 3]]  # "new-item" past the catalogue of four
    ages = live.before.purchases.groupby("customer")["age_days"].min()
    assert ages.loc[2] == pytest.approx(4.0)  # o3, four days after y
    assert (frozen.before.purchases["age_days"] > 0).all()


@pytest.mark.integration
def test_the_command_writes_the_report_people_script_against(home):
    from loyal.features.repo import build
    from loyal.ingest import ingest_synthetic
    from loyal.synthetic import SyntheticConfig

    ingest_synthetic(SyntheticConfig(customers=500, days=200, seed=3), home)
    build(home)
    result = CliRunner().invoke(app, ["evaluate", "realtime", "--cutoff", "2024-06-15", "--days", "30",
                                      "--draws", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads((home / "reports" / "realtime-2024-06-15.json").read_text())
    assert (home / "reports" / "realtime-2024-06-15.md").exists()
    for name in ("realtime", "frozen", "realtime_buy_again"):
        assert report[name]["orders"] > 50
        for view in ("all", "explore"):
            figure = report[name][view]
            assert 0 <= figure["low"] <= figure["ndcg_at_10"] <= figure["high"] <= 1, (name, view)
    assert report["realtime"]["all"]["ndcg_at_10"] > report["realtime_buy_again"]["all"]["ndcg_at_10"] * 0.8
    assert set(report["comparison"]) == {f"realtime_vs_{r}.{v}" for r in ("realtime_buy_again", "frozen")
                                         for v in ("all", "explore")}
    assert np.isfinite(report["comparison"]["realtime_vs_frozen.all"]["difference"]["value"])
    # The generator plants sessions that announce orders (ground_truth/browsing.parquet): the weight chosen on the
    # validation window moves for_you, and the session alone lifts it, its interval above zero.
    session = report["session"]
    assert session["session_weight"] > 0 and session["orders"] > 50
    assert session["difference"]["low"] > 0
