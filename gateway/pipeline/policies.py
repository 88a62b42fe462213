"""The policy language of this pipeline: policy files read with the keys its stages declare."""

from __future__ import annotations

from pathlib import Path

from gateway.config.policy import PolicyLanguage, PolicySet
from gateway.pipeline.order import UNITS

POLICIES = PolicyLanguage(UNITS)


def load_policies(folder: Path) -> PolicySet:
    """Load ``folder/*.toml``; raise ``ConfigError`` (a ``PolicyError``) listing every problem.

    A missing or empty folder gives the built-in defaults (``PolicySet.files`` is empty).
    """
    return POLICIES.load(folder)
