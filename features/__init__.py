"""Feast feature repo and the one module that computes features (installed as loyal.features)."""
