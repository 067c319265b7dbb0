"""What MLflow registers `loyal-churn` with (models from code): loading a version runs this file, which names Loyal's
own wrapper; the wrapper reads the saved network's arrays. No pickle is written or read."""

from mlflow.models import set_model

from loyal.training.churn.scoring import ChurnPyfunc

set_model(ChurnPyfunc())
