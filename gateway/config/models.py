"""The pydantic models of ``servers.toml``.

Every model forbids unknown keys (a typo must fail loudly, not silently fall back to a default) and
is frozen (the running gateway shares one config object between tasks). Units live in field names.

Checks that span several values report a list of problems through one custom error type
(``PROBLEMS_ERROR``), so that the loader can point at the exact key path of each problem instead of
at the model that ran the check.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

Loc = tuple[str | int, ...]

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
SERVER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
# Header values are sent verbatim: a line break would let a value inject a second header.
HEADER_VALUE_PATTERN = r"^[^\r\n\x00]*$"
ENV_NAME_PATTERN = r"^[^=\x00]+$"
HOST_PATTERN = r"^[A-Za-z0-9._\-\[\]:]+(:\*)?$"
ORIGIN_PATTERN = r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/\s]+$"
URL_PATTERN = r"^https?://[^\s/?#]+\S*$"

# Read by the loader to turn a regex mismatch into words an operator understands.
PATTERN_HELP: dict[str, str] = {
    NAME_PATTERN: "only letters, digits, '_', '.' and '-'",
    SERVER_ID_PATTERN: "a letter or digit, then only letters, digits, '_' and '-'",
    TOOL_NAME_PATTERN: "1 to 128 letters, digits, '_', '.' or '-'",
    HEADER_NAME_PATTERN: "a header name (letters, digits and !#$%&'*+.^_`|~-)",
    HEADER_VALUE_PATTERN: "a header value without line breaks",
    ENV_NAME_PATTERN: "a non-empty variable name without '='",
    HOST_PATTERN: "a host or host:port, where the port may be '*' (e.g. 'example.com:*')",
    ORIGIN_PATTERN: "an origin scheme://host[:port] without a path (e.g. 'https://app.example.com')",
    URL_PATTERN: "an http:// or https:// URL",
}

# Fields the loader sets; a servers.toml that sets them is wrong, and the JSON Schema omits them.
LOADER_FIELDS = frozenset({"source", "policies_dir"})

PROBLEMS_ERROR = "interlock_problems"
GLOB_CHARS = frozenset("*?[")


def _reject_bool(kind: Literal["int_type", "float_type"]) -> BeforeValidator:
    # pydantic's lax mode reads `true` as 1, which in a config file is always a mistake. Lax mode
    # stays on otherwise, so that an interpolated "${PORT}" string still becomes an int.
    # Place it after the Field() constraints, or pydantic drops them from the JSON Schema.
    def check(value: object) -> object:
        if isinstance(value, bool):
            raise PydanticKnownError(kind)
        return value

    return BeforeValidator(check)


NOT_BOOL_INT = _reject_bool("int_type")
NOT_BOOL_FLOAT = _reject_bool("float_type")
NonEmpty = Annotated[str, Field(min_length=1)]
# inf would mean "no timeout" by accident; a hung upstream must always be cut off.
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False), NOT_BOOL_FLOAT]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
ServerId = Annotated[str, Field(pattern=SERVER_ID_PATTERN)]
ToolName = Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
HeaderName = Annotated[str, Field(pattern=HEADER_NAME_PATTERN)]
HeaderValue = Annotated[str, Field(pattern=HEADER_VALUE_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]


def problems_error(problems: Iterable[tuple[Loc, str]]) -> PydanticCustomError:
    """One validation error carrying several problems, each at a path relative to the check's loc."""
    found = tuple(problems)
    summary = "; ".join(f"{'.'.join(map(str, loc))}: {message}" for loc, message in found)
    return PydanticCustomError(PROBLEMS_ERROR, "{summary}", {"summary": summary, "problems": found})


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


