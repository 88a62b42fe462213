"""Aggregation: namespacing, filters, renames, URIs routed back, cursors, suggestions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.catalog import Catalog, InvalidCursor, paginate
from gateway.config import Config, load_config
from gateway.upstream.supervisor import Lists


def _tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": f"{name} tool", "inputSchema": {"type": "object"}}


def _config(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "servers.toml"
    path.write_text(body)
    return load_config(path, env={})


CONFIG = """
[servers.crm]
transport = "stdio"
command = "python"
deny_tools = ["refund*"]
rename = { get_customer = "lookup_customer" }
descriptions = { search_customers = "Find customers by name." }

[servers.time]
transport = "stdio"
command = "python"
namespace = false
"""


def test_namespacing_filters_renames_and_descriptions(tmp_path: Path) -> None:
    catalog = Catalog(_config(tmp_path, CONFIG))
    catalog.rebuild(
        {
            "crm": Lists(tools=[_tool("get_customer"), _tool("search_customers"), _tool("refund")]),
            "time": Lists(tools=[_tool("get_current_time")]),
        }
    )
    assert sorted(catalog.tools) == ["crm__lookup_customer", "crm__search_customers", "get_current_time"]
    entry = catalog.tools["crm__lookup_customer"]
    assert (entry.server, entry.upstream_name) == ("crm", "get_customer")
    assert catalog.tools["crm__search_customers"].definition["description"] == "Find customers by name."
    assert catalog.tools["get_current_time"].server == "time"


def test_resource_uris_are_routed_back(tmp_path: Path) -> None:
    catalog = Catalog(_config(tmp_path, CONFIG))
    catalog.rebuild(
        {
            "crm": Lists(
                resources=[{"uri": "crm://stats", "name": "stats"}],
                templates=[{"uriTemplate": "crm://customers/{id}", "name": "customer"}],
            ),
            "time": Lists(resources=[{"uri": "time://zones", "name": "zones"}]),
        }
    )
    uris = [r["uri"] for r in catalog.resources]
    assert uris == ["interlock://crm/crm://stats", "time://zones"]
    assert catalog.templates[0]["uriTemplate"] == "interlock://crm/crm://customers/{id}"
    assert catalog.route_uri("interlock://crm/crm://customers/7") == ("crm", "crm://customers/7")
    assert catalog.route_uri("time://zones") == ("time", "time://zones")
    assert catalog.route_uri("interlock://nope/x://y") == ("time", "interlock://nope/x://y")


def test_suggestions_for_an_unknown_tool(tmp_path: Path) -> None:
    catalog = Catalog(_config(tmp_path, CONFIG))
    catalog.rebuild(
        {"crm": Lists(tools=[_tool("search_customers")]), "time": Lists(tools=[_tool("get_current_time")])}
    )
    assert catalog.suggest("search_customers")[0] == "crm__search_customers"  # the prefix was forgotten
    assert catalog.suggest("crm__search_customer")[0] == "crm__search_customers"  # a typo
    assert catalog.suggest("zzzz") == []


def test_an_unprefixed_collision_keeps_the_first_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = CONFIG.replace('deny_tools = ["refund*"]', 'namespace = false\ndeny_tools = ["refund*"]')
    catalog = Catalog(_config(tmp_path, body))
    catalog.rebuild({"crm": Lists(tools=[_tool("now")]), "time": Lists(tools=[_tool("now")])})
    assert catalog.tools["now"].server == "crm"
    assert "collides" in caplog.text


def test_cursors_walk_every_item_once() -> None:
    items = list(range(45))
    seen: list[int] = []
    cursor = None
    while True:
        page, cursor = paginate(items, cursor, 10, version=1)
        seen += page
        if cursor is None:
            break
    assert seen == items
    with pytest.raises(InvalidCursor):
        paginate(items, "not-a-cursor", 10, version=1)
