"""Load tests (locust, its own process) and the reliability suite against a real TorchServe."""
