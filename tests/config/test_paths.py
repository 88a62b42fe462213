"""Which values of a stdio server are paths, resolved against the config file's folder, and the
built-in ${INTERLOCK_PYTHON} (docs/configuration.md, "Paths" and "Environment variables")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.config import StdioServer, load_config


def _server(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> StdioServer:
    folder = tmp_path / "conf"
    (folder / "examples").mkdir(parents=True, exist_ok=True)
    (folder / "examples" / "tool.py").write_text("")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "servers.toml").write_text(f'[servers.s]\ntransport = "stdio"\n{body}\n')
    server = load_config(folder / "servers.toml", env=env or {}).servers["s"]
    assert isinstance(server, StdioServer)
    return server


def test_path_arguments_resolve_against_the_config_folder_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not the config's folder
    conf = (tmp_path / "conf").resolve()
    args = [
        "examples/tool.py",  # an existing file: a path
        "./out/report.txt",  # explicitly relative: a path, even before it exists
        "../shared",  # likewise
        "-m",
        "gateway.cli",  # a module name, not a file here
        "--config=./x.toml",  # an option with its value in one argument: left alone
        "data",  # a bare folder name: left alone (write ./data to mean the folder)
        "https://example.com/mcp",
        "/abs/path.py",
        "missing.py",  # no such file: a word like any other
        "",
    ]
    quoted = ", ".join(f'"{a}"' for a in args)
    server = _server(tmp_path, f'command = "python"\nargs = [{quoted}]')
    assert server.args == [
        str(conf / "examples" / "tool.py"),
        str(conf / "out" / "report.txt"),
        str(tmp_path.resolve() / "shared"),
        "-m",
        "gateway.cli",
        "--config=./x.toml",
        "data",
        "https://example.com/mcp",
        "/abs/path.py",
        "missing.py",
        "",
    ]


def test_an_argument_too_long_for_a_file_name_is_just_an_argument(tmp_path: Path) -> None:
    blob = "x" * 5000
    assert _server(tmp_path, f'command = "node"\nargs = ["{blob}"]').args == [blob]


def test_command_with_a_slash_is_a_path_and_a_bare_name_is_looked_up_on_path(tmp_path: Path) -> None:
    conf = (tmp_path / "conf").resolve()
    assert _server(tmp_path, 'command = "./bin/server"').command == str(conf / "bin" / "server")
    assert _server(tmp_path, 'command = "node_modules/.bin/x"').command == str(
        conf / "node_modules" / ".bin" / "x"
    )
    assert _server(tmp_path, 'command = "npx"').command == "npx"
    assert _server(tmp_path, 'command = "/usr/bin/env"').command == "/usr/bin/env"


def test_cwd_is_relative_to_the_config_folder(tmp_path: Path) -> None:
    server = _server(tmp_path, 'command = "npx"\ncwd = "data"')
    assert server.cwd == str((tmp_path / "conf" / "data").resolve())


def test_interlock_python_is_the_gateways_own_interpreter(tmp_path: Path) -> None:
    server = _server(tmp_path, 'command = "${INTERLOCK_PYTHON}"\nargs = ["examples/tool.py"]')
    assert server.command == sys.executable
    # The environment may name another one.
    other = _server(
        tmp_path, 'command = "${INTERLOCK_PYTHON}"', env={"INTERLOCK_PYTHON": "/opt/py/bin/python"}
    )
    assert other.command == "/opt/py/bin/python"


def test_the_shipped_config_runs_its_examples_on_the_gateways_interpreter() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "servers.toml", env={})
    for sid in ("crm", "jobs", "flaky"):
        server = config.servers[sid]
        assert isinstance(server, StdioServer)
        assert server.command == sys.executable
        assert server.args == [str(root / "examples" / f"{sid}_server.py")]
