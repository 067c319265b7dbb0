"""Loyal: recommendations, churn risk and personalised offers for retailers."""
