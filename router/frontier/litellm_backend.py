"""Frontier providers whose protocol needs translation (Anthropic, Gemini, Bedrock, ...), through litellm.

litellm takes and returns the OpenAI shapes, so the body and the parsing are the same as on the direct path.
It is imported once, in `start()`, in a worker thread: the import takes seconds and builds provider modules, and
with LITELLM_LOCAL_MODEL_COST_MAP it reads its price map from its wheel instead of the network. Its own retries
are switched off; ours apply, so both backends retry alike.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from router.chat import ChatRequest, Completion, StreamEvent
from router.errors import UpstreamError, UpstreamTimeout
from router.frontier.base import FrontierBackend
from router.frontier.failures import redact_secrets, status_error
from router.frontier.openai_format import StreamReader, parse_completion, upstream_body
from router.frontier.retry import RetryAfter, retry_after_seconds

_CAUSE_DEPTH = 10


def load_litellm() -> Any:
    """Import litellm (cheap once it is loaded) without its network fetch of prices or its stdout banners."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm: Any = importlib.import_module("litellm")
    litellm.suppress_debug_info = True
    return litellm


def _warm_up(litellm: Any, model: str) -> None:
    """Load what litellm loads on its first real call, so that call does not pay for it.

    Measured here: the first call after the import took 1.5 s and the first stream 1.0 s more than later ones,
    mostly lazy imports (`openai.resources` alone is over a second); that would spend a short timeout on them.
    Mock answers (`mock_response`) make no request; they also check that litellm knows the model's provider.
    """
    messages = [{"role": "user", "content": "warm-up"}]
    litellm.completion(model=model, messages=messages, mock_response="ok")
    for _ in litellm.completion(model=model, messages=messages, mock_response="ok", stream=True):
        pass
    importlib.import_module("openai.resources")  # loaded lazily by the openai client that many providers go through


class LiteLLMBackend(FrontierBackend[dict[str, Any]]):
    """Calls `litellm.acompletion` with the configured model, key and base; each attempt bounded by `timeout_s`."""

    _litellm: Any = None
    _timeouts: tuple[type[BaseException], ...] = (TimeoutError,)
    _dropped: tuple[type[BaseException], ...] = (ConnectionError,)

    async def _open(self) -> str | None:
        def load() -> Any:
            litellm = load_litellm()
            _warm_up(litellm, self.settings.model)
            return litellm

        try:
            self._litellm = await asyncio.to_thread(load)
        except Exception as exc:  # a model litellm cannot place: unavailable, with litellm's reason
            return f"litellm cannot use model {self.settings.model!r}: {exc}"
        # httpx, aiohttp and openai are litellm's own dependencies, loaded by now; their failure types tell a
        # timeout or a dropped connection apart from an answer with a status.
        import aiohttp
        import httpx
        import openai

        self._timeouts = (TimeoutError, httpx.TimeoutException, openai.APITimeoutError)
        self._dropped = (ConnectionError, httpx.TransportError, aiohttp.ClientError, openai.APIConnectionError)
        return None

    async def _close(self) -> None:
        """litellm keeps its HTTP clients in its own module-level cache; there is nothing of ours to release."""

    def _prepare(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        settings = self.settings
        arguments = upstream_body(request, settings.model, stream=stream)
        arguments.update(
            api_key=self._api_key,
            api_base=settings.api_base,
            timeout=settings.timeout_s,
            num_retries=0,
            max_retries=0,
            drop_params=True,  # a provider without e.g. `seed` or `logit_bias` answers without it, as OpenAI would
        )
        if settings.extra_headers:
            arguments["extra_headers"] = dict(settings.extra_headers)
        return arguments

    async def _complete_once(self, prepared: dict[str, Any]) -> Completion:
        try:
            # litellm's own timeout does not reach every provider's transport; this one always holds.
            async with asyncio.timeout(self.settings.timeout_s):
                response = await self._litellm.acompletion(**prepared)
        except Exception as exc:
            raise self._error(exc) from exc
        return parse_completion(_as_dict(response), self.settings.model)

    async def _stream_once(self, prepared: dict[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        reader = StreamReader(self.settings.model)
        timeout_s = self.settings.timeout_s
        chunks: Any = None
        try:
            async with asyncio.timeout(timeout_s):
                chunks = await self._litellm.acompletion(**prepared)
            iterator = chunks.__aiter__()
            while True:
                try:
                    async with asyncio.timeout(timeout_s):  # each gap between chunks, as on the direct path
                        chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                for event in reader.events(_as_dict(chunk)):
                    yield event
        except UpstreamError:  # from our own reading of the chunks
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            if chunks is not None:
                await chunks.aclose()  # drops the upstream connection when we stop early
        # litellm ends its stream without passing on [DONE]; a finish reason is its sign of a whole answer.
        if reader.finish_reason is not None:
            reader.done = True
        yield reader.end()

    def _error(self, exc: Exception) -> UpstreamError | RetryAfter:
        # litellm reports a dropped connection as a 500 of its own; the cause chain says what really happened.
        causes = _causes(exc)
        if any(isinstance(c, self._timeouts) for c in causes):
            return UpstreamTimeout(
                f"frontier model {self.name}: no answer from the upstream within {self.settings.timeout_s:g} s"
            )
        if any(isinstance(c, self._dropped) for c in causes):
            return UpstreamError(
                f"frontier model {self.name}: connection to the upstream failed or was cut ({redact_secrets(str(exc))})"
            )
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= 400:
            message = str(getattr(exc, "message", None) or exc)
            return status_error(self.name, status, message, retry_after_s=_retry_after(exc))
        return UpstreamError(
            f"frontier model {self.name}: litellm failed: {type(exc).__name__}: {redact_secrets(str(exc))}",
            retryable=False,
        )


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < _CAUSE_DEPTH:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _as_dict(obj: Any) -> Any:
    """litellm's response objects are pydantic models; the OpenAI-format parsers read plain dicts."""
    return obj.model_dump() if hasattr(obj, "model_dump") else obj


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    return retry_after_seconds(headers) if isinstance(headers, Mapping) else None
