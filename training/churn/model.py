"""The churn and value model: one PyTorch network with two heads over the `churn_v1` features.

- churn head: P(no purchase in the horizon), trained with binary cross-entropy, then temperature-scaled on a
  calibration snapshot the network never trained on, so that a 0.3 means three in ten;
- value head: log(1 + spend in the horizon) of a customer who buys again, trained with a Huber loss on the
  customers who did. The expected value is money, a mean: P(buys again) x E[spend | buys]. Two parts, because a
  customer's value is mostly whether they come back at all, which the churn head already knows best. Back from log
  space, E[spend | buys] is the head's exp(.) - 1 times one factor that makes the calibration snapshot's buyers'
  predicted spend sum to what they spent (a log-normal correction overshot by half on spend this skewed).

Inputs: counts and money through log1p, standardised; shares and trends as they are; whether the customer has
ordered only once (mean_days_between_orders is missing then); country (the training data's most common ones, the
rest as "other") and loyalty tier, one-hot. Every input comes from the snapshot frame (churn_data.snapshot).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit

from loyal.schema import COUNTRY, LOYALTY_TIER
from loyal.training import artifacts
from loyal.training.optimise import train_epochs

LOG_FEATURES = [  # recency first: the network treats it apart (see _network)
    "recency_days", "tenure_days", "orders_30d", "orders_90d", "orders_365d", "orders_total", "spend_30d",
    "spend_90d", "spend_365d", "spend_total", "returns_365d", "avg_order_value_365d", "mean_days_between_orders",
    "views_30d", "add_to_carts_30d", "purchase_days_total", "purchase_days_180d", "gap_std_days",
    "lines_per_order_365d", "typical_quantity_per_line_365d", "typical_unit_price_365d",
]
RAW_FEATURES = ["spend_trend", "web_share_365d", "app_share_365d", "store_share_365d", "cart_conversion_30d"]
CATEGORICAL_FEATURES = [COUNTRY, LOYALTY_TIER]
MAX_CATEGORIES = 12  # per categorical feature, the rest is "other"


@dataclass(frozen=True)
class ChurnConfig:
    hidden: int = 64
    dropout: float = 0.1
    epochs: int = 30
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    value_weight: float = 0.3  # the value head's share of the loss
    batch: int = 256
    seed: int = 0


Columns = Union[pd.DataFrame, Mapping[str, Sequence]]  # a snapshot frame, or columns of one request's customers


def _rows(frame: Columns) -> int:
    return len(frame) if isinstance(frame, pd.DataFrame) else len(next(iter(frame.values())))


class Encoder:
    """Snapshot frame -> float32 matrix; its scales and categories are learnt once, from the training rows."""

    def fit(self, frame: pd.DataFrame) -> Encoder:
        numeric = self._numeric(frame)
        self.mean, self.std = numeric.mean(axis=0), numeric.std(axis=0)
        # An input that never varied in training taught the network nothing; later values of it (a year of data
        # where training saw nine months) are ignored rather than blown up by a scale of almost zero.
        self.varied = self.std > 1e-6
        self.std = np.where(self.varied, self.std, 1.0)
        self.categories = {
            name: list(frame[name].astype("string").fillna("unknown").value_counts().index[:MAX_CATEGORIES])
            for name in CATEGORICAL_FEATURES if name in frame.columns
        }
        return self

    def put(self, arrays: artifacts.Arrays) -> None:
        """Its scales into a model's saved arrays (its categories go into the model's JSON config)."""
        arrays.put("encoder.mean", self.mean)
        arrays.put("encoder.std", self.std)
        arrays.put("encoder.varied", self.varied)

    @classmethod
    def saved(cls, arrays: artifacts.Arrays, categories: dict[str, list[str]]) -> Encoder:
        """The encoder `put` saved, with its categories."""
        encoder = cls()
        encoder.mean, encoder.std = arrays["encoder.mean"], arrays["encoder.std"]
        encoder.varied = arrays["encoder.varied"]
        encoder.categories = categories
        return encoder

    def transform(self, frame: Columns) -> np.ndarray:
        """A DataFrame, or for one request's customers a dict of columns (lists): NumPy over whole columns."""
        columns = [np.where(self.varied, (self._numeric(frame) - self.mean) / self.std, 0.0)]
        rows = _rows(frame)
        for name, values in self.categories.items():
            index = {value: i for i, value in enumerate(values)}
            other = len(values)
            unknown = index.get("unknown", other)
            raw = np.asarray(frame[name], dtype=object) if name in frame else np.full(rows, None)
            codes = np.fromiter((unknown if v is None or v is pd.NA or v != v else index.get(str(v), other)
                                 for v in raw), dtype=np.int64, count=len(raw))
            columns.append(np.eye(other + 1, dtype=np.float32)[codes])
        return np.concatenate(columns, axis=1).astype(np.float32)

    def columns_of(self) -> dict[str, list[int]]:
        """Which encoded columns each raw input fills: every input is encoded on its own, so replacing a raw value
        and replacing its encoded columns are the same thing."""
        n_log, n_raw = len(LOG_FEATURES), len(RAW_FEATURES)
        once = n_log + n_raw  # the "ordered only once" flag comes from mean_days_between_orders
        columns = {name: [i] for i, name in enumerate(LOG_FEATURES)}
        columns["mean_days_between_orders"].append(once)
        columns |= {name: [n_log + j] for j, name in enumerate(RAW_FEATURES)}
        start = once + 1
        for name, values in self.categories.items():
            columns[name] = list(range(start, start + len(values) + 1))
            start += len(values) + 1
        return columns

    @staticmethod
    def _numeric(frame: Columns) -> np.ndarray:
        rows, names = _rows(frame), [*LOG_FEATURES, *RAW_FEATURES]
        absent = [name for name in names if name not in frame]
        if absent:  # a feature the network was built on and is not given: an error, never zeros
            raise ValueError(f"the churn model's input lacks {', '.join(absent)}")
        if isinstance(frame, pd.DataFrame):
            numbers = np.column_stack([frame[name].to_numpy(dtype=np.float64, na_value=np.nan) for name in names])
        else:  # a request's lists: one array from all of them, not one per column (a third of a 1-row answer)
            numbers = np.array([[np.nan if v is None or v is pd.NA else v for v in frame[name]]
                                for name in names], dtype=np.float64).reshape(len(names), rows).T
        logs = np.log1p(np.clip(np.nan_to_num(numbers[:, : len(LOG_FEATURES)], nan=0.0), 0.0, None))
        raws = np.nan_to_num(numbers[:, len(LOG_FEATURES):], nan=0.0)
        once = np.isnan(numbers[:, LOG_FEATURES.index("mean_days_between_orders")])[:, None]
        return np.concatenate([logs, raws, once], axis=1).astype(np.float32)


