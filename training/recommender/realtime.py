"""What real time is worth: `loyal evaluate realtime --cutoff DATE [--days 30]`.

A recommender is trained at the cutoff, as `loyal train recommender --train-end DATE` trains one (its rails answered
by their best recipes on the validation window before the cutoff; nothing of the window after it). Then the
window's purchases are replayed in time order through the code the service uses (`Recommender.rank` from a
customer's state), and every order (invoice) of a customer with a history before the cutoff is scored with the rail
that customer would have seen just before placing it:

- `realtime`: the champion, from the customer's state just before the order (every purchase until then, the
  session of views and add-to-carts, the features as of the order's day): `for_you` in the "all" view, `discover`
  in the "explore" view;
- `frozen`: the same champion from the state as it was at the cutoff (what a model that carries its customers'
  histories from training shows until the next retrain);
- `realtime_buy_again`: personal purchase frequency (60-day half-life, then the last 30 days' popularity), its
  history updated before each order.

Per-order NDCG@10: the order's items are relevant (an item first sold after the cutoff too, unreachable, so counted
as missed). Explore view: only the items new to the customer just before the order, the lists never showing what
they had bought by then; orders without a new item are left out. Intervals are 95% bootstrap intervals resampling
customers (their orders go together); differences are paired. Orders of customers first seen in the window are
scored from their second order on, the real-time champion beside `trending`. Where customers browsed (data with
events), `session` measures the session alone: the real-time `for_you` of the orders preceded by a session, with it
and without it (the same history and features).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from loyal.errors import LoyalError
from loyal.features.compute import EVENT_TIMESTAMP
from loyal.features.engines import purchase_history
from loyal.features.repo import historical_features
from loyal.schema import CUSTOMER_ID, TIMESTAMP
from loyal.store import read_table
from loyal.training.recommender.evaluate import K, metrics_at_k, top_k
from loyal.training.recommender.rails import RERANKED, Recommender
from loyal.training.recommender.ranker import CUSTOMER_FEATURES, customer_features
from loyal.training.recommender.replay import Orders, replay, window_orders, with_sessions
from loyal.training.recommender.training import _transactions, check_cutoff, fit_and_evaluate

NDCG = f"ndcg@{K}"
VIEW_RAIL = {view: rail for rail, view in RERANKED.items()}  # all: for_you, explore: discover


def _features(home: Path, orders: Orders, at: pd.Timestamp | None) -> np.ndarray:
    """The customers' features as of each order (or as of `at`), point in time, as the re-rankers read them."""
    moments = pd.to_datetime(orders.times, unit="us", utc=True) if at is None else [at] * len(orders.customers)
    rows = pd.DataFrame({CUSTOMER_ID: orders.customers, EVENT_TIMESTAMP: moments})
    frame = historical_features(home, rows, features=[f"customer_behaviour:{name}" for name in CUSTOMER_FEATURES])
    frame.index = orders.before.customers
    return customer_features(frame, orders.before.customers)


def _ndcg(ranked: np.ndarray, relevant: list[np.ndarray]) -> np.ndarray:
    return metrics_at_k(ranked, relevant, K)[NDCG]


def score_orders(recommender: Recommender, orders: Orders, features: np.ndarray, truth: Orders
                 ) -> dict[str, np.ndarray]:
    """Per order, NDCG@10 of the champion in both views (NaN in the explore view where the order holds nothing
    new), and of buy-again, ranked from `orders`' states. What is new to a customer is always what `truth` (the
    states just before each order) says they had not bought: a frozen list is judged by the same truth."""
    lines, bought = orders.before, truth.before.counts
    owned = [bought.indices[bought.indptr[i]:bought.indptr[i + 1]] for i in range(len(orders.items))]
    new = [np.setdiff1d(items, mine) for items, mine in zip(orders.items, owned)]
    has_new = np.array([len(items) > 0 for items in new])
    out = {}
    for view, rail in VIEW_RAIL.items():
        ranked, _ = recommender.rank(lines, features, rail, K)
        if view == "all":
            out["all"] = _ndcg(ranked, orders.items)
        else:
            values = np.full(len(new), np.nan)
            values[has_new] = _ndcg(ranked[has_new], [n for n, keep in zip(new, has_new) if keep])
            out["explore"] = values
    buy_again = recommender.stage.sources["personal_frequency"].score_lines(lines)
    out["buy_again_all"] = _ndcg(top_k(buy_again, K), orders.items)
    explore = np.full(len(new), np.nan)
    explore[has_new] = _ndcg(top_k(buy_again[has_new], K, exclude=bought[has_new]),
                             [n for n, keep in zip(new, has_new) if keep])
    out["buy_again_explore"] = explore
    return out


