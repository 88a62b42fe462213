from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.config import Config, ConfigError, HttpServer, StdioServer, load_config

EXAMPLE = """\
[gateway]
host = "127.0.0.1"
port = 8080
policies = "policies"        # folder, relative to this file

[servers.crm]
transport = "stdio"
command = "python"
args = ["examples/crm_server.py"]
env = { CRM_TOKEN = "${CRM_TOKEN}" }

[servers.search]
transport = "http"
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "Bearer ${SEARCH_TOKEN}" }
timeout_s = 30
"""
EXAMPLE_ENV = {"CRM_TOKEN": "crm-token-value", "SEARCH_TOKEN": "search-token-value"}

FULL = """\
[gateway]
host = "0.0.0.0"
port = 0
policies = "/etc/interlock/policies"
separator = "--"
max_body_bytes = 1024
allowed_hosts = ["gateway.internal", "gateway.internal:*"]
allowed_origins = ["https://app.example.com", "http://localhost:*"]
log_level = "debug"
call_timeout_s = 12.5
session_hint_header = "X-Session-Hint"

[[gateway.clients]]
name = "claude-desktop"
key = "${CLIENT_KEY}"

[[gateway.clients]]
name = "ci.bot"
key = "0123456789abcdef-literal"

[servers.files]
transport = "stdio"
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "."]
env = { LOG = "quiet" }
cwd = "work"
namespace = false
required = false
allow_tools = ["read_file", "list_directory", "write_file"]
deny_tools = ["write_*"]
rename = { read_file = "read" }
descriptions = { read_file = "Read a UTF-8 file." }
timeout_s = 5
connect_timeout_s = 3
protocol = "2025-11-25"
restart = { initial_backoff_s = 1, max_backoff_s = 10, multiplier = 3 }

[servers.search]
transport = "http"
url = "https://search.example.com/mcp"
headers = { Authorization = "Bearer ${SEARCH_TOKEN}", "X-Team" = "agents" }
protocol = "2026-07-28"
"""
FULL_ENV = {"CLIENT_KEY": "client-key-0123456789", "SEARCH_TOKEN": "search-token-value"}


def write(tmp_path: Path, text: str, name: str = "servers.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path | str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    return info.value


def test_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE), env=EXAMPLE_ENV)
    crm, search = config.servers["crm"], config.servers["search"]
    assert isinstance(crm, StdioServer)
    assert isinstance(search, HttpServer)
    assert crm.env == {"CRM_TOKEN": "crm-token-value"}
    assert crm.args == ["examples/crm_server.py"]
    assert search.headers == {"Authorization": "Bearer search-token-value"}
    assert search.timeout_s == 30
    assert config.gateway.port == 8080
    assert config.source == (tmp_path / "servers.toml").resolve()
    assert config.policies_dir == (tmp_path / "policies").resolve()


def test_full_config_round_trips(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env=FULL_ENV)
    assert Config.model_validate(config.model_dump()) == config
    gateway = config.gateway
    assert gateway.separator == "--"
    assert gateway.clients[0].key == SecretStr("client-key-0123456789")
    assert [c.name for c in gateway.clients] == ["claude-desktop", "ci.bot"]
    files = config.servers["files"]
    assert isinstance(files, StdioServer)
    assert files.restart.multiplier == 3
    assert files.literal_exposed_names() == {"read", "list_directory"}
    assert config.policies_dir == Path("/etc/interlock/policies")


def test_secrets_stay_out_of_repr_and_json(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env=FULL_ENV)
    for text in (repr(config), str(config), config.model_dump_json()):
        assert "client-key-0123456789" not in text
        assert "0123456789abcdef-literal" not in text
    assert "search-token-value" not in repr(config)


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    text = (
        '[gateway]\npolicies = "../pol"\n[servers.a]\ntransport = "stdio"\ncommand = "x"\ncwd = "sub/dir"\n'
    )
    text += (
        '[servers.b]\ntransport = "stdio"\ncommand = "x"\ncwd = "/opt/b"\n[servers.c]\ntransport = "stdio"\n'
    )
    text += 'command = "x"\n'
    path = write(folder, text)
    monkeypatch.chdir(tmp_path)  # the process's cwd must not matter
    config = load_config(Path("conf/servers.toml"), env={})
    servers = config.servers
    assert isinstance(servers["a"], StdioServer) and isinstance(servers["b"], StdioServer)
    assert servers["a"].cwd == str(folder.resolve() / "sub" / "dir")
    assert servers["b"].cwd == "/opt/b"
    assert isinstance(servers["c"], StdioServer) and servers["c"].cwd is None
    assert config.policies_dir == (tmp_path / "pol").resolve()
    assert config.source == path.resolve()


def test_env_defaults_to_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "from-os-environ")
    monkeypatch.setenv("SEARCH_TOKEN", "x")
    config = load_config(str(write(tmp_path, EXAMPLE)))
    crm = config.servers["crm"]
    assert isinstance(crm, StdioServer) and crm.env["CRM_TOKEN"] == "from-os-environ"


def test_interpolated_strings_are_coerced_like_literals(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nport = "${PORT:-9100}"\ncall_timeout_s = "${T}"\n')
    config = load_config(path, env={"T": "2.5"})
    assert config.gateway.port == 9100
    assert config.gateway.call_timeout_s == 2.5


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert config.servers == {}
    assert config.gateway.call_timeout_s == 60
