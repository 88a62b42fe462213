"""The policy a single call runs under, after every matching rule has been applied.

Pure data, resolved once per call by the policy layer and carried on the ``ToolCall``. It holds one
settings object per guard, keyed by the guard's name; each guard module declares its settings (a
frozen dataclass) and reads them back with ``call.policy.of(ITS_UNIT)``. Core knows none of the
guards: a unit is anything with a ``name`` and a ``default``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeVar

Mode = Literal["off", "warn", "block"]
StoreFailure = Literal["open", "closed"]
"""When the shared state store cannot be reached: let calls through, or refuse them."""

Evaluator = Callable[[Mapping[str, Any]], Any]
"""A compiled expression: takes the activation (``args``, ``client``, ``server``, ``tool``,
``session``, ``annotations``) and returns a value."""

S = TypeVar("S", covariant=True)


class SettingsKey(Protocol[S]):
    """What names one guard's settings in a ``ResolvedPolicy`` (``gateway.config.units.Unit``)."""

    @property
    def name(self) -> str: ...

    @property
    def default(self) -> S: ...


_EMPTY: Mapping[str, Any] = MappingProxyType({})


class ResolvedPolicy:
    """Every guard's settings for one call, and the rules that produced them."""

    __slots__ = ("rules", "settings")

    def __init__(self, rules: tuple[str, ...] = (), settings: Mapping[str, Any] | None = None) -> None:
        self.rules = rules
        """Names of the rules that matched, in order applied (for explain and audit)."""
        self.settings: Mapping[str, Any] = _EMPTY if settings is None else settings
        """Settings by unit name; a unit absent here runs on its default."""

    def of(self, unit: SettingsKey[S]) -> S:
        found = self.settings.get(unit.name)
        return unit.default if found is None else found  # type: ignore[no-any-return]

    def set(self, unit: SettingsKey[Any], value: Any) -> ResolvedPolicy:
        """A copy with ``unit``'s settings replaced (how tests and lookups build a policy)."""
        return ResolvedPolicy(self.rules, MappingProxyType({**self.settings, unit.name: value}))

    def __repr__(self) -> str:
        return f"ResolvedPolicy(rules={self.rules!r}, settings={dict(self.settings)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResolvedPolicy):
            return NotImplemented
        return self.rules == other.rules and dict(self.settings) == dict(other.settings)

    def __hash__(self) -> int:
        return hash(self.rules)


DEFAULT_POLICY = ResolvedPolicy()
