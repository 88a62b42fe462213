"""`interlock check`: validates without starting, and names the key path on error."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import INTERLOCK, ROOT


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
