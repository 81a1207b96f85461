"""Maintenance scripts of g2u-serve (run with ``python -m scripts.<name>``)."""
