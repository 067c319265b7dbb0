"""Each name once: every input a model reads is a feature of the catalogue (`features/compute.py`) and of the
FeatureService the model is trained and served with, and a model given rows without one of its inputs fails
instead of reading zeros."""

from __future__ import annotations

import pandas as pd
import pytest

from loyal.features import compute, definitions
from loyal.training.churn.baselines import RFM_FEATURES
from loyal.training.churn.data import FEATURE_SERVICE as CHURN_SERVICE
from loyal.training.churn.model import CATEGORICAL_FEATURES, LOG_FEATURES, RAW_FEATURES, Encoder
from loyal.training.recommender.ranker import CUSTOMER_FEATURES, ITEM_FEATURES, _transform
from loyal.training.recommender.training import FEATURE_SERVICE as RECOMMENDER_SERVICE

CATALOGUE = compute.CUSTOMER_BEHAVIOUR | compute.CUSTOMER_PROFILE | compute.ITEM_STATISTICS


def _service(name: str) -> set[str]:
    (service,) = [s for s in definitions.SERVICES if s.name == name]
    return {feature.name for projection in service.feature_view_projections for feature in projection.features}


@pytest.mark.parametrize("inputs, service", [
    ([*LOG_FEATURES, *RAW_FEATURES, *CATEGORICAL_FEATURES], CHURN_SERVICE),  # the churn network
    (RFM_FEATURES, CHURN_SERVICE),  # the churn baselines
    ([*CUSTOMER_FEATURES, *ITEM_FEATURES], RECOMMENDER_SERVICE),  # the re-ranker
])
def test_every_model_input_is_a_feature_of_its_service(inputs, service):
    assert set(inputs) <= set(CATALOGUE)
    assert set(inputs) <= _service(service), set(inputs) - _service(service)


def test_the_re_ranker_refuses_rows_without_one_of_its_features():
    index = pd.Index(["c1"])
    given = pd.DataFrame({name: [1.0] for name in CUSTOMER_FEATURES}, index=index)
    assert _transform(given, CUSTOMER_FEATURES, index).shape == (1, len(CUSTOMER_FEATURES))
    assert _transform(pd.DataFrame(index=index), CUSTOMER_FEATURES, index).sum() == 0  # the no-features source
    with pytest.raises(ValueError, match="spend_trend"):
        _transform(given.drop(columns="spend_trend"), CUSTOMER_FEATURES, index)


def test_the_churn_model_refuses_rows_without_one_of_its_features():
    rows = pd.DataFrame({name: [1.0, 2.0] for name in [*LOG_FEATURES, *RAW_FEATURES]}
                        | {name: ["a", "b"] for name in CATEGORICAL_FEATURES})
    encoder = Encoder().fit(rows)
    assert encoder.transform(rows).shape[0] == 2
    with pytest.raises(ValueError, match="views_30d"):
        encoder.transform(rows.drop(columns="views_30d"))
    with pytest.raises(ValueError, match="views_30d"):
        encoder.transform({name: list(values) for name, values in rows.drop(columns="views_30d").items()})
