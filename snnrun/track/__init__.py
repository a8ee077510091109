"""Observers of training: MLflow runs, rich progress and log lines (hooks only).

Import the submodules directly (``snnrun.track.mlflow``, ``snnrun.track.progress``):
this package imports nothing, so ``logger=none`` runs never load MLflow.
"""
