"""Test doubles shared by tests/ and load_tests/ (importable from both because they live in the package)."""
