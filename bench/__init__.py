"""Benchmarks: direct vs through the gateway, measured in one run and printed as ratios."""
