"""The fast frontier path: upstreams that speak the OpenAI protocol already, over one pooled aiohttp session.

This path decides the gateway's overhead (DESIGN.md: an httpx client, which the openai SDK uses, saturates near
230 requests/s where aiohttp sustains 800), so it keeps to: one long-lived session and connection pool per model,
the client's body passed through with `model` replaced and encoded once (orjson) for all attempts, the answer
decoded once, and streams relayed chunk by chunk as they arrive.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from router.chat import ChatRequest, Completion, StreamEvent
from router.errors import UpstreamError, UpstreamTimeout
from router.frontier.base import FrontierBackend
from router.frontier.failures import error_fields, status_error
from router.frontier.openai_format import StreamReader, malformed, parse_completion, upstream_body
from router.frontier.retry import RetryAfter, retry_after_seconds
from router.frontier.settings import OPENAI_API_BASE, FrontierModelSettings
from router.frontier.sse import SSEDecoder


class OpenAICompatibleBackend(FrontierBackend[bytes]):
    """POSTs to `{api_base}/chat/completions`; timeouts, retries and errors as `FrontierModelSettings` says."""

    def __init__(self, settings: FrontierModelSettings) -> None:
        super().__init__(settings)
        self._url = URL(f"{settings.api_base or OPENAI_API_BASE}/chat/completions")
        self._session: aiohttp.ClientSession | None = None
        # A whole answer must arrive within timeout_s; a stream may run longer while it keeps sending.
        self._answer_timeout = aiohttp.ClientTimeout(total=settings.timeout_s, sock_connect=settings.connect_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.timeout_s,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.timeout_s,
        )

    async def _open(self) -> str | None:
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.settings.extra_headers}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        connector = aiohttp.TCPConnector(limit=self.settings.max_connections, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        return None

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _prepare(self, request: ChatRequest, *, stream: bool) -> bytes:
        return orjson.dumps(upstream_body(request, self.settings.model, stream=stream))

    async def _complete_once(self, prepared: bytes) -> Completion:
        session = self._live_session()
        try:
            async with session.post(self._url, data=prepared, timeout=self._answer_timeout) as response:
                payload = await response.read()
                if not 200 <= response.status < 300:
                    raise self._status_error(response.status, response.headers, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise malformed(self.name, "an answer that is not JSON") from None
        return parse_completion(data, self.settings.model)

    async def _stream_once(self, prepared: bytes) -> AsyncGenerator[StreamEvent, None]:
        session = self._live_session()
        reader = StreamReader(self.settings.model)
        decoder = SSEDecoder()
        try:
            async with session.post(self._url, data=prepared, timeout=self._stream_timeout) as response:
                if not 200 <= response.status < 300:
                    raise self._status_error(response.status, response.headers, await response.read())
                # Reading on to the end of the body after [DONE] (it follows at once) lets the connection be reused.
                async for chunk in response.content.iter_any():
                    for data in decoder.feed(chunk):
                        for event in self._events(reader, data):
                            yield event
                for data in decoder.close():
                    for event in self._events(reader, data):
                        yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not reader.done:  # a server that lingers after [DONE] has still answered in full
                raise self._transport_error(exc) from exc
        yield reader.end()

    def _events(self, reader: StreamReader, data: bytes) -> list[StreamEvent]:
        if data == b"[DONE]":
            reader.done = True
            return []
        if reader.done:
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed(self.name, "a stream chunk that is not JSON") from None
        return reader.events(chunk)

    def _live_session(self) -> aiohttp.ClientSession:
        if self._session is None:  # closed while a request was on its way
            raise UpstreamError(f"frontier model {self.name}: the backend is closed", retryable=False)
        return self._session

    def _status_error(self, status: int, headers: CIMultiDictProxy[str], payload: bytes) -> UpstreamError | RetryAfter:
        message, code, param = error_fields(payload)
        return status_error(
            self.name, status, message, code=code, param=param, retry_after_s=retry_after_seconds(headers)
        )

    def _transport_error(self, exc: aiohttp.ClientError | TimeoutError) -> UpstreamError:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamTimeout(
                f"frontier model {self.name}: could not connect to the upstream within "
                f"{self.settings.connect_timeout_s:g} s"
            )
        if isinstance(exc, TimeoutError):  # aiohttp's read timeout (ServerTimeoutError) is a TimeoutError too
            return UpstreamTimeout(
                f"frontier model {self.name}: no answer from the upstream within {self.settings.timeout_s:g} s"
            )
        if isinstance(exc, aiohttp.ClientPayloadError):
            return UpstreamError(f"frontier model {self.name}: the upstream cut its answer short ({exc})")
        if isinstance(exc, aiohttp.ClientConnectionError):
            return UpstreamError(f"frontier model {self.name}: connection to the upstream failed ({exc})")
        return UpstreamError(f"frontier model {self.name}: the request could not be made ({exc})", retryable=False)
