"""What MLflow registers `loyal-uplift` with (models from code): loading a version runs this file, which names Loyal's
own wrapper; the wrapper reads the saved network's arrays. No pickle is written or read."""

from mlflow.models import set_model

from loyal.training.uplift.scoring import UpliftPyfunc

set_model(UpliftPyfunc())
