"""The uplift family: training sets from past campaigns, the model of whom an incentive changes, its baselines
and evaluation."""
