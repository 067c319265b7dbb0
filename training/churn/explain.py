"""Why a customer's churn risk is what it is, in words a marketer reads.

Feature ablation against a reference customer: for each input in turn, the customer's value is replaced by the
reference's (the median training customer) and the risk recomputed; the input's contribution is how much the risk
moves back. The top drivers are those that raise the risk most (for a low-risk customer: those that lower it most),
each with its signed contribution in percentage points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loyal.schema import COUNTRY, LOYALTY_TIER
from loyal.training.churn.model import CATEGORICAL_FEATURES, ChurnModel

PLAIN_NAMES = {
    "recency_days": "days since the last purchase",
    "tenure_days": "time as a customer",
    "orders_30d": "orders in the last 30 days",
    "orders_90d": "orders in the last 90 days",
    "orders_365d": "orders in the last year",
    "orders_total": "orders ever",
    "spend_30d": "spend in the last 30 days",
    "spend_90d": "spend in the last 90 days",
    "spend_365d": "spend in the last year",
    "spend_total": "spend ever",
    "returns_365d": "returns in the last year",
    "avg_order_value_365d": "average order value",
    "mean_days_between_orders": "usual gap between orders",
    "purchase_days_total": "days with a purchase, ever",
    "purchase_days_180d": "days with a purchase in the last 180 days",
    "gap_std_days": "how irregular the gaps between purchases are",
    "lines_per_order_365d": "products per order",
    "typical_quantity_per_line_365d": "typical quantity per product bought",
    "typical_unit_price_365d": "typical price of the products bought",
    "views_30d": "product views in the last 30 days",
    "add_to_carts_30d": "add-to-carts in the last 30 days",
    "spend_trend": "spend trend (last 90 days against the 90 before)",
    "web_share_365d": "share of orders on the web",
    "app_share_365d": "share of orders in the app",
    "store_share_365d": "share of orders in store",
    "cart_conversion_30d": "add-to-carts that became purchases",
    COUNTRY: "country",
    LOYALTY_TIER: "loyalty tier",
}
TOP_DRIVERS = 3
# Customers whose ablations go through the network together: each brings one copy per input (about 30), so a
# million at once held 30 million encoded rows and their activations (more than 20 GiB); a block holds a few
# hundred MB.
BLOCK = 20_000


def contributions(model: ChurnModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Per customer (rows of `frame`) and input (columns, raw names): risk minus the risk with that input set to the
    reference customer's value. A block of customers' ablations go through the network as one batch, encoded."""
    encoded = model.encoder.transform(frame)
    reference = model.encoder.transform(model.reference)[0]
    columns = {name: cols for name, cols in model.encoder.columns_of().items()
               if name in model.reference.columns and name in frame.columns}
    blocks = [_ablations(model, encoded[start:start + BLOCK], reference, list(columns.values()))
              for start in range(0, len(encoded), BLOCK)]
    moved = np.concatenate(blocks) if blocks else np.zeros((0, len(columns)))
    return pd.DataFrame(moved, index=frame.index, columns=list(columns))


def _ablations(model: ChurnModel, encoded: np.ndarray, reference: np.ndarray, columns: list) -> np.ndarray:
    """(customers, inputs): each customer's risk minus their risk with one input at the reference's value."""
    batch = np.repeat(encoded[None, :, :], len(columns) + 1, axis=0)  # copy 0 is the customer as is
    for copy, cols in enumerate(columns, start=1):
        batch[copy][:, cols] = reference[cols]
    logit, _ = model.encoded_outputs(batch.reshape(-1, encoded.shape[1]))
    risk = model.churn_of_logit(logit).reshape(len(columns) + 1, len(encoded))
    return (risk[0] - risk[1:]).T


def top_drivers(model: ChurnModel, frame: pd.DataFrame, top: int = TOP_DRIVERS) -> pd.Series:
    """One text per customer, e.g. "days since the last purchase +18 pts; orders in the last year +6 pts"."""
    parts = contributions(model, frame)
    risk = model.predict(frame)["churn_probability"].to_numpy()
    values = parts.to_numpy()
    names = np.array([PLAIN_NAMES.get(c, c) for c in parts.columns])
    # A risky customer is explained by what raises the risk; a safe one by what keeps it low.
    direction = np.where(risk >= 0.5, 1.0, -1.0)[:, None]
    order = np.argsort(-(values * direction), axis=1, kind="stable")[:, :top]
    categories = {c: frame[c].to_numpy() for c in CATEGORICAL_FEATURES if c in frame.columns}
    texts = []
    for row, columns in enumerate(order):
        chosen = [c for c in columns if values[row, c] * direction[row, 0] > 0.005]  # under half a point says nothing
        texts.append("; ".join(f"{_name(names[c], parts.columns[c], categories, row)} {values[row, c] * 100:+.0f} pts"
                               for c in chosen))
    return pd.Series(texts, index=frame.index)


def _name(plain: str, column: str, categories: dict[str, np.ndarray], row: int) -> str:
    """A category's driver says which category: "country (France)"."""
    if column in categories and pd.notna(categories[column][row]):
        return f"{plain} ({categories[column][row]})"
    return plain
