"""Building the pipeline: guards from their stages, folded once around the upstream."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.core import CallNext, Guard, build_chain
from gateway.guards.stage import GuardDeps, Stage
from gateway.pipeline.order import STAGES

Observer = Callable[[CallNext], CallNext]
"""Wraps the whole chain (metrics, recent calls); see ``gateway.observe.observer``."""
NamedGuard = tuple[str, Guard]


def build_guards(deps: GuardDeps, stages: Sequence[Stage] = STAGES) -> list[NamedGuard]:
    """Each stage's guard, built once from ``deps``, in order, with its stage's name. A stage
    without a guard (settings only), or whose guard ``deps`` cannot provide (the approval gate
    without an approval service), is left out."""
    named: list[NamedGuard] = []
    for stage in stages:
        guard = stage.build(deps) if stage.build is not None else None
        if guard is not None:
            named.append((stage.name, guard))
    return named


def fold(guards: Sequence[NamedGuard], terminal: CallNext, observe: Observer | None = None) -> CallNext:
    """The chain of ``guards`` (outermost first) around ``terminal``, inside ``observe``."""
    chain = build_chain([guard for _, guard in guards], terminal, names=[name for name, _ in guards])
    return observe(chain) if observe is not None else chain


def build_pipeline(
    deps: GuardDeps,
    terminal: CallNext,
    *,
    observe: Observer | None = None,
    stages: Sequence[Stage] = STAGES,
) -> CallNext:
    """The chain a ``tools/call`` runs through: every stage's guard around ``terminal`` (the
    upstream pool's call), inside ``observe``.

    Pure: it starts nothing and owns nothing, so the app, the benchmarks and tests build the same
    pipeline.
    """
    return fold(build_guards(deps, stages), terminal, observe)
