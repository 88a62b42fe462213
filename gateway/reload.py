"""Live policy: reload on file change and on SIGHUP; a bad edit never replaces a good policy."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path

import anyio

from gateway.config import ConfigError, PolicySet
from gateway.config.policy import PolicyLanguage
from gateway.config.policy_loader import policy_files

log = logging.getLogger("interlock.policy")

_POLL_S = 1.0  # a stat of a handful of files per second; no extra dependency for file events


class PolicyHolder:
    """The policy in force, swapped whole. Readers take ``current`` once per call."""

    def __init__(
        self, language: PolicyLanguage, folder: Path | None, on_change: Callable[[PolicySet], None]
    ) -> None:
        self.language = language
        self.folder = folder
        self.on_change = on_change
        self.current = language.load(folder) if folder else language.empty()
        self._signature = self._stat()

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        if self.folder is None or not self.folder.is_dir():
            return ()
        stats = []
        for path in policy_files(self.folder):
            try:
                info = path.stat()
            except OSError:
                continue
            stats.append((str(path), info.st_mtime_ns, info.st_size))
        return tuple(stats)

    def reload(self, reason: str) -> bool:
        """Load the folder again; True when a new policy took effect."""
        if self.folder is None:
            return False
        self._signature = self._stat()
        try:
            fresh = self.language.load(self.folder)
        except ConfigError as exc:
            log.error("policy reload (%s) rejected, the running policy stays in force:\n%s", reason, exc)
            return False
        if fresh.digest == self.current.digest:
            log.info("policy reload (%s): no change", reason)
            return False
        self.current = fresh
        log.info("policy reloaded (%s): %d files, %d rules", reason, len(fresh.files), len(fresh.rules))
        self.on_change(fresh)
        return True

    async def watch(self) -> None:
        while True:
            await anyio.sleep(_POLL_S)
            if self._stat() != self._signature:
                self.reload("file change")

    async def watch_sighup(self) -> None:
        try:
            with anyio.open_signal_receiver(signal.SIGHUP) as signals:
                async for _ in signals:
                    self.reload("SIGHUP")
        except (NotImplementedError, ValueError, RuntimeError):
            log.info("SIGHUP reload is not available here; file changes still reload the policy")
