"""The one interface behind which the local model and the frontier client both sit.

The router picks a backend; it cannot tell them apart beyond the `tier` they declare.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from router.chat import ChatRequest, Completion, StreamEvent, Tier


class Backend(ABC):
    """Answers chat requests for one configured model."""

    name: str
    """The model name clients use and the ledger records."""
    tier: Tier
    context_tokens: int | None = None
    """The context window, where the backend knows it (the local model does)."""

    @property
    def ready(self) -> bool:
        """Whether a request sent now could be answered (model loaded, key present)."""
        return True

    @property
    def not_ready_reason(self) -> str | None:
        return None

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not finished yet (waiting and running)."""
        return 0

    @abstractmethod
    async def complete(self, request: ChatRequest) -> Completion:
        """Answer the whole request. Raises a `router.errors.TiergateError` subclass on failure."""

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Answer as events, ending with exactly one `StreamEnd`.

        Closing the iterator early (the client went away) must stop the work behind it.
        """

    async def start(self) -> None:  # noqa: B027 - optional hook, most backends need it
        """Acquire what the backend needs (load a model, open a connection pool)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release it."""
