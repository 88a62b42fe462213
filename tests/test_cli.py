"""The `interlock` command line: `check` validates without starting and names the key path on
error; options are validated like the file's keys; every option says what it does."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator
from pathlib import Path

from gateway import __version__
from gateway.cli import build_parser
from tests.support import INTERLOCK, ROOT, free_port


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*INTERLOCK, "check", "--config", str(config)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_bundled_config_is_valid() -> None:
    done = _check(ROOT / "servers.toml")
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


def test_a_bad_config_gives_the_key_path(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    config.write_text('[servers.crm]\ntransport = "stdio"\ncommand = "python"\ntimeout_s = "soon"\n')
    done = _check(config)
    assert done.returncode == 2
    assert "servers.toml: servers.crm.timeout_s:" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    config.write_text('[servers.crm]\ntransport = "stdio"\ncommand = "python"\ncomand = "x"\n')
    done = _check(config)
    assert done.returncode == 2
    assert "servers.crm.comand" in done.stderr and "command" in done.stderr


def _interlock(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INTERLOCK, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_an_out_of_range_port_on_the_command_line_is_refused_like_one_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    config.write_text('[gateway]\nstate = "memory://"\n')
    try:
        done = _interlock("serve", "--config", str(config), "--port", "99999", timeout=30)
    except subprocess.TimeoutExpired as exc:  # it started serving on some other port instead
        raise AssertionError(f"serve --port 99999 did not refuse: {exc.stderr!r}") from None
    assert done.returncode == 2
    assert "--port" in done.stderr and "65535" in done.stderr and "99999" in done.stderr
    assert "Traceback" not in done.stderr
    done = _interlock("serve", "--config", str(config), "--host", "", timeout=30)
    assert done.returncode == 2 and "--host" in done.stderr


def test_version() -> None:
    done = _interlock("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"interlock {__version__}"


def test_serve_help_says_what_each_option_does_and_its_default() -> None:
    done = _interlock("serve", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "(default: servers.toml)" in text
    assert "--host HOST address to listen on (default: [gateway] host" in text
    assert "--port PORT TCP port to listen on" in text


def _parsers(
    parser: argparse.ArgumentParser, path: str = "interlock"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_every_option_of_every_subcommand_has_help_and_shows_its_default() -> None:
    for path, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            assert action.help, f"{path}: {action.option_strings or action.dest} has no help"
            shown = action.default not in (None, False, argparse.SUPPRESS)
            if shown:
                assert f"default: {action.default}" in text, f"{path}: {action.dest} hides its default"


def test_health_fails_when_nothing_answers(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    config.write_text(f"[gateway]\nport = {free_port()}\n")
    done = _interlock("health", "--config", str(config))
    assert done.returncode == 1
    assert "/healthz" in done.stderr and "Traceback" not in done.stderr


def test_a_state_file_that_cannot_be_created_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "servers.toml"
    # Nobody, root included, can create a file there: as in a container whose folder is read-only.
    config.write_text('[gateway]\nstate = "sqlite:////proc/interlock-nowhere/state.db"\n')
    for command in ("serve", "stdio"):
        done = _interlock(command, "--config", str(config), timeout=30)
        assert done.returncode == 2, done.stderr
        assert f"{config}: gateway.state: cannot open the state store" in done.stderr
        assert "Traceback" not in done.stderr
