"""The training loop: imports torch and its own modules only (no mlflow, rich, hydra)."""
