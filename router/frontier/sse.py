"""Server-sent events: the `data` payloads of an event stream, decoded incrementally from raw bytes.

aiohttp has a server-side SSE helper only, and the client-side packages (aiohttp-sse-client, httpx-sse) are not
dependencies; the part of the format that OpenAI-compatible upstreams use (`data:` lines, events ended by a blank
line, comments) is small enough to own. Bytes are split on our side rather than with aiohttp's `readline`, which
refuses lines longer than its buffer (a large tool call can arrive as one event).
"""

from __future__ import annotations


class SSEDecoder:
    """Feed it bytes as they arrive; it returns each complete event's data (multi-line data joined with `\\n`)."""

    __slots__ = ("_data", "_partial")

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = (self._partial + chunk).split(b"\n") if self._partial else chunk.split(b"\n")
        self._partial = lines.pop()
        events: list[bytes] = []
        for line in lines:
            self._line(line.rstrip(b"\r"), events)
        return events

    def close(self) -> list[bytes]:
        """The stream ended: an event not yet ended by a blank line still counts (some servers omit the last one)."""
        events: list[bytes] = []
        if self._partial:
            self._line(self._partial.rstrip(b"\r"), events)
            self._partial = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data:
                events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                self._data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # Comments (`: keep-alive`) and the `event`, `id` and `retry` fields mean nothing to a chat stream.
