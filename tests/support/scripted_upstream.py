"""A scripted OpenAI-compatible upstream on 127.0.0.1, for tests and for the overhead benchmark.

    with ScriptedUpstream([Reply.status(500), Reply.text("hi")]) as up:
        ...  # point a client at up.base_url (".../v1"); POST /v1/chat/completions
        assert len(up.requests) == 2 and up.requests[1].body["model"] == "gpt-4.1-mini"

It is a real HTTP server (aiohttp.web) in a background thread with its own event loop, so sync tests and async
code use it alike (`async with` works too). Each request to `.../chat/completions` takes the next reply of the
script; when the script is used up, every request gets `default`. A text or tool-call reply answers in the shape
the request asks for: JSON, or server-sent events when `"stream": true` (with a usage chunk when
`stream_options.include_usage` is set). The failure replies: an error status (with Retry-After), a hang, a
connection reset, a stream cut or stalled mid-way.

Benchmark use: `ScriptedUpstream(default=Reply.text("ok", delay_s=0.05), record=False)` answers every request the
same after 50 ms, with the JSON encoded once per reply and model; or run it alone as a process:
`python tests/support/scripted_upstream.py --port 9100 --latency-ms 50`.

Only aiohttp, orjson and the standard library are used, so anything can import it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

Action = Literal["answer", "status", "hang", "reset", "cut", "stall"]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: cheap as a cache key on every request
class Reply:
    """One scripted answer. Build it with the class methods; every option can also be given to each of them."""

    action: Action = "answer"
    content: str | None = "ok"
    tool_calls: tuple[tuple[str, str, str], ...] = ()
    """(id, name, arguments JSON) of each call."""
    finish_reason: str | None = None
    """None: `tool_calls` when there are calls, else `stop`."""
    usage: tuple[int, int, int] = (10, 5, 0)
    """prompt, completion and cached prompt tokens."""
    status_code: int = 200
    error_message: str = ""
    error_code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    """Wait before answering (the fixed latency of a benchmark upstream)."""
    chunk_delay_s: float = 0.0
    """Wait between stream chunks."""
    chunk_chars: int = 4
    """Characters of text (or of tool-call arguments) per stream chunk."""
    after_chunks: int = 1
    """For `cut` and `stall`: content chunks sent before the stream breaks."""
    clean_end: bool = False
    """For `cut`: end the HTTP body properly (but without a finish or [DONE]) instead of dropping the connection."""
    hang_s: float | None = None
    """For `hang` and `stall`: how long; None means until the server stops."""
    model: str | None = None
    """The model the answer names; None echoes the request's."""

    @classmethod
    def text(cls, content: str, **options: Any) -> Reply:
        return cls(action="answer", content=content, **options)

    @classmethod
    def tool_call(
        cls, name: str, arguments: Mapping[str, Any] | str, *, call_id: str = "call_1", **options: Any
    ) -> Reply:
        return cls.tool_calls_of([(name, arguments)], call_ids=[call_id], **options)

    @classmethod
    def tool_calls_of(
        cls,
        calls: Iterable[tuple[str, Mapping[str, Any] | str]],
        *,
        call_ids: Iterable[str] | None = None,
        content: str | None = None,
        **options: Any,
    ) -> Reply:
        calls = list(calls)
        ids = list(call_ids) if call_ids is not None else [f"call_{i + 1}" for i in range(len(calls))]
        encoded = tuple(
            (call_id, name, args if isinstance(args, str) else orjson.dumps(args).decode())
            for call_id, (name, args) in zip(ids, calls, strict=True)
        )
        return cls(action="answer", content=content, tool_calls=encoded, **options)

    @classmethod
    def status(
        cls,
        code: int,
        message: str | None = None,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: int | None = None,
        error_code: str | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Reply:
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        if retry_after_ms is not None:
            extra["retry-after-ms"] = str(retry_after_ms)
        return cls(
            action="status",
            status_code=code,
            error_message=message if message is not None else f"scripted error {code}",
            error_code=error_code,
            headers=tuple(extra.items()),
            **options,
        )

    @classmethod
    def hang(cls, seconds: float | None = None, **options: Any) -> Reply:
        """Accept the request and send nothing (for `seconds`, or until the server stops)."""
        return cls(action="hang", hang_s=seconds, **options)

    @classmethod
    def reset(cls, **options: Any) -> Reply:
        """Drop the connection with a TCP reset, before any byte of an answer."""
        return cls(action="reset", **options)

    @classmethod
    def cut(cls, content: str, *, after_chunks: int = 1, clean_end: bool = False, **options: Any) -> Reply:
        """Start streaming `content`, then break off after `after_chunks` content chunks."""
        return cls(action="cut", content=content, after_chunks=after_chunks, clean_end=clean_end, **options)

    @classmethod
    def stall(cls, content: str, *, after_chunks: int = 1, seconds: float | None = None, **options: Any) -> Reply:
        """Start streaming `content`, then go silent with the connection open."""
        return cls(action="stall", content=content, after_chunks=after_chunks, hang_s=seconds, **options)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    """Case-insensitive, as received."""
    raw_body: bytes
    body: Any
    """The body parsed as JSON (None if it was not JSON)."""
    received_at: float
    """`time.monotonic()` when the body had arrived."""
    client_port: int
    """The client's source port: requests on one kept-alive connection share it."""
    client_went_away: bool = False
    """Set when the client closed the connection before the answer was written in full."""


@dataclass
class _Shape:
    """What a request asks of the answer's form."""

    model: str
    stream: bool
    include_usage: bool


class ScriptedUpstream:
    """An OpenAI-compatible server on 127.0.0.1 answering from a script; see the module docstring."""

    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        default: Reply | None = None,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._script: deque[Reply] = deque(script)
        self.default = default if default is not None else Reply.text("ok")
        self.record = record
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._requested_port = port
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._encoded: dict[tuple[Reply, str], bytes] = {}
        self._encoded_streams: dict[tuple[Reply, str, bool], bytes] = {}
        self._ids = itertools.count(1)

    # --- control -------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as `base_url` (ends in `/v1`)."""
        return f"http://{self._host}:{self.port}/v1"

    def push(self, *replies: Reply) -> None:
        """Append replies to the script."""
        self._script.extend(replies)

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    def start(self) -> ScriptedUpstream:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._ready.clear()
        self.port = 0
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name=f"scripted-upstream-{id(self):x}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._startup_error is not None:
            raise RuntimeError("scripted upstream failed to start") from self._startup_error
        if not self.port:
            raise RuntimeError("scripted upstream did not start within 10 s")
        return self

    def stop(self) -> None:
        """Release hanging replies, close connections and stop the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may have closed already
            loop.call_soon_threadsafe(self._begin_stop)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> ScriptedUpstream:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    def wait_for(self, predicate: Callable[[], object], timeout_s: float = 2.0) -> bool:
        """Poll `predicate()` (e.g. a disconnect being recorded) until true or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return bool(predicate())

    # --- the server thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = _new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), which raises it in the caller's thread
            self._startup_error = exc
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._release = asyncio.Event()
        self._stopped = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{path:.*chat/completions}", self._handle)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._requested_port))
        site = web.SockSite(runner, sock, backlog=1024)
        try:
            await site.start()
            self.port = sock.getsockname()[1]
            self._ready.set()
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    def _begin_stop(self) -> None:
        assert self._release is not None and self._stopped is not None
        self._release.set()
        self._stopped.set()

    # --- answering -----------------------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        model = self.default.model or "scripted"
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "tests"}]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        record = self._record(request, raw, body)
        reply = self._script.popleft() if self._script else self.default
        shape = _shape_of(body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return await self._answer(request, reply, shape, record)

    def _record(self, request: web.Request, raw: bytes, body: Any) -> RecordedRequest:
        if not self.record:
            return _UNRECORDED
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        port = peer[1] if isinstance(peer, tuple) else 0
        record = RecordedRequest(request.method, request.path, request.headers, raw, body, time.monotonic(), port)
        self.requests.append(record)
        return record

    async def _answer(
        self, request: web.Request, reply: Reply, shape: _Shape, record: RecordedRequest
    ) -> web.StreamResponse:
        if reply.action == "status":
            return self._status(reply)
        if reply.action == "hang":
            await self._hang(reply.hang_s)
            return web.Response(status=504, text="scripted hang ended")
        if reply.action == "reset":
            _reset(request)
            return web.Response(status=500)  # never sent: the connection is gone
        if shape.stream or reply.action in ("cut", "stall"):
            return await self._stream(request, reply, shape, record)
        return web.Response(body=self._json_answer(reply, shape), content_type="application/json")

    def _status(self, reply: Reply) -> web.Response:
        error = {"message": reply.error_message, "type": _error_type(reply.status_code), "param": None}
        error["code"] = reply.error_code
        return web.Response(
            status=reply.status_code,
            body=orjson.dumps({"error": error}),
            content_type="application/json",
            headers=dict(reply.headers),
        )

    async def _hang(self, seconds: float | None) -> None:
        assert self._release is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)

    def _json_answer(self, reply: Reply, shape: _Shape) -> bytes:
        key = (reply, shape.model)
        cached = self._encoded.get(key)
        if cached is None:
            cached = orjson.dumps(_completion(reply, reply.model or shape.model))
            self._encoded[key] = cached
        return cached

    async def _stream(
        self, request: web.Request, reply: Reply, shape: _Shape, record: RecordedRequest
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            await self._send_stream(request, response, reply, shape)
        except ConnectionResetError:  # the client left; aiohttp's write raises a subclass of it
            record.client_went_away = True
        return response

    async def _send_stream(
        self, request: web.Request, response: web.StreamResponse, reply: Reply, shape: _Shape
    ) -> None:
        model = reply.model or shape.model
        if reply.action == "answer" and not reply.chunk_delay_s:  # the whole stream in one write, encoded once
            key = (reply, model, shape.include_usage)
            encoded = self._encoded_streams.get(key)
            if encoded is None:
                events = _stream_chunks(reply, model, "chatcmpl-scripted", shape.include_usage)
                encoded = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in events) + b"data: [DONE]\n\n"
                self._encoded_streams[key] = encoded
            await response.write(encoded)
            await response.write_eof()
            return
        chunks = list(_stream_chunks(reply, model, f"chatcmpl-scripted-{next(self._ids)}", shape.include_usage))
        if reply.action in ("cut", "stall"):
            head = chunks[: 1 + reply.after_chunks]  # the role chunk, then content
            await self._write_events(response, head, reply.chunk_delay_s)
            if reply.action == "stall":
                await self._hang(reply.hang_s)
            elif not reply.clean_end:
                _reset(request, linger=False)
                return
            await response.write_eof()
            return
        await self._write_events(response, chunks, reply.chunk_delay_s)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

    @staticmethod
    async def _write_events(response: web.StreamResponse, chunks: list[dict[str, Any]], delay_s: float) -> None:
        if not delay_s:
            await response.write(b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks))
            return
        for i, chunk in enumerate(chunks):
            if i:
                await asyncio.sleep(delay_s)
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")