class ClientKey(BaseModel):
    """A client allowed to call the gateway, authenticated by a bearer token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    # SecretStr keeps the token out of repr(), logs and model_dump(mode="json").
    key: Annotated[SecretStr, Field(min_length=16)]


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: NonEmpty = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535), NOT_BOOL_INT] = 8080
    policies: NonEmpty = "policies"
    separator: Name = "__"
    max_body_bytes: Annotated[int, Field(gt=0), NOT_BOOL_INT] = 4_194_304
    allowed_hosts: list[Annotated[str, Field(pattern=HOST_PATTERN)]] = []
    allowed_origins: list[Annotated[str, Field(pattern=ORIGIN_PATTERN)]] = []
    clients: list[ClientKey] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    call_timeout_s: Seconds = 60
    session_hint_header: HeaderName = "Mcp-Session-Hint"
    # Where guards keep state: counters, breakers, loop histories, pins. A relative sqlite path is
    # relative to this file's folder; "memory://" keeps nothing across restarts; "redis://host:port/db"
    # is shared by every replica (docs/state.md).
    state: Annotated[str, Field(pattern=r"^(sqlite:///.+|memory://.*|rediss?://.+)$")] = (
        "sqlite:///interlock-state.db"
    )

    @field_validator("clients")
    @classmethod
    def _unique_clients(cls, clients: list[ClientKey]) -> list[ClientKey]:
        # A shared name makes metrics, logs and approval records ambiguous; a shared key makes the
        # name a lie.
        check_unique_credentials([(c.name, c.key) for c in clients], "client", "key")
        return clients


def check_unique_credentials(entries: list[tuple[str, SecretStr]], kind: str, secret_field: str) -> None:
    """Reject two entries (name, secret) with one name, or one secret: each identity is its own."""
    problems: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    secrets: dict[str, int] = {}
    for index, (name, secret_str) in enumerate(entries):
        if name in names:
            problems.append(((index, "name"), f"duplicate {kind} name {name!r} (see [{names[name]}])"))
        secret = secret_str.get_secret_value()
        if secret in secrets:
            problems.append(
                (
                    (index, secret_field),
                    f"same {secret_field} as {kind} [{secrets[secret]}]; give each its own",
                )
            )
        names.setdefault(name, index)
        secrets.setdefault(secret, index)
    if problems:
        raise problems_error(problems)


class RestartPolicy(BaseModel):
    """Backoff between restarts of a crashed stdio upstream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_backoff_s: Seconds = 0.5
    max_backoff_s: Seconds = 30
    multiplier: Annotated[float, Field(ge=1, allow_inf_nan=False), NOT_BOOL_FLOAT] = 2.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_backoff_s < self.initial_backoff_s:
            raise problems_error(
                [(("max_backoff_s",), f"must be >= initial_backoff_s ({self.initial_backoff_s:g})")]
            )
        return self


class ServerBase(BaseModel):
    """Fields common to every upstream, whatever its transport."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: bool = True
    required: bool = True
    allow_tools: list[NonEmpty] = ["*"]
    deny_tools: list[NonEmpty] = []
    rename: dict[NonEmpty, ToolName] = {}
    descriptions: dict[NonEmpty, str] = {}
    timeout_s: Seconds | None = None
    connect_timeout_s: Seconds = 20
    protocol: Literal["auto", "2025-11-25", "2026-07-28"] = "auto"

    def literal_allowed_tools(self) -> list[str] | None:
        """Upstream names this server lets through, or None when globs make them unknowable here."""
        if any(GLOB_CHARS & set(pattern) for pattern in self.allow_tools):
            return None
        return [t for t in self.allow_tools if not any(fnmatchcase(t, d) for d in self.deny_tools)]

    def literal_exposed_names(self) -> set[str] | None:
        """Un-namespaced names this server exposes (after rename), when knowable before start."""
        allowed = self.literal_allowed_tools()
        return None if allowed is None else {self.rename.get(tool, tool) for tool in allowed}

    @model_validator(mode="after")
    def _rename_targets_unique(self) -> Self:
        # Two upstream tools under one exposed name would make one of them unreachable.
        problems: list[tuple[Loc, str]] = []
        owners: dict[str, str] = {}
        for upstream, exposed in self.rename.items():
            if exposed in owners:
                problems.append(
                    (("rename", upstream), f"{exposed!r} is also the new name of {owners[exposed]!r}")
                )
            owners.setdefault(exposed, upstream)
        allowed = self.literal_allowed_tools() or []
        for upstream, exposed in self.rename.items():
            if upstream in allowed and exposed in allowed and exposed not in self.rename:
                problems.append(
                    (("rename", upstream), f"{exposed!r} is also the name of another allowed tool")
                )
        if problems:
            raise problems_error(problems)
        return self


class StdioServer(ServerBase):
    """An upstream started as a child process, spoken to over stdin/stdout."""

    transport: Literal["stdio"]
    command: NonEmpty
    args: list[str] = []
    # repr=False: env values are usually credentials and repr() ends up in logs.
    env: dict[EnvName, str] = Field(default={}, repr=False)
    cwd: NonEmpty | None = None
    restart: RestartPolicy = RestartPolicy()
    # One process is one upstream instance: a second one would not see the first one's state.
    # Only a server that keeps no state between calls may get extra instances, one per client
    # era and capability profile, so that every client is served in its own protocol era.
    stateless: bool = False


class HttpServer(ServerBase):
    """An upstream reached over streamable HTTP."""

    transport: Literal["http"]
    url: Annotated[str, Field(pattern=URL_PATTERN)]
    # repr=False: headers usually carry the upstream's credentials.
    headers: dict[HeaderName, HeaderValue] = Field(default={}, repr=False)


Server = Annotated[StdioServer | HttpServer, Field(discriminator="transport")]


class AdminUser(BaseModel):
    """A human (or a script acting for one) allowed to use ``/admin`` and ``/admin/api``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    """Recorded as ``decided_by`` on every decision this user takes."""
    token: Annotated[SecretStr, Field(min_length=16)]
    groups: list[Name] = []
    """Names a policy's ``approval.approvers`` may list instead of user names (e.g. ``ops``)."""


