"""Evaluation: datasets, scoring, the crash-safe runner, predictors (in-process or a TorchServe endpoint),
and reports. MLflow lives in ``mlflow_project/``; this package never imports it."""
