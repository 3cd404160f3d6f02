"""Retrying a frontier call: which failures, how long to wait, and never once a stream has sent content onward.

Written here rather than with a retry library (tenacity is not a dependency, and none handles the stream rule:
an async generator may be retried only until its first event has left): the whole policy is one small function.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from router.errors import UpstreamError

log = logging.getLogger("tiergate.frontier")

T = TypeVar("T")


class RetryAfter(Exception):
    """An upstream failure that came with a wait the upstream asked for (`Retry-After`).

    Internal to the frontier package: the retry loop unwraps it, and callers only ever see `error`.
    """

    def __init__(self, error: UpstreamError, seconds: float) -> None:
        super().__init__(error.message)
        self.error = error
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int
    backoff_s: float
    max_backoff_s: float

    def delay(self, retry: int, retry_after_s: float | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (0 for the first), or None when it is not to be made."""
        if retry >= self.max_retries:
            return None
        if retry_after_s is not None:
            # An upstream that asks for a longer pause than we may wait is better answered by the router's
            # fallback now than by a retry that is likely to be refused again.
            return retry_after_s if retry_after_s <= self.max_backoff_s else None
        wait = min(self.max_backoff_s, self.backoff_s * 2.0**retry)
        return wait * random.uniform(0.5, 1.0)  # jitter, so that many requests failing together do not retry together


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The wait an upstream asked for, from `retry-after-ms` (OpenAI's) or `Retry-After` (seconds or an HTTP date).

    `headers` must look names up case-insensitively, as aiohttp's and httpx's header objects do.
    """
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))  # the standard says whole seconds; fractions do no harm
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _failure(exc: UpstreamError | RetryAfter) -> tuple[UpstreamError, float | None]:
    if isinstance(exc, RetryAfter):
        return exc.error, exc.seconds
    return exc, None


def _log_retry(model: str, error: UpstreamError, retry: int, delay: float) -> None:
    log.warning(
        "frontier model %s: %s (upstream status %s); retry %d in %.2f s",
        model,
        type(error).__name__,
        error.upstream_status,
        retry + 1,
        delay,
    )


async def call_with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, model: str) -> T:
    """Await `attempt()`, again after each retryable failure while the policy allows; raise the last error."""
    retry = 0
    while True:
        try:
            return await attempt()
        except (UpstreamError, RetryAfter) as exc:
            error, retry_after_s = _failure(exc)
        delay = policy.delay(retry, retry_after_s) if error.retryable else None
        if delay is None:
            raise error
        _log_retry(model, error, retry, delay)
        await asyncio.sleep(delay)
        retry += 1


async def stream_with_retries(
    open_stream: Callable[[], AsyncGenerator[T, None]], policy: RetryPolicy, model: str
) -> AsyncGenerator[T, None]:
    """Relay `open_stream()`'s items, opening it again after a retryable failure only while none has been relayed.

    Closing this iterator closes the stream behind it at once (that drops the upstream connection).
    """
    retry = 0
    while True:
        relayed = False
        try:
            async with aclosing(open_stream()) as items:
                async for item in items:
                    relayed = True
                    yield item
            return
        except (UpstreamError, RetryAfter) as exc:
            error, retry_after_s = _failure(exc)
        delay = policy.delay(retry, retry_after_s) if error.retryable and not relayed else None
        if delay is None:
            raise error
        _log_retry(model, error, retry, delay)
        await asyncio.sleep(delay)
        retry += 1
