"""Benchmarks that print figures and write results/bench_*.json (no timed tests)."""
