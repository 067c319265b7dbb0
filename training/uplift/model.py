"""The uplift model: for each customer and incentive, what an offer adds over the `window_days` after it, in revenue
and in the probability of buying at all.

One PyTorch network over the `churn_v1` features (encoded as the churn model encodes them), trained on randomised
campaign rows. A shared body feeds two heads per arm: the arm "none" (the control group: no offer) has a revenue
head and a purchase logit; each incentive adds a treatment-interaction head to both (revenue = base + delta_k,
logit = base + delta_k). A row's loss is on the arm it was given only, so every row teaches the base and a treated
row its incentive's delta; the uplift of incentive k is delta_k itself, not the difference of two separately
learnt models whose errors would not cancel (the T-learner's weakness).

Revenue is money and heavy-tailed; it is learnt as a mean (squared error on revenue over a scale, the training
rows' 99th percentile), because a campaign's incremental revenue is a difference of means: a log or a Huber loss
would learn something else. The purchase heads give the incremental purchase probability.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from loyal.training import artifacts
from loyal.training.churn.model import Columns, Encoder
from loyal.training.optimise import train_epochs

NO_OFFER = "none"  # the control group's arm


@dataclass(frozen=True)
class UpliftConfig:
    hidden: int = 64
    dropout: float = 0.1
    epochs: int = 40
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    purchase_weight: float = 1.0  # the purchase heads' share of the loss
    batch: int = 256
    seed: int = 0


class ArmHeads(torch.nn.Module):
    """A shared body; per output (revenue, purchase logit) a base head and one delta head per incentive."""

    def __init__(self, inputs: int, incentives: int, config: UpliftConfig):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(inputs, config.hidden), torch.nn.ReLU(), torch.nn.Dropout(config.dropout),
            torch.nn.Linear(config.hidden, config.hidden), torch.nn.ReLU(), torch.nn.Dropout(config.dropout),
        )
        self.base = torch.nn.Linear(config.hidden, 2)
        self.delta = torch.nn.Linear(config.hidden, 2 * incentives)

    def forward(self, x):
        """(revenue, logit), each (rows, 1 + incentives): column 0 no offer, column k the k-th incentive."""
        h = self.body(x)
        base, delta = self.base(h), self.delta(h).view(len(x), -1, 2)
        arms = torch.cat([base[:, None, :], base[:, None, :] + delta], dim=1)
        return arms[..., 0], arms[..., 1]


class UpliftModel:
    """fit(campaign rows, validation rows) -> predict(snapshot): per incentive, incremental revenue and purchase
    probability, and the revenue and purchase probability without an offer."""

    name = "uplift_network"

    def __init__(self, config: UpliftConfig = UpliftConfig()):
        self.config = config

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> UpliftModel:
        """Rows: the features, `treated`, `incentive`, `revenue`, `bought`. With validation rows, the epochs
        stop where their loss was lowest (the weights of that epoch are kept)."""
        c = self.config
        torch.manual_seed(c.seed)
        self.incentives = sorted(train.loc[train["treated"], "incentive"].dropna().unique().tolist())
        if not self.incentives:
            raise ValueError("no treated row: nothing to learn an incentive's effect from")
        self.encoder = Encoder().fit(train)
        self.revenue_scale = float(max(np.quantile(train["revenue"], 0.99), 1.0))
        x, arm, revenue, bought = self._tensors(train)
        self.encoded_width = int(x.shape[1])
        self.network = ArmHeads(self.encoded_width, len(self.incentives), c)
        optimiser = torch.optim.AdamW(self.network.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)

        def loss_of(rows, x, arm, revenue, bought):
            predicted, logit = self.network(x[rows])
            own = arm[rows][:, None]
            revenue_loss = torch.nn.functional.mse_loss(predicted.gather(1, own).squeeze(1), revenue[rows])
            purchase_loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logit.gather(1, own).squeeze(1), bought[rows])
            return revenue_loss + c.purchase_weight * purchase_loss

        best = {"loss": np.inf, "state": None, "epoch": c.epochs}
        held = self._tensors(validation) if validation is not None and len(validation) else None

        def keep_best(epoch: int) -> None:
            if held is None:
                return
            with torch.no_grad():
                loss = float(loss_of(torch.arange(len(held[0])), *held))
            if loss < best["loss"]:
                best.update(loss=loss, epoch=epoch + 1,
                            state={k: v.clone() for k, v in self.network.state_dict().items()})

        train_epochs(self.network, optimiser, len(x), c.batch, c.epochs, c.seed,
                     lambda rows: loss_of(rows, x, arm, revenue, bought), keep_best)
        if best["state"] is not None:
            self.network.load_state_dict(best["state"])
        self.epochs_kept = best["epoch"]
        self.network.eval()
        return self

    def _tensors(self, frame: pd.DataFrame):
        arms = {incentive: k + 1 for k, incentive in enumerate(self.incentives)}
        arm = np.where(frame["treated"].to_numpy(dtype=bool),
                       frame["incentive"].map(arms).fillna(-1).to_numpy(dtype=np.int64), 0)
        kept = arm >= 0  # a treated row of an incentive training never saw has no head to learn
        frame, arm = frame[kept], arm[kept]
        return (torch.from_numpy(self.encoder.transform(frame)), torch.from_numpy(arm),
                torch.from_numpy(frame["revenue"].to_numpy(dtype=np.float32) / self.revenue_scale),
                torch.from_numpy(frame["bought"].to_numpy(dtype=np.float32)))

    def _outputs(self, frame: Columns) -> tuple[np.ndarray, np.ndarray]:
        """(revenue, purchase probability) per arm, (rows, 1 + incentives), in float64 (see ChurnModel)."""
        weights = {name: value.double() for name, value in self.network.state_dict().items()}
        x = torch.from_numpy(self.encoder.transform(frame).astype(np.float64))
        with torch.no_grad():
            revenue, logit = torch.func.functional_call(self.network, weights, (x,))
        return revenue.numpy() * self.revenue_scale, expit(logit.numpy())

    def predict(self, frame: Columns) -> pd.DataFrame:
        """Per incentive k: incremental_revenue_k and incremental_purchase_k (over no offer); and revenue_none,
        purchase_none: what the customer would do without one."""
        revenue, purchase = self._outputs(frame)
        columns = {f"revenue_{NO_OFFER}": revenue[:, 0], f"purchase_{NO_OFFER}": purchase[:, 0]}
        for k, incentive in enumerate(self.incentives, start=1):
            columns[f"incremental_revenue_{incentive}"] = revenue[:, k] - revenue[:, 0]
            columns[f"incremental_purchase_{incentive}"] = purchase[:, k] - purchase[:, 0]
        index = frame.index if isinstance(frame, pd.DataFrame) else None
        return pd.DataFrame(columns, index=index)

    # ------------------------------------------------------------------------------------------- files
    def save(self, folder: Path) -> Path:
        """Write the fitted model into a new folder, without pickle (training/artifacts.py)."""
        arrays = artifacts.Arrays()
        self.encoder.put(arrays)
        arrays.put_state("network", self.network)
        config = {"kind": "loyal-uplift", "config": asdict(self.config), "encoded_width": self.encoded_width,
                  "categories": self.encoder.categories, "incentives": self.incentives,
                  "revenue_scale": self.revenue_scale, "epochs_kept": self.epochs_kept}
        return artifacts.write(folder, config, arrays)

    @classmethod
    def load(cls, folder: Path) -> UpliftModel:
        saved, arrays = artifacts.read(folder, "loyal-uplift")
        model = cls(UpliftConfig(**saved["config"]))
        model.encoder = Encoder.saved(arrays, saved["categories"])
        model.encoded_width, model.incentives = saved["encoded_width"], saved["incentives"]
        model.revenue_scale, model.epochs_kept = saved["revenue_scale"], saved["epochs_kept"]
        model.network = arrays.load_state("network", ArmHeads(model.encoded_width, len(model.incentives),
                                                              model.config))
        model.network.eval()
        return model
