"""The figures that training and evaluation log to MLflow (and the notebooks show): each returns a matplotlib
Figure built from numbers already measured, never computing a metric of its own beyond what it draws."""

from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook shows its figures inline; elsewhere there is no display
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402


def log(figure, path: str) -> None:
    """Log a figure to the active MLflow run and close it: pyplot keeps every figure open until closed."""
    mlflow.log_figure(figure, path)
    plt.close(figure)


def recall_at_k(curves: dict[str, list[float]], view: str):
    """Recall@k for k = 1..len(curve), one line per model."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        axes.plot(range(1, len(curve) + 1), curve, label=name, linewidth=2.5 if name in ("for_you", "discover") else 1)
    axes.set(xlabel="k", ylabel="recall@k", title=f"Recall at k ({view} view)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def bars(values: dict[str, float], title: str, ylabel: str):
    """One bar per model (coverage, popularity of what is recommended)."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    names = list(values)
    axes.barh(names, [values[n] for n in names], color=["#c0392b" if n in ("for_you", "discover") else "#7f8c8d"
                                                      for n in names])
    axes.set(xlabel=ylabel, title=title)
    axes.invert_yaxis()
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return figure


def calibration(curves: dict[str, dict]):
    """Observed churn rate against the mean predicted probability per bin, one line per model; the diagonal is
    perfect calibration."""
    figure, axes = plt.subplots(figsize=(6, 6))
    axes.plot([0, 1], [0, 1], color="#7f8c8d", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, curve in curves.items():
        axes.plot(curve["predicted"], curve["observed"], marker="o", label=name,
                  linewidth=2.5 if name == "churn_network" else 1)
    axes.set(xlabel="predicted probability of churn", ylabel="observed churn rate", title="Calibration",
             xlim=(0, 1), ylim=(0, 1))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def lift(curves: dict[str, dict]):
    """Cumulative lift against the share of customers contacted, highest risk first, one line per model."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        axes.plot([100 * x for x in curve["share"]], curve["lift"], label=name,
                  linewidth=2.5 if name == "churn_network" else 1)
    axes.axhline(1.0, color="#7f8c8d", linestyle="--", linewidth=1)
    axes.set(xlabel="customers contacted, highest risk first (%)", ylabel="lift over random",
             title="Cumulative lift")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------------------------ the data


def over_time(frame, title: str):
    """One panel per column of a frame indexed by period (orders, customers, revenue over time)."""
    figure, panels = plt.subplots(len(frame.columns), 1, figsize=(9, 2.2 * len(frame.columns)), sharex=True,
                                  squeeze=False)
    for axes, column in zip(panels[:, 0], frame.columns):
        axes.plot(frame.index, frame[column], color="#2c3e50")
        axes.set(ylabel=column)
        axes.grid(alpha=0.3)
    panels[0, 0].set_title(title)
    figure.tight_layout()
    return figure


def retention_heatmap(shares):
    """Cohorts (rows) by months since their first purchase (columns from 1; month 0 is everyone), each cell the
    share who bought in that month."""
    later = shares.loc[:, [c for c in shares.columns if c != 0]]
    figure, axes = plt.subplots(figsize=(10, 0.35 * len(later) + 1.5))
    image = axes.imshow(later.to_numpy(dtype=float), cmap="viridis", vmin=0, aspect="auto")
    axes.set_xticks(range(len(later.columns)), [str(c) for c in later.columns])
    axes.set_yticks(range(len(later.index)), list(later.index))
    for row in range(later.shape[0]):
        for column in range(later.shape[1]):
            value = later.iat[row, column]
            if value == value:  # not NaN: months the data reach
                axes.text(column, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=7, color="white")
    axes.set(xlabel="months since the first purchase", ylabel="cohort (month of the first purchase)",
             title="Cohort retention: % who bought again")
    figure.colorbar(image, ax=axes, fraction=0.03)
    figure.tight_layout()
    return figure


def shares_over_time(shares, title: str):
    """A stacked area of shares per period (the channel mix)."""
    figure, axes = plt.subplots(figsize=(9, 3.5))
    axes.stackplot(shares.index, *[shares[c] for c in shares.columns], labels=list(shares.columns), alpha=0.85)
    axes.set(ylim=(0, 1), ylabel="share of revenue", title=title)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def intervals(table, metric: str, title: str):
    """Each model's figure with its 95% interval (columns `metric`, `metric low`, `metric high`), best on top; the
    re-ranked rails and the churn network in red."""
    table = table.dropna(subset=[metric]).sort_values(metric)
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(table) + 1.5))
    ours = table["model"].isin(["for_you", "discover", "churn_network"]).to_numpy()
    low = (table[metric] - table[f"{metric} low"].fillna(table[metric])).to_numpy()
    high = (table[f"{metric} high"].fillna(table[metric]) - table[metric]).to_numpy()
    rows = np.arange(len(table))
    for mask, colour in ((~ours, "#7f8c8d"), (ours, "#c0392b")):
        axes.errorbar(table[metric].to_numpy()[mask], rows[mask], xerr=[low[mask], high[mask]], fmt="o",
                      color=colour, capsize=3)
    axes.set_yticks(rows, table["model"].tolist())
    axes.set(xlabel=f"{metric} (95% interval)", title=title)
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return figure


def line(x, y, xlabel: str, ylabel: str, title: str):
    """One line with its points (a campaign's expected gain against its budget)."""
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(x, y, marker="o", color="#c0392b")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def histograms(groups: dict, xlabel: str, title: str, bins: int = 30):
    """Overlaid histograms, one per group (churn probability by the incentive offered)."""
    figure, axes = plt.subplots(figsize=(7, 4))
    for name, values in groups.items():
        axes.hist(values, bins=bins, range=(0, 1), alpha=0.6, label=f"{name} ({len(values)})")
    axes.set(xlabel=xlabel, ylabel="customers", title=title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def budget_curve(points: list[dict], strategies) -> plt.Figure:
    """Incremental revenue against budget, one line per targeting: the true figure where the truth is known, else
    the estimate with its 95% interval as a band."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    budgets = [point["budget"] for point in points]
    for name in strategies:
        parts = [point[name] for point in points]
        if all("true_incremental_revenue" in part for part in parts):
            axes.plot(budgets, [part["true_incremental_revenue"] for part in parts], marker="o", label=f"{name} (true)")
            continue
        estimates = [part["incremental_revenue"] or {"value": np.nan, "low": np.nan, "high": np.nan} for part in parts]
        axes.plot(budgets, [e["value"] for e in estimates], marker="o", label=f"{name} (estimated)")
        axes.fill_between(budgets, [e["low"] for e in estimates], [e["high"] for e in estimates], alpha=0.15)
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set(xlabel="budget (expected cost of the incentives)", ylabel="incremental revenue",
             title="What each targeting earns at each budget")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure
