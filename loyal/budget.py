"""Spending a budget down a ranking, as a campaign list is filled: the one loop `loyal campaign` fills its list with
and `loyal evaluate uplift` replays each targeting with, so that both spend a budget alike."""

from __future__ import annotations

import numpy as np


def spend_down(costs: np.ndarray, budget: float, limit: int | None = None) -> np.ndarray:
    """Positions taken, in the order given (best first): each whose cost still fits what is left of the budget (one
    too dear is passed over for cheaper ones below), until `limit` are taken."""
    taken, spent = [], 0.0
    for position, cost in enumerate(np.asarray(costs, dtype=np.float64).tolist()):
        if limit is not None and len(taken) == limit:
            break
        if spent + cost <= budget:
            taken.append(position)
            spent += cost
    return np.array(taken, dtype=np.int64)
