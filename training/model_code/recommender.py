"""What MLflow registers `loyal-recommender` with (models from code): loading a version runs this file, which names
Loyal's own wrapper; the wrapper reads the saved bundle's arrays. No pickle is written or read."""

from mlflow.models import set_model

from loyal.training.recommender.rails import RecommenderPyfunc

set_model(RecommenderPyfunc())
