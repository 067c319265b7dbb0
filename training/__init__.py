"""Recommenders, churn and value models, evaluation, tuning and the registry (installed as loyal.training)."""
