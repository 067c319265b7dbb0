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
