"""Benchmarks you can run anywhere: stage timings against the stock diffusers/transformers path, and a
FLOP/byte ledger counted on the meta device (so real sizes work on a laptop). See ``docs/perf-notes.md``."""
