"""The uplift model's baselines, from a maintained library (causalml): a T-learner (one LightGBM per arm, uplift as
the difference of their predictions) and an X-learner (which imputes each row's effect from the other arm's model
and learns that, weighting by the propensity). Both are given the same encoded features, arms and revenue as the
network, and answer in its columns (`incremental_revenue_<incentive>`), so that every ranking goes through the same
evaluation. They are measured, never registered: the champion is Loyal's own network or nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from causalml.inference.meta import BaseTRegressor, BaseXRegressor
from lightgbm import LGBMRegressor

from loyal.training.churn.model import Encoder

CONTROL = "control"
LEARNERS = {"t_learner": BaseTRegressor, "x_learner": BaseXRegressor}


def arms(rows: pd.DataFrame) -> np.ndarray:
    """Each row's arm as causalml names them: its incentive when treated, CONTROL otherwise."""
    return np.where(rows["treated"].to_numpy(dtype=bool), rows["incentive"].astype(str).to_numpy(), CONTROL)


def lightgbm(seed: int = 0) -> LGBMRegressor:
    """The regressor every LightGBM in the uplift evaluation uses: the meta-learners' arms and the expected revenue."""
    return LGBMRegressor(n_estimators=200, learning_rate=0.05, min_child_samples=50, subsample=0.8, subsample_freq=1,
                         random_state=seed, verbose=-1)


class MetaLearner:
    """A causalml meta-learner over LightGBM, fitted on campaign rows; predicts incremental revenue per incentive."""

    def __init__(self, name: str, seed: int = 0):
        self.name = name
        self.seed = seed

    def fit(self, train: pd.DataFrame) -> MetaLearner:
        self.encoder = Encoder().fit(train)
        self.learner = LEARNERS[self.name](learner=lightgbm(self.seed), control_name=CONTROL)
        assigned = arms(train)
        self.incentives = sorted(set(assigned) - {CONTROL})
        # The arms were drawn at random, so each one's propensity is known (its share beside control), not fitted.
        counts = pd.Series(assigned).value_counts()
        self.propensity = {k: float(counts[k] / (counts[k] + counts.get(CONTROL, 0))) for k in self.incentives}
        self.learner.fit(self.encoder.transform(train), treatment=assigned,
                         y=train["revenue"].to_numpy(dtype=np.float64), **self._known(len(train)))
        return self

    def _known(self, rows: int) -> dict:
        if self.name != "x_learner":  # the T-learner weighs nothing by propensity
            return {}
        return {"p": {k: np.full(rows, share) for k, share in self.propensity.items()}}

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        # (rows, incentives), in sorted order
        effects = self.learner.predict(self.encoder.transform(frame), **self._known(len(frame)))
        return pd.DataFrame({f"incremental_revenue_{incentive}": effects[:, k]
                             for k, incentive in enumerate(self.incentives)}, index=frame.index)
