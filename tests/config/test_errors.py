"""Every kind of load error names the file and the exact key path, and never prints a secret."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from gateway.config import ConfigError, Problem

from .test_loader import EXAMPLE, load_error, write

STDIO = '[servers.crm]\ntransport = "stdio"\ncommand = "x"\n'
HTTP = '[servers.search]\ntransport = "http"\nurl = "https://x.example"\n'


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            STDIO + 'timeout_s = "abc"\n',
            "servers.toml: servers.crm.timeout_s: expected a number, got 'abc'",
        ),
        (
            STDIO + "timout_s = 5\n",
            "servers.toml: servers.crm.timout_s: unknown key (allowed: namespace, required, allow_tools, "
            "deny_tools, rename, descriptions, timeout_s, connect_timeout_s, protocol, transport, command, "
            "args, env, cwd, restart, stateless); did you mean 'timeout_s'?",
        ),
        (
            "[server.crm]\n",
            "servers.toml: server: unknown key (allowed: gateway, admin, approvals, servers); "
            "did you mean 'servers'?",
        ),
        ("[gateway]\nzzz = 1\n", "servers.toml: gateway.zzz: unknown key (allowed: host, port,"),
        (
            '[servers.crm]\ntransport = "ftp"\n',
            "servers.toml: servers.crm.transport: expected one of 'stdio', 'http', got 'ftp'",
        ),
        (
            '[servers.crm]\ncommand = "x"\n',
            "servers.toml: servers.crm.transport: required key is missing (expected one of 'stdio', 'http')",
        ),
        (
            '[servers.crm]\ntransport = "stdio"\n',
            "servers.toml: servers.crm.command: required key is missing",
        ),
        (
            HTTP.replace("https://x.example", "ftp://x"),
            "servers.toml: servers.search.url: expected an http:// or https:// URL, got 'ftp://x'",
        ),
        ("[gateway]\nport = 70000\n", "servers.toml: gateway.port: expected a number <= 65535, got 70000"),
        ("[gateway]\nport = true\n", "servers.toml: gateway.port: expected an integer, got true"),
        (
            "[gateway]\nmax_body_bytes = 0\n",
            "servers.toml: gateway.max_body_bytes: expected a number > 0, got 0",
        ),
        ('[gateway]\nseparator = ""\n', "servers.toml: gateway.separator: expected only letters, digits"),
        (
            "[gateway]\ncall_timeout_s = inf\n",
            "servers.toml: gateway.call_timeout_s: expected a finite number",
        ),
        (
            '[gateway]\nlog_level = "verbose"\n',
            "servers.toml: gateway.log_level: expected 'debug', 'info', 'warning' or 'error', got 'verbose'",
        ),
        (
            '[servers."crm tools"]\ntransport = "stdio"\ncommand = "x"\n',
            'servers.toml: servers."crm tools": invalid name: expected a letter or digit, then only letters',
        ),
        (
            '[servers._crm]\ntransport = "stdio"\ncommand = "x"\n',
            "servers.toml: servers._crm: invalid name: expected a letter or digit",
        ),
        (
            '[servers.crm__db]\ntransport = "stdio"\ncommand = "x"\n',
            "servers.toml: servers.crm__db: server id 'crm__db' contains the separator '__'",
        ),
        (
            '[gateway]\nseparator = "-"\n[servers.crm-db]\ntransport = "stdio"\ncommand = "x"\n',
            "servers.toml: servers.crm-db: server id 'crm-db' contains the separator '-'",
        ),
        (
            '[[gateway.clients]]\nname = "a"\nkey = "key-aaaaaaaaaaaaaaaa"\n'
            '[[gateway.clients]]\nname = "a"\nkey = "key-bbbbbbbbbbbbbbbb"\n',
            "servers.toml: gateway.clients[1].name: duplicate client name 'a' (see [0])",
        ),
        (
            '[[gateway.clients]]\nname = "a"\nkey = "key-aaaaaaaaaaaaaaaa"\n'
            '[[gateway.clients]]\nname = "b"\nkey = "key-aaaaaaaaaaaaaaaa"\n',
            "servers.toml: gateway.clients[1].key: same key as client [0]; give each its own",
        ),
        (
            '[[gateway.clients]]\nname = "a b"\nkey = "key-aaaaaaaaaaaaaaaa"\n',
            "servers.toml: gateway.clients[0].name: expected only letters, digits, '_', '.' and '-', "
            "got 'a b'",
        ),
        (
            STDIO + "args = 5\n",
            "servers.toml: servers.crm.args: expected a list, got 5",
        ),
        (
            STDIO + "restart = { initial_backoff_s = 5, max_backoff_s = 1 }\n",
            "servers.toml: servers.crm.restart.max_backoff_s: must be >= initial_backoff_s (5)",
        ),
        (
            STDIO + "restart = { multiplier = 0.5 }\n",
            "servers.toml: servers.crm.restart.multiplier: expected a number >= 1, got 0.5",
        ),
        (
            STDIO + 'rename = { a = "x y" }\n',
            "servers.toml: servers.crm.rename.a: expected 1 to 128 letters, digits, '_', '.' or '-', "
            "got 'x y'",
        ),
        (
            STDIO + 'rename = { a = "x", b = "x" }\n',
            "servers.toml: servers.crm.rename.b: 'x' is also the new name of 'a'",
        ),
        (
            STDIO + 'namespace = false\nrename = { a = "x__y" }\n',
            "servers.toml: servers.crm.rename.a: 'x__y' contains the separator '__'; with namespace = false",
        ),
        (
            STDIO + 'allow_tools = ["a", "b"]\nrename = { a = "b" }\n',
            "servers.toml: servers.crm.rename.a: 'b' is also the name of another allowed tool",
        ),
        (
            STDIO + 'cwd = ""\n',
            "servers.toml: servers.crm.cwd: expected a non-empty value, got ''",
        ),
        (
            STDIO + 'env = { "A=B" = "v" }\n',
            'servers.toml: servers.crm.env."A=B": invalid name: expected a non-empty variable name '
            "without '='",
        ),
        (
            '[gateway]\nallowed_origins = ["https://app.example.com/path"]\n',
            "servers.toml: gateway.allowed_origins[0]: expected an origin scheme://host[:port] "
            "without a path",
        ),
        (
            'source = "/etc/passwd"\n',
            "servers.toml: source: unknown key (allowed: gateway, admin, approvals, servers)",
        ),
        (
            'policies_dir = "/tmp"\n',
            "servers.toml: policies_dir: unknown key (allowed: gateway, admin, approvals, servers)",
        ),
        ("[servers]\ncrm = 5\n", "servers.toml: servers.crm: expected a table, got 5"),
        # A key spelled like pydantic's own "[key]" marker is still just an unknown key.
        (STDIO + '"[key]" = 1\n', 'servers.toml: servers.crm."[key]": unknown key (allowed: namespace,'),
    ],
)
def test_error_names_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: str) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, text)
    error = load_error("servers.toml")
    assert error.file == "servers.toml"
    assert any(rendered.startswith(line) for rendered in str(error).splitlines()), str(error)


def test_collision_between_unprefixed_servers(tmp_path: Path) -> None:
    text = (
        '[servers.a]\ntransport = "stdio"\ncommand = "x"\nnamespace = false\n'
        'allow_tools = ["search", "get"]\n'
        '[servers.b]\ntransport = "stdio"\ncommand = "x"\nnamespace = false\n'
        'allow_tools = ["fetch", "lookup"]\nrename = { fetch = "get", lookup = "search" }\n'
    )
    error = load_error(write(tmp_path, text))
    assert error.problems == [
        Problem(
            "servers.b",
            "servers 'a' and 'b' both expose 'get', 'search' without a prefix (namespace = false); "
            "rename the tools or set namespace = true on one of them",
        )
    ]


def test_missing_variable_is_reported_at_its_key(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, EXAMPLE), env={"SEARCH_TOKEN": "x"})
    assert str(error) == (
        f"{tmp_path / 'servers.toml'}: servers.crm.env.CRM_TOKEN: environment variable CRM_TOKEN is not set"
    )


def test_all_problems_are_collected_in_file_order(tmp_path: Path) -> None:
    text = (
        '[gateway]\nport = "${PORT}"\nlog_level = "loud"\n'
        '[servers.a]\ntransport = "stdio"\ncommand = "x"\ntimeout_s = -1\nenv = { T = "${TOKEN}" }\n'
        '[servers.b]\ntransport = "carrier-pigeon"\n'
    )
    error = load_error(write(tmp_path, text))
    # The unset PORT explains gateway.port; its type error would only be noise.
    assert [p.path for p in error.problems] == [
        "gateway.port",
        "gateway.log_level",
        "servers.a.timeout_s",
        "servers.a.env.T",
        "servers.b.transport",
    ]
    assert error.problems[0].message == "environment variable PORT is not set"


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('[[gateway.clients]]\nname = "a"\nkey = "tooshort-SECRET"\n', {}),
        ('[[gateway.clients]]\nname = "a"\nkey = 12345\n', {}),
        ('[[gateway.clients]]\nname = "a"\nkey = "${K}"\n', {"K": "SECRET"}),
        ('[gateway]\nclients = "SECRET"\n', {}),
        ('[gateway]\nclients = ["SECRET"]\n', {}),
        ('[[gateway.clients]]\nname = "a"\nkey = ["SECRET"]\n', {}),
        (HTTP + 'headers = { Authorization = "Bearer SECRET\\nX-Evil: 1" }\n', {}),
        (HTTP + 'headers = { Authorization = ["SECRET"] }\n', {}),
        (HTTP + 'headers = "SECRET"\n', {}),
        (STDIO + "env = { TOKEN = 12345 }\n", {}),
        (STDIO + 'env = "SECRET"\n', {}),
        ('[gateway]\nport = "${PORT}"\n', {"PORT": "SECRET"}),
        (STDIO + 'args = ["--token", "${T}"]\ntimeout_s = "${T}"\n', {"T": "SECRET"}),
        ('[[admin.users]]\nname = "a"\ntoken = "tooshort-SECRET"\n', {}),
        ('[[admin.users]]\nname = "a"\ntoken = ["SECRET"]\n', {}),
        ('[approvals]\nsecret = "SECRET"\n', {}),
        ('[approvals.webhook]\nurl = "hooks.example/SECRET"\n', {}),
        ('[approvals.webhook]\nurl = "https://hooks.example/x"\nsecret = "SECRET"\n', {}),
    ],
)
def test_secrets_never_appear_in_errors(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    error = load_error(write(tmp_path, text), env=env)
    rendered = str(error) + repr(error.problems)
    assert "<redacted>" in rendered or "expected a" in rendered
    assert "SECRET" not in rendered
    assert "12345" not in rendered
    # A chained pydantic error would print the raw input in a traceback.
    assert error.__cause__ is None and error.__suppress_context__


def test_missing_file() -> None:
    error = load_error("does/not/exist.toml")
    assert str(error) == "does/not/exist.toml: file not found"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    assert "is a directory" in str(load_error(tmp_path))


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    error = load_error(
        write(tmp_path, '[gateway]\nport = 1\n[servers.crm\ntransport = "stdio"\n', "bad.toml")
    )
    assert error.problems[0].path == "line 3, column 13"
    assert str(error).startswith(f"{tmp_path / 'bad.toml'}: line 3, column 13: invalid TOML: expected ']'")


def test_toml_error_at_end_of_document(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, "[gateway]\nport ="))
    assert error.problems[0].path == "line 2, column 7"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "servers.toml"
    path.write_bytes(b'[gateway]\nhost = "\xff"\n')
    assert "not valid UTF-8 (at byte 18)" in str(load_error(path))


def test_config_error_pickles() -> None:
    error = ConfigError("servers.toml", [Problem("gateway.port", "expected an integer, got 'x'")])
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.file, copy.problems, str(copy)) == (error.file, error.problems, str(error))
    assert str(error) == "servers.toml: gateway.port: expected an integer, got 'x'"


def test_long_values_are_cut(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, f'[gateway]\nlog_level = "{"x" * 500}"\n'))
    assert str(error).endswith("got '" + "x" * 60 + "'...")
