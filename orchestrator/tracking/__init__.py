"""MLflow: the study's record projected into a tracking store. Only this package imports mlflow."""
