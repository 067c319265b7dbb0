"""The churn and value family: its snapshots, network, baselines, evaluation, explanations, scoring and training."""
