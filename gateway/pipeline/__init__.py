"""The call pipeline: the ordered stages, the chain built from them, and their policy language."""

from gateway.guards.stage import GuardDeps, GuardEvents, Stage
from gateway.pipeline.build import NamedGuard, build_guards, build_pipeline, fold
from gateway.pipeline.order import GUARD_NAMES, STAGES, UNITS
from gateway.pipeline.policies import POLICIES, load_policies

__all__ = [
    "GUARD_NAMES",
    "POLICIES",
    "STAGES",
    "UNITS",
    "GuardDeps",
    "GuardEvents",
    "NamedGuard",
    "Stage",
    "build_guards",
    "build_pipeline",
    "fold",
    "load_policies",
]
