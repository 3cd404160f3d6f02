"""The rules in force, reloaded from their file when it changes, without a restart.

The store watches the file's directory, not the file: editors save by writing a new file and renaming it over the
old one, and Kubernetes swaps config maps by a symlink, and both replace the file a watch on it would follow. Any
change in the directory makes the store read the file; when its bytes differ from the rules in force it compiles
them, and when they are invalid it keeps the rules in force and records the error for `GET /admin/rules`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import watchfiles

from router.rules import RulesError, RuleSet, parse_rules

log = logging.getLogger("tiergate.rules")

RETRY_WATCH_S = 1.0
"""After the watcher itself fails (the directory vanished), wait this long before watching again."""


@dataclass(frozen=True, slots=True)
class RulesStatus:
    path: str
    version: str
    """The rules in force: the first 12 hex digits of their file's sha256."""
    rules: int
    loaded_at: datetime
    reloads: int
    """Successful reloads since start (the first load not counted)."""
    failures: int
    """Reloads refused because the file was invalid or unreadable."""
    last_error: str | None
    """Why the latest reload failed; None once a later reload (or the file reverting) succeeds."""
    last_error_at: datetime | None
    watching: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "version": self.version,
            "rules": self.rules,
            "loaded_at": self.loaded_at.isoformat(),
            "reloads": self.reloads,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "watching": self.watching,
        }


class RuleStore:
    """Holds the current `RuleSet`. Construction loads the file and raises `RulesError` if it is invalid."""

    def __init__(
        self, path: Path, *, debounce_ms: int = 400, step_ms: int = 50, force_polling: bool | None = None
    ) -> None:
        self.path = path.absolute()
        data = self._read()
        self._rules = parse_rules(data, source=str(path))
        self._digest = hashlib.sha256(data).digest()
        self._loaded_at = datetime.now(UTC)
        self.reloads = 0
        self.failures = 0
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._force_polling = force_polling
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()
        self._refused_digest: bytes | None = None

    @property
    def rules(self) -> RuleSet:
        """The rules in force. Read it once per request: a reload swaps it for a new object."""
        return self._rules

    def status(self) -> RulesStatus:
        return RulesStatus(
            path=str(self.path),
            version=self._rules.version,
            rules=len(self._rules.rules),
            loaded_at=self._loaded_at,
            reloads=self.reloads,
            failures=self.failures,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            watching=self._task is not None and not self._task.done(),
        )

    def reload(self) -> bool:
        """Read the file again. True if new rules are now in force, False if the file has not changed.

        Raises `RulesError` if the file cannot be read or is invalid; the rules in force stay.
        """
        digest: bytes | None = None
        try:
            data = self._read()
            digest = hashlib.sha256(data).digest()
            if digest == self._digest:
                self._last_error = None
                return False
            if digest == self._refused_digest:
                return False  # the same bad bytes again (a change elsewhere in the folder): counted already
            rules = parse_rules(data, source=str(self.path))
        except RulesError as exc:
            self._refused_digest = digest
            self.failures += 1
            self._last_error = str(exc)
            self._last_error_at = datetime.now(UTC)
            log.error("rules reload refused, keeping version %s: %s", self._rules.version, exc)
            raise
        self._rules = rules
        self._digest = digest
        self._loaded_at = datetime.now(UTC)
        self._last_error = None
        self.reloads += 1
        log.info("rules reloaded from %s: version %s, %d rules", self.path, rules.version, len(rules.rules))
        return True

    async def start(self) -> None:
        """Start watching the file. Changes made from now on take effect within about `debounce_ms`."""
        if self._task is not None:
            return
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._watch(self._stop), name="tiergate-rules-watch")
        # Let the task register its watch (watchfiles does so before its first await), then catch up with any
        # change made between the first load and now.
        await asyncio.sleep(0)
        await self._reload_quietly()

    async def close(self) -> None:
        """Stop watching; the rules in force stay readable."""
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(self._task, timeout=2.0)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._stop = None

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async for _changes in watchfiles.awatch(
                    self.path.parent,
                    # The folder is watched (editors save by rename), but only the rules file's own events count.
                    watch_filter=lambda _change, path: Path(path).name == self.path.name,
                    debounce=self._debounce_ms,
                    step=self._step_ms,
                    stop_event=stop,
                    recursive=False,
                    force_polling=self._force_polling,
                ):
                    await self._reload_quietly()
            except OSError as exc:
                log.error("watching %s failed (%s); retrying in %.0f s", self.path.parent, exc, RETRY_WATCH_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_WATCH_S)
                await self._reload_quietly()

    async def _reload_quietly(self) -> None:
        # The failure is already counted, logged and kept for status(); the watcher must go on.
        async with self._reloading:
            try:
                await asyncio.to_thread(self.reload)
            except RulesError:
                return

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise RulesError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
