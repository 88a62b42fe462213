"""Metrics, and the one observer that records every call around the whole chain."""
