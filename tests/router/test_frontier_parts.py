"""The frontier package's pieces that need no server: SSE decoding, Retry-After, backoff, settings, error bodies."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import hypothesis
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from router.frontier import FrontierModelSettings
from router.frontier.failures import error_fields
from router.frontier.retry import RetryPolicy, retry_after_seconds
from router.frontier.sse import SSEDecoder

# --- server-sent events ------------------------------------------------------------------------------------------

STREAM = (
    b": keep-alive comment\r\n\r\n"
    b'data: {"a": 1}\n\n'
    b"event: message\nid: 7\n"
    b"data: first line\ndata: second line\n\n"
    b'data:{"no": "space"}\r\n\r\n'
    b"data: [DONE]\n\n"
)
EVENTS = [b'{"a": 1}', b"first line\nsecond line", b'{"no": "space"}', b"[DONE]"]


def decode(pieces: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.close()


def test_sse_events_in_one_piece() -> None:
    assert decode([STREAM]) == EVENTS


@hypothesis.settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_sse_events_do_not_depend_on_where_the_bytes_are_split(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]

    assert decode(pieces) == EVENTS


def test_sse_last_event_without_blank_line_still_counts_at_the_end() -> None:
    assert decode([b'data: {"x": 1}\n\ndata: [DONE]']) == [b'{"x": 1}', b"[DONE]"]


def test_sse_large_event_in_many_pieces() -> None:
    payload = orjson.dumps({"arguments": "x" * 300_000})
    stream = b"data: " + payload + b"\n\n"

    assert decode([stream[i : i + 1000] for i in range(0, len(stream), 1000)]) == [payload]


# --- Retry-After and backoff ---------------------------------------------------------------------------------------


class Headers(dict[str, str]):
    """Looks names up case-insensitively, as aiohttp's and httpx's header objects do."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    in_ten_s = format_datetime(now + timedelta(seconds=10), usegmt=True)

    assert retry_after_seconds(Headers({"Retry-After": "3"})) == 3.0
    assert retry_after_seconds(Headers({"retry-after-ms": "250", "Retry-After": "1"})) == 0.25
    assert retry_after_seconds(Headers({"Retry-After": in_ten_s}), now=now) == 10.0
    assert retry_after_seconds(Headers({"Retry-After": "-5"})) == 0.0
    assert retry_after_seconds(Headers({"Retry-After": "soon"})) is None
    assert retry_after_seconds(Headers({})) is None


def test_backoff_grows_and_is_bounded() -> None:
    policy = RetryPolicy(max_retries=6, backoff_s=0.5, max_backoff_s=3.0)

    delays = [policy.delay(n) for n in range(6)]

    for n, delay in enumerate(delays):
        assert delay is not None
        expected = min(3.0, 0.5 * 2**n)
        assert expected / 2 <= delay <= expected
    assert policy.delay(6) is None  # the retries are used up


def test_backoff_takes_the_upstreams_wait_unless_it_is_too_long() -> None:
    policy = RetryPolicy(max_retries=2, backoff_s=0.5, max_backoff_s=3.0)

    assert policy.delay(0, retry_after_s=2.5) == 2.5
    assert policy.delay(0, retry_after_s=30) is None
    assert RetryPolicy(max_retries=0, backoff_s=0.5, max_backoff_s=3.0).delay(0, retry_after_s=0.1) is None


# --- error bodies --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            b'{"error": {"message": "Bad key", "code": "invalid_api_key", "param": null}}',
            ("Bad key", "invalid_api_key"),
        ),
        (b'{"error": {"code": 400, "message": "context too long", "type": "x"}}', ("context too long", None)),
        (b'{"error": "model overloaded"}', ("model overloaded", None)),
        (b'{"detail": "Not Found"}', ("Not Found", None)),
        (b"<html>502 Bad Gateway</html>", ("<html>502 Bad Gateway</html>", None)),
        (b"", ("(no message)", None)),
    ],
)
def test_error_message_from_upstream_bodies(payload: bytes, expected: tuple[str, str | None]) -> None:
    message, code, _ = error_fields(payload)

    assert (message, code) == expected


# --- settings ------------------------------------------------------------------------------------------------------


def test_settings_defaults_and_normalisation() -> None:
    settings = FrontierModelSettings(name="gpt", model="gpt-4.1-mini", api_base="http://127.0.0.1:8081/v1/")

    assert settings.provider == "openai_compatible"
    assert settings.api_base == "http://127.0.0.1:8081/v1"
    assert settings.api_key_env == "OPENAI_API_KEY"
    assert settings.timeout_s > 0 and settings.max_retries >= 0


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown_field": 1},
        {"provider": "anthropic"},
        {"api_base": "127.0.0.1:8081"},
        {"api_key_env": " "},
        {"timeout_s": 0},
        {"max_retries": -1},
    ],
)
def test_settings_refuse_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FrontierModelSettings.model_validate({"name": "gpt", "model": "gpt-4.1-mini", **bad})


def test_settings_allow_no_key_for_local_upstreams() -> None:
    settings = FrontierModelSettings.model_validate(
        {"name": "llama-server", "model": "qwen", "api_base": "http://127.0.0.1:8081/v1", "api_key_env": None}
    )

    assert settings.api_key_env is None
