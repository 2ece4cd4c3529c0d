"""Benchmarks that run against the local world on its virtual clock (``scripts/bench_*``)."""
