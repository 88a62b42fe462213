"""``interlock approvals list|show|approve|deny``: decide approval requests on a running gateway.

It talks to the gateway's REST API (``/admin/api/approvals``), never to the state store directly:
the gateway is what checks the admin's token and the request's approvers, counts the decision in
its metrics and releases the held call.

Exit codes: 0 done; 1 refused (already decided, expired, not allowed, unknown id, bad token), with
the gateway's message on stderr; 2 usage; 3 the gateway could not be reached or failed to answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.config import ConfigError, expand
from gateway.config.loader import parse_toml
from gateway.core.net import local_origin
from gateway.web.fmt import countdown

DEFAULT_URL = "http://127.0.0.1:8080"
API = "/admin/api/approvals"
STATUSES = ("pending", "approved", "denied", "expired", "used", "all")
OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
TIMEOUT_S = 15.0
_TOKEN_HINT = "pass --token or set INTERLOCK_ADMIN_TOKEN"
_EPILOG = (
    "exit codes: 0 done, 1 refused by the gateway (its message on stderr), 2 usage, "
    "3 the gateway could not be reached or failed to answer"
)


class Failure(Exception):
    """Ends the command with ``code`` after printing ``message`` to stderr."""

    def __init__(self, code: int, message: str, document: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.document = document


# -- the command line ------------------------------------------------------------------------------


class _IdParser(argparse.ArgumentParser):
    """Takes ``-2kM8...`` for an approval id rather than an unknown option: one id in 64 starts
    with ``-`` (``token_urlsafe``), and ``approve -- ID`` is not something to make people learn."""

    def _parse_optional(self, arg_string: str) -> Any:
        name = arg_string.split("=", 1)[0]
        if len(arg_string) > 1 and not any(known.startswith(name) for known in self._option_string_actions):
            return None
        return super()._parse_optional(arg_string)


def register(sub: Any) -> None:
    """Add ``approvals`` to the ``interlock`` subcommands (``sub`` from ``add_subparsers``)."""
    parser = sub.add_parser(
        "approvals",
        help="list and decide approval requests on a running gateway",
        description="List and decide approval requests through a running gateway's REST API.",
        epilog=_EPILOG,
    )
    _connection_options(parser, False)
    commands = parser.add_subparsers(dest="approvals_command", required=True, parser_class=_IdParser)
    listing = commands.add_parser("list", help="requests with one status (default: pending)", epilog=_EPILOG)
    listing.add_argument(
        "--status", choices=STATUSES, default="pending", help="which requests to list (default: pending)"
    )
    show = commands.add_parser("show", help="every field of one request", epilog=_EPILOG)
    show.add_argument("id", help="the approval id")
    for verb in ("approve", "deny"):
        decide = commands.add_parser(verb, help=f"{verb} a pending request", epilog=_EPILOG)
        decide.add_argument("id", help="the approval id")
        decide.add_argument("--comment", help="recorded with the decision")
    for command in commands.choices.values():
        _connection_options(command, True)
    parser.set_defaults(func=cmd_approvals)


def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # The options work before or after the subcommand; on the subcommand they are SUPPRESSed so an
    # option given before it is not reset to the default.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--url",
        default=default(None),
        help="the gateway, e.g. http://127.0.0.1:8080 (default: $INTERLOCK_URL, else [admin] "
        "public_url or [gateway] host/port from --config, else " + DEFAULT_URL + ")",
    )
    parser.add_argument(
        "--token",
        default=default(None),
        help="an admin token (default: $INTERLOCK_ADMIN_TOKEN; the variable keeps it out of `ps`)",
    )
    parser.add_argument(
        "--config", default=default(None), help="servers.toml to take the URL from (default: servers.toml)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the gateway's JSON answer"
    )


def cmd_approvals(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        base = gateway_url(args.url, args.config, env)
        token = args.token or env.get("INTERLOCK_ADMIN_TOKEN") or None
        return _run(args, Api(base, token))
    except Failure as failure:
        if args.json and failure.document is not None:
            print(json.dumps(failure.document, indent=2))
        print(f"interlock approvals: {failure}", file=sys.stderr)
        return failure.code


def _run(args: argparse.Namespace, api: Api) -> int:
    command = args.approvals_command
    if command == "list":
        # The API lists every status when it is not given one.
        query = "" if args.status == "all" else f"?status={args.status}"
        doc = api.call("GET", API + query)
        rows = doc.get("approvals", []) if isinstance(doc, dict) else []
        if args.json:
            print(json.dumps(doc, indent=2))
        elif rows:
            print(list_table(rows))
        else:
            shown = "" if args.status == "all" else f"{args.status} "
            print(f"no {shown}approval requests")
        return OK
    path = f"{API}/{quote(args.id, safe='')}"
    if command == "show":
        record = api.call("GET", path)
    else:
        body = {"comment": args.comment} if args.comment is not None else {}
        record = api.call("POST", f"{path}/{command}", body)
    if args.json:
        print(json.dumps(record, indent=2))
    elif command == "show":
        print(show_text(record))
    else:
        print(decided_line(record))
    return OK


# -- where the gateway is --------------------------------------------------------------------------


def gateway_url(url: str | None, config: str | None, env: Mapping[str, str]) -> str:
    """The gateway's base URL: ``--url``, ``$INTERLOCK_URL``, the config file, or the default."""
    chosen = url or env.get("INTERLOCK_URL")
    if chosen:
        return _checked(chosen, "--url" if url else "INTERLOCK_URL")
    path = Path(config or "servers.toml")
    if config is None and not path.is_file():
        return DEFAULT_URL
    return url_from_config(path, env)


