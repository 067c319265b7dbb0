"""The BentoML offer service, the offer policy and campaign targeting (installed as loyal.serving)."""
