"""The guards, and the one place that fixes their order.

The order is part of the design, not configuration: each line says why its guard stands where it
does. The guards themselves arrive with the policy layer; until then the chain is the upstream.
"""

from __future__ import annotations

from gateway.core import Guard


def ordered_guards() -> list[Guard]:
    """The guards of the current policy, outermost first."""
    return []
