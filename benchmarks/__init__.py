"""Latency and memory measurement, side by side with the alternatives: python -m benchmarks.latency."""