class TwoHeads(torch.nn.Module):
    """Two heads on one body. The churn logit is a(x) + b(x) * recency, with b(x) >= 0 and recency (column 0) kept
    out of the body: a more recent purchase can never raise the risk, everything else equal, yet how much recency
    matters still depends on the customer (a weekly buyer's month away says more than a yearly buyer's)."""

    def __init__(self, inputs: int, config: ChurnConfig):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(inputs - 1, config.hidden), torch.nn.ReLU(), torch.nn.Dropout(config.dropout),
            torch.nn.Linear(config.hidden, config.hidden), torch.nn.ReLU(), torch.nn.Dropout(config.dropout),
        )
        self.churn = torch.nn.Linear(config.hidden, 1)
        self.recency_slope = torch.nn.Linear(config.hidden, 1)
        self.value = torch.nn.Linear(config.hidden + 1, 1)

    def forward(self, x):
        recency, h = x[:, :1], self.body(x[:, 1:])
        slope = torch.nn.functional.softplus(self.recency_slope(h))
        churn = self.churn(h) + slope * recency
        return churn.squeeze(-1), self.value(torch.cat([h, recency], dim=1)).squeeze(-1)


def reference_customer(train: pd.DataFrame) -> pd.DataFrame:
    """The median training customer (numbers: medians; categories: the most common), as one row."""
    row = {}
    for name in [*LOG_FEATURES, *RAW_FEATURES]:
        if name in train.columns:
            row[name] = train[name].astype("float64").median()
    for name in CATEGORICAL_FEATURES:
        if name in train.columns:
            common = train[name].astype("string").dropna().mode()
            row[name] = common.iloc[0] if len(common) else pd.NA
    return pd.DataFrame([row])