class AdminSettings(BaseModel):
    """The admin plane: approvals REST API, web UI and CLI. Its tokens are not client keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: list[AdminUser] = []
    """Without users, the admin plane answers loopback requests only, as ``local-admin``."""
    public_url: Annotated[str, Field(pattern=URL_PATTERN)] | None = None
    """Where humans reach this gateway (behind a proxy, say); default http://host:port."""

    @field_validator("users")
    @classmethod
    def _unique_users(cls, users: list[AdminUser]) -> list[AdminUser]:
        check_unique_credentials([(u.name, u.token) for u in users], "admin", "token")
        return users


class WebhookSettings(BaseModel):
    """Where each new approval request is announced (POST, HMAC-signed body, retried)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str, Field(pattern=URL_PATTERN)] = Field(repr=False)
    secret: Annotated[SecretStr, Field(min_length=16)] | None = None
    """Signs each body (``X-Interlock-Signature``); without it bodies go unsigned."""
    format: Literal["interlock", "slack"] = "interlock"
    """``slack``: a Slack-style incoming-webhook message (``{"text": ...}``) instead of the record."""
    timeout_s: Seconds = 5
    max_attempts: Annotated[int, Field(ge=1, le=20), NOT_BOOL_INT] = 5
    base_delay_s: Seconds = 1
    max_delay_s: Seconds = 60


class ApprovalSettings(BaseModel):
    """How approval requests are carried out; which calls need one is policy (``approval``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: Annotated[SecretStr, Field(min_length=32)] | None = None
    """Signs the 2026-07-28 ``requestState``; default: one random secret kept in the state store,
    shared by every replica that shares the store."""
    poll_interval_s: Seconds = 0.5
    """How often a held call looks for a decision."""
    progress_every_s: Seconds = 5
    """How often a held call sends the client a progress notification."""
    webhook: WebhookSettings | None = None


class Config(BaseModel):
    """The whole of servers.toml, plus where it was read from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway: GatewaySettings = GatewaySettings()
    admin: AdminSettings = AdminSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    # additionalProperties: the key pattern alone would let editors accept any other id silently.
    servers: dict[ServerId, Server] = Field(default={}, json_schema_extra={"additionalProperties": False})
    source: Path | None = None
    policies_dir: Path | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        problems = list(self._separator_problems())
        problems.extend(self._collision_problems())
        problems.extend(self._admin_token_problems())
        if problems:
            raise problems_error(problems)
        return self

    def _separator_problems(self) -> Iterable[tuple[Loc, str]]:
        sep = self.gateway.separator
        for sid, server in self.servers.items():
            if sep in sid:
                yield (
                    ("servers", sid),
                    f"server id {sid!r} contains the separator {sep!r} (gateway.separator), "
                    "so its namespaced tool names would be ambiguous; rename the server",
                )
            if server.namespace:
                continue
            for upstream, exposed in server.rename.items():
                if sep in exposed:
                    yield (
                        ("servers", sid, "rename", upstream),
                        f"{exposed!r} contains the separator {sep!r}; with namespace = false "
                        "it would look like a namespaced name",
                    )

    def _admin_token_problems(self) -> Iterable[tuple[Loc, str]]:
        # An agent holding its client key must never be able to approve its own calls.
        client_keys = {client.key.get_secret_value() for client in self.gateway.clients}
        for index, user in enumerate(self.admin.users):
            if user.token.get_secret_value() in client_keys:
                yield (
                    ("admin", "users", index, "token"),
                    "is also a client key; admin tokens must be separate from client keys",
                )

    def _collision_problems(self) -> Iterable[tuple[Loc, str]]:
        # Only literal allow lists can be checked before the upstreams are up; the catalog
        # checks the rest at runtime.
        seen: list[tuple[str, set[str]]] = []
        for sid, server in self.servers.items():
            names = None if server.namespace else server.literal_exposed_names()
            if names is None:
                continue
            for other, other_names in seen:
                clash = sorted(names & other_names)
                if clash:
                    yield (
                        ("servers", sid),
                        f"servers {other!r} and {sid!r} both expose {_quoted(clash)} without a prefix "
                        "(namespace = false); rename the tools or set namespace = true on one of them",
                    )
            seen.append((sid, names))