def url_from_config(path: Path, env: Mapping[str, str]) -> str:
    """``[admin] public_url``, else ``http://[gateway] host:port``, read from ``path``.

    Only these keys are read (and their ``${ENV}`` references expanded): deciding an approval must
    not need every upstream's secret in this shell's environment, as a full config load would."""
    try:
        data = parse_toml(str(path), path.read_bytes())
    except OSError as exc:
        raise Failure(USAGE, f"{path}: cannot read the file ({exc.strerror})") from None
    except ConfigError as exc:
        raise Failure(USAGE, str(exc)) from None
    admin, gateway = data.get("admin", {}), data.get("gateway", {})
    public = admin.get("public_url") if isinstance(admin, dict) else None
    if isinstance(public, str):
        return _checked(_expanded(public, path, "admin.public_url", env), f"{path}: admin.public_url")
    gateway = gateway if isinstance(gateway, dict) else {}
    host = _expanded(str(gateway.get("host", "127.0.0.1")), path, "gateway.host", env)
    port = gateway.get("port", 8080)
    if not isinstance(port, int) or isinstance(port, bool):
        raise Failure(USAGE, f"{path}: gateway.port: expected a number, got {port!r}")
    return local_origin(host, port)


def _expanded(value: str, path: Path, key: str, env: Mapping[str, str]) -> str:
    result, problems, _ = expand(value, env)
    if problems:
        raise Failure(USAGE, f"{path}: {key}: {problems[0]} (or pass --url)")
    return result