class ChurnModel:
    """fit(training snapshots, calibration snapshot) -> predict(snapshot): churn_probability, expected_value."""

    name = "churn_network"

    def __init__(self, config: ChurnConfig = ChurnConfig()):
        self.config = config

    def fit(self, train: pd.DataFrame, calibration: pd.DataFrame, epoch_callback=None) -> ChurnModel:
        """`epoch_callback(epoch, model)` runs after each epoch (Optuna's pruning); it may raise to stop."""
        c = self.config
        torch.manual_seed(c.seed)
        self.encoder = Encoder().fit(train)
        self.reference = reference_customer(train)  # what explanations compare against
        x = torch.from_numpy(self.encoder.transform(train))
        churned = torch.from_numpy(train["churned"].to_numpy(dtype=np.float32))
        value = torch.from_numpy(np.log1p(train["future_spend"].to_numpy(dtype=np.float32)))
        bought = churned == 0
        # A customer unlike any in training (a year away, where training saw months) must not get an extrapolated
        # fortune: the value head's answer is kept within the spends training saw.
        self.max_log_spend = float(value.max()) if len(value) else 0.0
        self.encoded_width = int(x.shape[1])
        self.network = TwoHeads(self.encoded_width, c)
        self.temperature, self.value_scale = 1.0, 1.0  # until the calibration snapshot sets them
        optimiser = torch.optim.AdamW(self.network.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)

        def two_head_loss(batch):
            logit, spend = self.network(x[batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, churned[batch])
            buyers = bought[batch]
            spend_loss = torch.nn.functional.huber_loss(spend[buyers], value[batch][buyers], reduction="sum")
            return loss + c.value_weight * spend_loss / len(batch)

        train_epochs(self.network, optimiser, len(x), c.batch, c.epochs, c.seed, two_head_loss,
                     None if epoch_callback is None else lambda epoch: epoch_callback(epoch, self))
        self.temperature = self._temperature(calibration)
        self.value_scale = self._value_scale(calibration)
        return self

    def _value_scale(self, calibration: pd.DataFrame) -> float:
        """What the calibration snapshot's buyers spent over what the value head predicts for them (1 when none
        bought)."""
        buyers = calibration[~calibration["churned"].to_numpy(dtype=bool)]
        _, spend = self._outputs(buyers)
        predicted = float(np.expm1(np.clip(spend, 0.0, self.max_log_spend)).sum())
        return float(buyers["future_spend"].sum()) / predicted if predicted > 0 else 1.0

    def _outputs(self, frame: Columns) -> tuple[np.ndarray, np.ndarray]:
        return self.encoded_outputs(self.encoder.transform(frame))

    def encoded_outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(churn logit, log spend) of already encoded rows, computed in float64 from the float32 weights: a row's
        score then does not depend on the rows it is scored with. In float32, matrix products round differently for
        different batch shapes, and a Spark UDF's batches moved scores by 5e-7 from the same rows scored at once."""
        weights = {name: value.double() for name, value in self.network.state_dict().items()}
        with torch.no_grad():
            logit, spend = torch.func.functional_call(self.network, weights, (torch.from_numpy(x.astype(np.float64)),))
        return logit.numpy(), spend.numpy()

    def churn_of_logit(self, logit: np.ndarray) -> np.ndarray:
        return expit(logit / self.temperature)

    def _temperature(self, calibration: pd.DataFrame) -> float:
        """The temperature that minimises the calibration snapshot's log loss (one number: ranks do not move)."""
        logit, _ = self._outputs(calibration)
        churned = calibration["churned"].to_numpy(dtype=float)

        def log_loss(log_t):
            z = logit / np.exp(log_t)
            return float(np.mean(np.logaddexp(0.0, z) - churned * z))

        return float(np.exp(minimize_scalar(log_loss, bounds=(-3.0, 3.0), method="bounded").x))

    # ------------------------------------------------------------------------------------------- files
    def save(self, folder: Path) -> Path:
        """Write the fitted model into a new folder, without pickle (training/artifacts.py)."""
        arrays = artifacts.Arrays()
        encoder = self.encoder
        encoder.put(arrays)
        arrays.put_state("network", self.network)
        reference = {name: None if pd.isna(value) else (value if isinstance(value, str) else float(value))
                     for name, value in self.reference.iloc[0].items()}
        config = {"kind": "loyal-churn", "config": asdict(self.config), "encoded_width": self.encoded_width,
                  "categories": encoder.categories, "reference": reference, "temperature": self.temperature,
                  "value_scale": self.value_scale, "max_log_spend": self.max_log_spend}
        return artifacts.write(folder, config, arrays)

    @classmethod
    def load(cls, folder: Path) -> ChurnModel:
        """The model `save` wrote: it answers exactly as the one that was saved."""
        saved, arrays = artifacts.read(folder, "loyal-churn")
        model = cls(ChurnConfig(**saved["config"]))
        model.encoder = Encoder.saved(arrays, saved["categories"])
        model.encoded_width = saved["encoded_width"]
        model.network = arrays.load_state("network", TwoHeads(model.encoded_width, model.config))
        numbers = [*LOG_FEATURES, *RAW_FEATURES]
        model.reference = pd.DataFrame([saved["reference"]]).astype(
            {name: "float64" if name in numbers else "string" for name in saved["reference"]})
        model.temperature, model.value_scale = saved["temperature"], saved["value_scale"]
        model.max_log_spend = saved["max_log_spend"]
        return model

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        churn, value = self.predict_arrays(frame)
        return pd.DataFrame({"churn_probability": churn, "expected_value": value}, index=frame.index)

    def predict_arrays(self, frame: Columns) -> tuple[np.ndarray, np.ndarray]:
        """(churn probability, expected value) without pandas: the service's path for one customer."""
        logit, spend = self._outputs(frame)
        churn = self.churn_of_logit(logit)
        spend_if_bought = self.value_scale * np.expm1(np.clip(spend, 0.0, self.max_log_spend))
        return churn, (1.0 - churn) * spend_if_bought
