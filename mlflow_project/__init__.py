"""MLflow entry points (see MLproject): evaluate, ablation, register. Only this package imports MLflow."""