def _checked(url: str, source: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise Failure(USAGE, f"{source}: expected an http:// or https:// URL, got {url!r}")
    return url


# -- the REST API ----------------------------------------------------------------------------------


class Api:
    def __init__(self, base: str, token: str | None) -> None:
        self.base = base
        self._headers = {"Accept": "application/json", "User-Agent": "interlock-cli"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a 2xx; a ``Failure`` with the right exit code for anything else."""
        import httpx2  # only this command needs an HTTP client; `interlock check` stays quick

        try:
            with httpx2.Client(timeout=TIMEOUT_S, follow_redirects=False) as client:
                response = client.request(method, self.base + path, headers=self._headers, json=body)
        except httpx2.TimeoutException:
            raise Failure(
                UNREACHABLE, f"the gateway at {self.base} did not answer in {TIMEOUT_S:g}s"
            ) from None
        except httpx2.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise Failure(
                UNREACHABLE,
                f"cannot reach the gateway at {self.base} ({reason}); is it running? "
                "(set --url or INTERLOCK_URL)",
            ) from None
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if response.is_success and doc is not None:
            return doc
        raise self._failure(response.status_code, doc, path, response.text)

    def _failure(self, status: int, doc: Any, path: str, text: str) -> Failure:
        error = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(error, dict):
            # Not the admin API's answer: a proxy, another server, or a gateway without the admin plane.
            snippet = " ".join(text.split())[:200]
            return Failure(
                UNREACHABLE, f"{self.base}{path}: HTTP {status}, not an Interlock admin API answer: {snippet}"
            )
        message = str(error.get("message") or error.get("code") or f"HTTP {status}")
        if status == 401:
            message += f" ({_TOKEN_HINT})"
        if status >= 500:
            return Failure(UNREACHABLE, f"the gateway at {self.base} failed: {message}", doc)
        return Failure(USAGE if status == 400 else REFUSED, message, doc)


# -- what people read ------------------------------------------------------------------------------


def _stamp(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _time_left(record: Mapping[str, Any]) -> float:
    left = record.get("time_left_s")
    if isinstance(left, int | float):
        return float(left)
    expires = record.get("expires")
    return float(expires) - time.time() if isinstance(expires, int | float) else 0.0


def _outcome(record: Mapping[str, Any]) -> str:
    status = record.get("status")
    if status == "pending":
        return f"{countdown(_time_left(record))} left"
    if status == "expired":
        return f"expired {_stamp(record.get('expires'))}"
    by = record.get("decided_by") or "?"
    return f"approved by {by}, used" if status == "used" else f"by {by}"


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def list_table(records: Sequence[Mapping[str, Any]]) -> str:
    """One line a request: id, tool, client, rule, status, and time left or who decided."""
    headers = ("ID", "TOOL", "CLIENT", "RULE", "STATUS", "LEFT / DECIDED")
    limits = (24, 40, 24, 24, 8, 40)
    rows = [
        tuple(
            _cell(value, limit)
            for value, limit in zip(
                (r.get("id"), r.get("tool"), r.get("client"), r.get("rule"), r.get("status"), _outcome(r)),
                limits,
                strict=True,
            )
        )
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def show_text(record: Mapping[str, Any]) -> str:
    """Every field of one request, the redacted arguments pretty-printed last."""
    status = str(record.get("status"))
    if status == "pending":
        status += f" ({countdown(_time_left(record))} left)"
    fields: list[tuple[str, Any]] = [
        ("approval", record.get("id")),
        ("status", status),
        ("tool", f"{record.get('tool')} (server {record.get('server')})"),
        ("client", f"{record.get('client')} (session {record.get('session')})"),
        ("rule", record.get("rule")),
        ("reason", record.get("reason")),
        ("approvers", ", ".join(map(str, record.get("approvers") or [])) or "any admin"),
        ("channel", record.get("channel")),
        ("created", _stamp(record.get("created"))),
        ("expires", _stamp(record.get("expires"))),
    ]
    if record.get("decided_by"):
        fields.append(("decided", f"{record['decided_by']} at {_stamp(record.get('decided_at'))}"))
    if record.get("comment"):
        fields.append(("comment", record["comment"]))
    if record.get("used_at"):
        fields.append(("used", _stamp(record["used_at"])))
    fields.append(("digest", record.get("args_digest")))
    args = json.dumps(record.get("args_redacted", {}), indent=2, sort_keys=True, ensure_ascii=False)
    lines = [f"{name + ':':<11}{value}" for name, value in fields]
    lines.append("arguments (redacted):")
    lines.extend("  " + line for line in args.splitlines())
    return "\n".join(lines)


def decided_line(record: Mapping[str, Any]) -> str:
    verb = record.get("status")
    what = f"{record.get('tool')} for {record.get('client')}"
    return f"{verb} {record.get('id')} ({what}) as {record.get('decided_by')}"
