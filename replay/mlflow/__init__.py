"""`replay --to mlflow`: recorded runs into an MLflow tracking store (push.py)."""