_UNRECORDED = RecordedRequest("", "", {}, b"", None, 0.0, 0)
"""Stands in for the record of a request when recording is off (benchmarks)."""


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (the gateway's own stack; measured here: about 15% more requests/s
    for this server), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# --- answer bodies ---------------------------------------------------------------------------------------------


def _shape_of(body: Any) -> _Shape:
    if not isinstance(body, dict):
        return _Shape("scripted", False, False)
    options = body.get("stream_options")
    return _Shape(
        model=str(body.get("model") or "scripted"),
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


def _finish(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _usage(reply: Reply) -> dict[str, Any]:
    prompt, completion, cached = reply.usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _completion(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            for call_id, name, arguments in reply.tool_calls
        ]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}],
        "usage": _usage(reply),
    }


def _pieces(text: str, size: int) -> Iterator[str]:
    size = max(1, size)
    for start in range(0, len(text), size):
        yield text[start : start + size]


def _stream_chunks(reply: Reply, model: str, answer_id: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The chunks OpenAI sends: role, content pieces, tool-call pieces, the finish, and usage if asked for."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        out = {"id": answer_id, "object": "chat.completion.chunk", "created": created, "model": model}
        out["choices"] = [choice]
        if include_usage:
            out["usage"] = None
        return out

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _pieces(reply.content or "", reply.chunk_chars):
        yield chunk({"content": piece})
    for index, (call_id, name, arguments) in enumerate(reply.tool_calls):
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        yield chunk({"tool_calls": [head]})
        for piece in _pieces(arguments, reply.chunk_chars):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish(reply))
    if include_usage:
        yield {
            "id": answer_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": _usage(reply),
        }


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status in (401, 403):
        return "authentication_error"
    return "invalid_request_error" if status < 500 else "server_error"


def _reset(request: web.Request, *, linger: bool = True) -> None:
    """Drop the connection: with a TCP reset (SO_LINGER 0), or, with `linger=False`, a plain close mid-body."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if linger and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --- running alone ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fixed-latency OpenAI-compatible upstream on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="wait before each answer")
    parser.add_argument("--text", default="ok", help="the answer's text")
    parser.add_argument("--chunk-chars", type=int, default=4, help="text per stream chunk")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="wait between stream chunks")
    args = parser.parse_args(argv)
    reply = Reply.text(
        args.text,
        delay_s=args.latency_ms / 1000,
        chunk_chars=args.chunk_chars,
        chunk_delay_s=args.chunk_delay_ms / 1000,
    )
    with ScriptedUpstream(default=reply, record=False, host=args.host, port=args.port) as upstream:
        print(upstream.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
