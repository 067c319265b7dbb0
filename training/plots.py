"""The figures that training and evaluation log to MLflow (and the notebooks show): each returns a matplotlib
Figure built from numbers already measured, never computing a metric of its own beyond what it draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402


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
