from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import ClientKey, Config, GatewaySettings, HttpServer, RestartPolicy, StdioServer


def stdio(**fields: Any) -> dict[str, Any]:
    return {"transport": "stdio", "command": "x", **fields}


def test_defaults() -> None:
    config = Config()
    assert config.gateway == GatewaySettings()
    assert (config.gateway.host, config.gateway.port, config.gateway.separator) == ("127.0.0.1", 8080, "__")
    assert config.gateway.max_body_bytes == 4_194_304
    assert config.gateway.session_hint_header == "Mcp-Session-Hint"
    server = StdioServer.model_validate(stdio())
    assert server.allow_tools == ["*"]
    assert server.restart == RestartPolicy(initial_backoff_s=0.5, max_backoff_s=30, multiplier=2)
    assert (server.namespace, server.required, server.protocol, server.timeout_s) == (
        True,
        True,
        "auto",
        None,
    )


def test_models_are_frozen_and_closed() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.gateway.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        GatewaySettings.model_validate({"prot": 1})


def test_server_union_picks_the_transport() -> None:
    config = Config.model_validate(
        {"servers": {"a": stdio(), "b": {"transport": "http", "url": "http://localhost:1/mcp"}}}
    )
    assert isinstance(config.servers["a"], StdioServer)
    assert isinstance(config.servers["b"], HttpServer)


def test_client_key_is_secret() -> None:
    client = ClientKey(name="a", key="k" * 16)  # type: ignore[arg-type]
    assert "kkkk" not in repr(client)
    assert client.key.get_secret_value() == "k" * 16
    with pytest.raises(ValidationError):
        ClientKey(name="a", key="k" * 15)  # type: ignore[arg-type]


def test_headers_and_env_stay_out_of_repr() -> None:
    http = HttpServer(transport="http", url="https://x", headers={"Authorization": "Bearer hunter2"})
    server = StdioServer.model_validate(stdio(env={"TOKEN": "hunter2"}))
    assert "hunter2" not in repr(http) + repr(server)


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_range(port: int) -> None:
    assert GatewaySettings(port=port).port == port


@pytest.mark.parametrize("value", [True, -1, 65536])
def test_port_rejects(value: Any) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(port=value)


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "example.com:*", "[::1]:*", "localhost"])
def test_allowed_hosts_accepts(host: str) -> None:
    assert GatewaySettings(allowed_hosts=[host]).allowed_hosts == [host]


@pytest.mark.parametrize("host", ["http://example.com", "a b", "", "example.com/path"])
def test_allowed_hosts_rejects(host: str) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(allowed_hosts=[host])


def test_restart_backoff_order() -> None:
    assert RestartPolicy(initial_backoff_s=1, max_backoff_s=1).max_backoff_s == 1
    with pytest.raises(ValidationError, match="must be >= initial_backoff_s"):
        RestartPolicy(initial_backoff_s=2, max_backoff_s=1)


def unprefixed(**fields: Any) -> dict[str, Any]:
    return stdio(namespace=False, **fields)


@pytest.mark.parametrize(
    "servers",
    [
        # Globs cannot be checked before the upstreams are up.
        {"a": unprefixed(), "b": unprefixed()},
        {"a": unprefixed(allow_tools=["get"]), "b": unprefixed(allow_tools=["g*"])},
        # Namespaced servers never collide.
        {"a": unprefixed(allow_tools=["get"]), "b": stdio(allow_tools=["get"])},
        # A rename or a deny removes the collision.
        {"a": unprefixed(allow_tools=["get"]), "b": unprefixed(allow_tools=["get"], rename={"get": "b_get"})},
        {
            "a": unprefixed(allow_tools=["get"]),
            "b": unprefixed(allow_tools=["get", "put"], deny_tools=["g?t"]),
        },
    ],
)
def test_no_collision(servers: dict[str, Any]) -> None:
    Config.model_validate({"servers": servers})


def test_collision_names_both_servers_and_the_names() -> None:
    servers = {
        "a": unprefixed(allow_tools=["get", "put", "list"]),
        "b": stdio(allow_tools=["get"]),
        "c": unprefixed(allow_tools=["fetch", "list", "put"], rename={"fetch": "get"}),
    }
    with pytest.raises(ValidationError) as info:
        Config.model_validate({"servers": servers})
    message = str(info.value)
    assert "servers 'a' and 'c' both expose 'get', 'list', 'put' without a prefix" in message


def test_rename_with_separator_is_fine_when_namespaced() -> None:
    Config.model_validate({"servers": {"a": stdio(rename={"x": "x__y"})}})
    with pytest.raises(ValidationError, match="would look like a namespaced name"):
        Config.model_validate({"servers": {"a": unprefixed(rename={"x": "x__y"})}})


def test_separator_applies_to_server_ids() -> None:
    Config.model_validate({"gateway": {"separator": "."}, "servers": {"crm__db": stdio()}})
    with pytest.raises(ValidationError, match="contains the separator '__'"):
        Config.model_validate({"servers": {"crm__db": stdio()}})


def test_literal_exposed_names() -> None:
    server = StdioServer.model_validate(
        stdio(allow_tools=["a", "b", "c"], deny_tools=["c"], rename={"a": "x"})
    )
    assert server.literal_exposed_names() == {"x", "b"}
    assert StdioServer.model_validate(stdio(allow_tools=["a[0-9]"])).literal_exposed_names() is None


@pytest.mark.parametrize("url", ["http://localhost:9000/mcp", "https://api.example.com", "https://h/x?y=1#z"])
def test_http_url_accepts(url: str) -> None:
    assert HttpServer(transport="http", url=url).url == url


@pytest.mark.parametrize("url", ["ftp://x", "localhost:9000", "https://", "https:// x", "HTTP"])
def test_http_url_rejects(url: str) -> None:
    with pytest.raises(ValidationError):
        HttpServer(transport="http", url=url)
