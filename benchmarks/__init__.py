"""sisdaemon's benchmark: ``python -m benchmarks`` (see docs/performance.md for what it measures and how to run the
issue's sizes). Not part of the test command; tests/test_benchmarks.py runs it once at a tiny size."""
