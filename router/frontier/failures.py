"""Upstream failures as `router.errors`: which HTTP statuses are worth a retry, and the upstream's own message.

    timeout (connect, first byte, a stalled stream)   -> UpstreamTimeout            (retryable)
    429, 408, 409, 5xx, dropped or refused connection -> UpstreamError retryable    (upstream_status kept)
    any other 4xx                                      -> UpstreamError not retryable, with the upstream's message

408 and 409 follow the OpenAI SDK's own retry rule: a request timeout and a lock conflict on OpenAI's side.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson

from router.errors import UpstreamError
from router.frontier.retry import RetryAfter

_RETRYABLE_4XX = frozenset({408, 409, 429})
_MESSAGE_LIMIT = 1000
# Providers quote the key they were given in some errors (OpenAI: "Incorrect API key provided: sk-proj-****abcd").
# Even masked, a key's fragments must not reach our clients or logs: anything shaped like a provider or Tiergate key,
# or a bearer token, is replaced before the message leaves this module.
_SECRET = re.compile(
    r"(?i)\b(?:sk|pk|rk|tg|key|sess|xai|gsk|api)[-_][A-Za-z0-9*._\-]{6,}|\bAIza[A-Za-z0-9_\-]{20,}|(?<=bearer )\S+"
)


def redact_secrets(text: str) -> str:
    """The text with anything that looks like an API key or bearer token replaced by `[redacted]`."""
    return _SECRET.sub("[redacted]", text)


def is_retryable_status(status: int) -> bool:
    return status in _RETRYABLE_4XX or status >= 500


def status_error(
    model: str,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    retry_after_s: float | None = None,
) -> UpstreamError | RetryAfter:
    """The error for an upstream's non-2xx answer; wrapped in `RetryAfter` when it is retryable and says when."""
    retryable = is_retryable_status(status)
    error = UpstreamError(
        f"frontier model {model}: the upstream answered {status}: {redact_secrets(message)}",
        upstream_status=status,
        retryable=retryable,
        code=code,
        param=param,
    )
    if retryable and retry_after_s is not None:
        return RetryAfter(error, retry_after_s)
    return error


def error_fields(payload: bytes) -> tuple[str, str | None, str | None]:
    """`(message, code, param)` from an error body: OpenAI's shape `{"error": {...}}` and the common variants."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, Mapping):
        error = data.get("error", data)
        if isinstance(error, Mapping):
            message = error.get("message") or error.get("detail") or error.get("msg")
            if message:
                return _clip(str(message)), _text(error.get("code")), _text(error.get("param"))
        elif isinstance(error, str) and error:
            return _clip(error), None, None
    text = payload.decode("utf-8", "replace").strip()
    return _clip(text) if text else "(no message)", None, None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _clip(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."