def _cluster_bootstrap(customers: np.ndarray, values: dict[str, np.ndarray], draws: int, seed: int = 0):
    """Per draw, each series' mean over the orders of customers resampled with replacement (their orders go
    together; NaN orders are left out). Returns {name: array of draw means}."""
    codes, uniques = pd.factorize(customers)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(uniques), np.full(len(uniques), 1 / len(uniques)), size=draws)  # [draws, customers]
    means = {}
    for name, series in values.items():
        present = ~np.isnan(series)
        sums = np.bincount(codes[present], weights=series[present], minlength=len(uniques))
        counts = np.bincount(codes[present], minlength=len(uniques)).astype(np.float64)
        means[name] = (weights @ sums) / np.maximum(weights @ counts, 1.0)
    return means


def _figure(values: np.ndarray, draws: np.ndarray) -> dict:
    present = values[~np.isnan(values)]
    return {"ndcg_at_10": round(float(present.mean()), 4) if len(present) else None,
            "low": round(float(np.percentile(draws, 2.5)), 4), "high": round(float(np.percentile(draws, 97.5)), 4)}


def _difference(first: np.ndarray, second: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    present = ~np.isnan(first) & ~np.isnan(second)
    return {"value": round(float(first[present].mean() - second[present].mean()), 4),
            "low": round(float(np.percentile(a - b, 2.5)), 4), "high": round(float(np.percentile(a - b, 97.5)), 4)}


def evaluate_realtime(home: Path, cutoff, days: int = 30, draws: int = 1000, trials: int = 0) -> dict:
    """The replay and its report (see the module's docstring)."""
    transactions = _transactions(home)
    cutoff = check_cutoff(transactions, cutoff)
    end = cutoff + pd.Timedelta(days=days)
    if transactions[TIMESTAMP].max() < cutoff:
        raise LoyalError(f"no purchases on or after {cutoff.date()}: nothing to replay")
    trained = fit_and_evaluate(home, cutoff.date(), trials=trials, draws=200)
    recommender: Recommender = trained.model
    items = recommender.items
    history = purchase_history(transactions, end)
    known = set(purchase_history(transactions, cutoff)[CUSTOMER_ID])
    lines = window_orders(transactions, cutoff, end, known)
    if lines.empty:
        raise LoyalError(f"no orders of known customers in the {days} days from {cutoff.date()}")
    events = read_table(home, "events")
    live = with_sessions(replay(lines, history, items, None), events)
    frozen = with_sessions(replay(lines, history, items, cutoff), events, cutoff)
    live_features = _features(home, live, None)
    live_scores = score_orders(recommender, live, live_features, live)
    frozen_scores = score_orders(recommender, frozen, _features(home, frozen, cutoff), live)
    series = {"realtime.all": live_scores["all"], "realtime.explore": live_scores["explore"],
              "frozen.all": frozen_scores["all"], "frozen.explore": frozen_scores["explore"],
              "realtime_buy_again.all": live_scores["buy_again_all"],
              "realtime_buy_again.explore": live_scores["buy_again_explore"]}
    boot = _cluster_bootstrap(live.customers, series, draws)
    report = {"cutoff": str(cutoff.date()), "days": days, "k": K, "bootstrap_draws": draws,
              "model": {"trained_to": str(cutoff.date()), "trials_per_study": trials, "rails": recommender.recipes()},
              "customers": int(pd.Series(live.customers).nunique())}
    for name in ("realtime", "frozen", "realtime_buy_again"):
        report[name] = {view: _figure(series[f"{name}.{view}"], boot[f"{name}.{view}"]) for view in ("all", "explore")}
        report[name]["orders"] = int(len(live.customers))
        report[name]["explore"]["orders"] = int((~np.isnan(series[f"{name}.explore"])).sum())
    report["comparison"] = {}
    for rival in ("realtime_buy_again", "frozen"):
        for view in ("all", "explore"):
            a, b = series[f"realtime.{view}"], series[f"{rival}.{view}"]
            entry = {"difference": _difference(a, b, boot[f"realtime.{view}"], boot[f"{rival}.{view}"])}
            ratio = boot[f"realtime.{view}"] / np.maximum(boot[f"{rival}.{view}"], 1e-12)
            entry["ratio"] = {"value": round(float(np.nanmean(a) / max(np.nanmean(b), 1e-12)), 3),
                              "low": round(float(np.percentile(ratio, 2.5)), 3),
                              "high": round(float(np.percentile(ratio, 97.5)), 3)}
            report["comparison"][f"realtime_vs_{rival}.{view}"] = entry
    report["session"] = _session_gain(recommender, live, live_features, draws)
    report["new_customers"] = _new_customers(home, recommender, transactions, cutoff, end, history, known, events,
                                             draws)
    return report


def _session_gain(recommender: Recommender, live: Orders, features: np.ndarray, draws: int) -> dict:
    """The session alone: the real-time for_you of the orders preceded by a session, with it and without it."""
    browsed = np.flatnonzero(np.diff(live.before.session.indptr) > 0)
    out = {"session_weight": recommender.session_weight, "orders": int(len(browsed))}
    if not len(browsed):
        return out | {"note": "no order was preceded by a view or an add-to-cart: nothing to measure"}
    orders = live.rows(browsed)
    with_session, _ = recommender.rank(orders.before, features[browsed], "for_you", K)
    without, _ = recommender.rank(replace(orders.before, session=None), features[browsed], "for_you", K)
    series = {"with_session": _ndcg(with_session, orders.items), "without_session": _ndcg(without, orders.items)}
    boot = _cluster_bootstrap(orders.customers, series, draws)
    return out | {"customers": int(pd.Series(orders.customers).nunique()),
                  "with_session": _figure(series["with_session"], boot["with_session"]),
                  "without_session": _figure(series["without_session"], boot["without_session"]),
                  "difference": _difference(series["with_session"], series["without_session"],
                                            boot["with_session"], boot["without_session"])}


def _new_customers(home: Path, recommender: Recommender, transactions: pd.DataFrame, cutoff: pd.Timestamp,
                   end: pd.Timestamp, history: pd.DataFrame, known: set[str], events: pd.DataFrame | None,
                   draws: int) -> dict:
    """Orders of customers first seen in the window, from their second order on: the real-time champion (for_you)
    beside trending."""
    lines = window_orders(transactions, cutoff, end, None, exclude=known)
    if lines.empty:
        return {"orders": 0}
    orders = with_sessions(replay(lines, history, recommender.items, None), events)
    second_on = np.diff(orders.before.counts.indptr) > 0  # a history before the order: not their first
    if not second_on.any():
        return {"orders": 0}
    rows = np.flatnonzero(second_on)
    subset = orders.rows(rows)
    features = _features(home, subset, None)
    ranked, _ = recommender.rank(subset.before, features, "for_you", K)
    trending = top_k(np.tile(recommender.trending_scores, (len(rows), 1)), K)
    series = {"realtime": _ndcg(ranked, subset.items), "trending": _ndcg(trending, subset.items)}
    boot = _cluster_bootstrap(subset.customers, series, draws)
    return {"orders": int(len(rows)), "customers": int(pd.Series(subset.customers).nunique()),
            "realtime": _figure(series["realtime"], boot["realtime"]),
            "trending": _figure(series["trending"], boot["trending"]),
            "difference": _difference(series["realtime"], series["trending"], boot["realtime"], boot["trending"])}


def markdown(report: dict) -> str:
    """The report in words and a table."""
    lines = [f"# What real time is worth, cutoff {report['cutoff']}, the {report['days']} days after", "",
             f"Per-order NDCG@{report['k']} over {report['realtime']['orders']} orders of {report['customers']} "
             "customers known before the cutoff; 95% intervals resample customers "
             f"({report['bootstrap_draws']} draws). The model was trained at the cutoff; its rails: "
             + ", ".join(f"{rail} {recipe}" for rail, recipe in report["model"]["rails"].items()) + ".", "",
             "| | all | explore |", "|---|---|---|"]
    for name in ("realtime", "frozen", "realtime_buy_again"):
        cells = [f"{f['ndcg_at_10']:.4f} [{f['low']:.4f}, {f['high']:.4f}]" if f["ndcg_at_10"] is not None else "-"
                 for f in (report[name]["all"], report[name]["explore"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, entry in report["comparison"].items():
        r = entry["ratio"]
        lines.append(f"- {name}: difference {_signed(entry['difference'])}, ratio "
                     f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
    session, new = report["session"], report["new_customers"]
    if session.get("difference"):
        lines += ["", f"The session alone (weight {session['session_weight']}), over the {session['orders']} orders "
                      f"preceded by a view or an add-to-cart: for_you {session['with_session']['ndcg_at_10']:.4f} "
                      f"with it, {session['without_session']['ndcg_at_10']:.4f} without, difference "
                      f"{_signed(session['difference'])}."]
    else:
        lines += ["", f"The session alone: {session['note']} (session weight {session['session_weight']})."]
    if new.get("orders"):
        lines += ["", f"Customers first seen in the window, from their second order on ({new['orders']} orders): "
                      f"real-time champion {new['realtime']['ndcg_at_10']:.4f}, trending "
                      f"{new['trending']['ndcg_at_10']:.4f}, difference {_signed(new['difference'])}."]
    return "\n".join(lines) + "\n"


def _signed(difference: dict) -> str:
    return f"{difference['value']:+.4f} [{difference['low']:+.4f}, {difference['high']:+.4f}]"
