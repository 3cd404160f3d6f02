"""What every frontier backend shares: the key from the environment, readiness, in-flight count and retries.

A backend supplies three steps: `_prepare` (the request as its transport sends it, built once for all attempts),
`_complete_once` and `_stream_once` (one attempt each, raising `UpstreamError` or `RetryAfter`), plus `_open` and
`_close` for what it holds (`_open` returns why the model cannot be used, if it finds a reason).
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Generic, TypeVar

from router.backend import Backend
from router.chat import ChatRequest, Completion, StreamEvent, Tier
from router.errors import Unavailable
from router.frontier.retry import RetryPolicy, call_with_retries, stream_with_retries
from router.frontier.settings import FrontierModelSettings

log = logging.getLogger("tiergate.frontier")

Prepared = TypeVar("Prepared")


class FrontierBackend(Backend, Generic[Prepared]):
    tier: Tier = "frontier"

    def __init__(self, settings: FrontierModelSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.context_tokens = settings.context_tokens
        self._policy = RetryPolicy(settings.max_retries, settings.backoff_s, settings.max_backoff_s)
        self._api_key: str | None = None
        self._problem: str | None = "not started"
        self._in_flight = 0

    @property
    def ready(self) -> bool:
        return self._problem is None

    @property
    def not_ready_reason(self) -> str | None:
        return None if self._problem is None else f"frontier model {self.name}: {self._problem}"

    @property
    def queue_depth(self) -> int:
        return self._in_flight

    async def start(self) -> None:
        """Read the key and open the transport; a missing key leaves the model unavailable, with the reason."""
        variable = self.settings.api_key_env
        self._api_key = (os.environ.get(variable) or None) if variable else None
        if variable is not None and self._api_key is None:
            self._problem = f"environment variable {variable} is not set"
            log.warning("%s", self.not_ready_reason)
            return
        self._problem = await self._open()
        if self._problem is not None:
            log.warning("%s", self.not_ready_reason)

    async def close(self) -> None:
        self._problem = "closed"
        await self._close()

    async def complete(self, request: ChatRequest) -> Completion:
        self._check_ready()
        prepared = self._prepare(request, stream=False)
        self._in_flight += 1
        try:
            return await call_with_retries(lambda: self._complete_once(prepared), self._policy, self.name)
        finally:
            self._in_flight -= 1

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self._check_ready()
        prepared = self._prepare(request, stream=True)
        self._in_flight += 1
        try:
            async with aclosing(
                stream_with_retries(lambda: self._stream_once(prepared), self._policy, self.name)
            ) as events:
                async for event in events:
                    yield event
        finally:
            self._in_flight -= 1

    def _check_ready(self) -> None:
        if self._problem is not None:
            raise Unavailable(f"frontier model {self.name}: {self._problem}")

    @abstractmethod
    def _prepare(self, request: ChatRequest, *, stream: bool) -> Prepared: ...

    @abstractmethod
    async def _complete_once(self, prepared: Prepared) -> Completion: ...

    @abstractmethod
    def _stream_once(self, prepared: Prepared) -> AsyncGenerator[StreamEvent, None]: ...

    @abstractmethod
    async def _open(self) -> str | None: ...

    @abstractmethod
    async def _close(self) -> None: ...
