"""Approval records and signed state run on every store: the state tests' fixtures, shared."""

from tests.state.conftest import clock, store

__all__ = ["clock", "store"]
