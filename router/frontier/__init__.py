"""The frontier tier: models reached over an API, one backend per configured model.

`build_frontier_backend(settings)` picks the backend for the settings' provider:

- `openai_compatible` -> `OpenAICompatibleBackend`: a pooled aiohttp session straight to an upstream that speaks
  the OpenAI protocol (the fast path; the client's body passes through with only `model` replaced).
- `litellm` -> `LiteLLMBackend`: litellm translates for the providers that need it.

Both map failures onto `router.errors` (timeouts to `UpstreamTimeout`, the rest to `UpstreamError` with
`retryable` and `upstream_status`), retry with backoff before a stream has sent anything, and bound every attempt
with a timeout.
"""

from __future__ import annotations

from typing import Any

from router.backend import Backend
from router.frontier.base import FrontierBackend
from router.frontier.litellm_backend import LiteLLMBackend
from router.frontier.openai_compatible import OpenAICompatibleBackend
from router.frontier.openai_format import passes_through, upstream_body
from router.frontier.settings import FrontierModelSettings, Provider

BACKENDS: dict[Provider, type[FrontierBackend[Any]]] = {
    "openai_compatible": OpenAICompatibleBackend,
    "litellm": LiteLLMBackend,
}


def build_frontier_backend(settings: FrontierModelSettings) -> Backend:
    """The (not yet started) backend for one configured frontier model; `await backend.start()` before use."""
    return BACKENDS[settings.provider](settings)


__all__ = [
    "BACKENDS",
    "FrontierBackend",
    "FrontierModelSettings",
    "LiteLLMBackend",
    "OpenAICompatibleBackend",
    "build_frontier_backend",
    "passes_through",
    "upstream_body",
]
