"""The recommender family: its evaluation protocol, models and baselines, re-ranker, rails and training."""
