"""Helpers for end-to-end tests: free ports, gateway and upstream subprocesses, cleanup.

Every process a test starts runs in its own process group and is killed by group, so a test
that fails halfway never leaves an upstream behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FIXTURE_SERVER = str(ROOT / "tests" / "fixtures" / "fixture_server.py")
INTERLOCK = [PYTHON, "-m", "gateway.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def wait_http(url: str, timeout_s: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or exc.code == 503:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def spawn(
    cmd: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Proc]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
        )
    handle = Proc(proc, log_path)
    try:
        yield handle
    finally:
        kill_group(proc, signal.SIGTERM)


@contextmanager
def gateway(
    config_text: str, tmp: Path, *, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[Proc]:
    """Run ``interlock serve`` as a user would, on a config written to ``tmp``."""
    port = port or free_port()
    config = tmp / "servers.toml"
    config.write_text(config_text)
    cmd = [*INTERLOCK, "serve", "--config", str(config), "--port", str(port)]
    with spawn(cmd, tmp / f"gateway-{port}.log", env=env) as handle:
        handle.port = port
        wait_http(f"{handle.url}/healthz", proc=handle.proc)
        yield handle


@contextmanager
def http_fixture(tmp: Path, *args: str, name: str = "fixture") -> Iterator[Proc]:
    """The fixture upstream over HTTP on a free port."""
    port = free_port()
    cmd = [PYTHON, FIXTURE_SERVER, "--transport", "http", "--port", str(port), "--name", name, *args]
    with spawn(cmd, tmp / f"{name}-{port}.log") as handle:
        handle.port = port
        wait_http(f"{handle.url}/mcp", proc=handle.proc)
        yield handle


def stdio_server_toml(sid: str, script: str, *args: str, extra: str = "") -> str:
    quoted = ", ".join(f'"{a}"' for a in [script, *args])
    return f'[servers.{sid}]\ntransport = "stdio"\ncommand = "{PYTHON}"\nargs = [{quoted}]\n{extra}\n'


def http_server_toml(sid: str, url: str, extra: str = "") -> str:
    return f'[servers.{sid}]\ntransport = "http"\nurl = "{url}"\n{extra}\n'


ERROR_META_KEY = "interlock/error"


def gateway_error(result: Any) -> dict[str, Any]:
    """The gateway's error in a ``tools/call`` result, read where every client can find it: the
    result's ``_meta["interlock/error"]``, which must equal the JSON of the first text block (what
    a model reads) and, when the result has ``structuredContent`` at all, that too."""
    assert result.is_error, result
    error = (result.meta or {}).get(ERROR_META_KEY)
    assert isinstance(error, dict), result
    assert json.loads(result.content[0].text) == {"error": error}, result
    if result.structured_content is not None:
        assert result.structured_content == {"error": error}, result
    return dict(error)
