"""What one streamed chunk costs on Tiergate's frontier path, step by step, in-process (no sockets).

    .venv/bin/python bench/stream_chunk_cost.py [--repeat 7] [--number 20000]

For a content chunk as an OpenAI-compatible upstream sends it (the mock's own shape, tests/support/
scripted_upstream.py), it times each step the gateway takes today: splitting the SSE bytes
(`router.frontier.sse.SSEDecoder`), decoding the JSON, turning it into events (`StreamReader`), and rendering the
event again (`gateway.render.ChunkWriter`); then what a byte relay would do instead of the last step (rewrite `id`
and `model` in the upstream's bytes), and the cost of one async-generator layer that an event passes through
(the stream crosses about six: the backend, its retries, the service's stream and finish, the SSE writer).
It answers one question: how much of a chunk's cost would relaying the upstream's bytes save? Prints a markdown
table (best of `--repeat` runs of `--number` calls, in microseconds per chunk); nothing is appended anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import timeit
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.render import ChunkWriter
from router.chat import TextDelta
from router.frontier.openai_format import StreamReader
from router.frontier.sse import SSEDecoder

UPSTREAM_ID = b"chatcmpl-upstream0123456789abcdef"
CHUNK = {
    "id": UPSTREAM_ID.decode(),
    "object": "chat.completion.chunk",
    "created": 1_790_000_000,
    "model": "gpt-4.1-mini",
    "choices": [{"index": 0, "delta": {"content": "tok "}, "logprobs": None, "finish_reason": None}],
    "usage": None,
}
DATA = orjson.dumps(CHUNK)
LINE = b"data: " + DATA + b"\n\n"


def _relay_rewrite(data: bytes) -> bytes:
    """The cheapest relay: the upstream's bytes with its id and model names swapped for ours, no JSON round trip."""
    return b"data: " + data.replace(UPSTREAM_ID, b"chatcmpl-ours").replace(b'"gpt-4.1-mini"', b'"gpt-test"') + b"\n\n"


async def _layers(events: int, depth: int) -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(events):
            yield i

    async def layer(inner: AsyncIterator[int]) -> AsyncIterator[int]:
        async for item in inner:
            yield item

    stream: AsyncIterator[int] = source()
    for _ in range(depth):
        stream = layer(stream)
    async for _ in stream:
        pass


def _best_us(call: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each measurement (the best is shown)")
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    args = parser.parse_args(argv)
    number, repeat = args.number, args.repeat

    decoder = SSEDecoder()
    reader = StreamReader("gpt-4.1-mini")
    writer = ChunkWriter("chatcmpl-ours", "gpt-test", include_usage=False)
    writer.event(TextDelta("x"))  # past the first chunk, which also carries the role
    event = TextDelta("tok ")
    parsed = orjson.loads(DATA)
    rows = [
        ("split the SSE bytes (SSEDecoder.feed)", _best_us(lambda: decoder.feed(LINE), number, repeat)),
        ("decode the JSON (orjson.loads)", _best_us(lambda: orjson.loads(DATA), number, repeat)),
        ("chunk -> events (StreamReader.events)", _best_us(lambda: reader.events(parsed), number, repeat)),
        (
            "render the event again (ChunkWriter.event) [a relay skips this]",
            _best_us(lambda: writer.event(event), number, repeat),
        ),
        ("relay instead: rewrite id and model in the bytes", _best_us(lambda: _relay_rewrite(DATA), number, repeat)),
    ]
    loop = asyncio.new_event_loop()
    events = 2000
    one = _best_us(lambda: loop.run_until_complete(_layers(events, 1)), max(1, number // events), repeat) / events
    six = _best_us(lambda: loop.run_until_complete(_layers(events, 6)), max(1, number // events), repeat) / events
    loop.close()
    rows += [("one async-generator layer, per item", one), ("six async-generator layers, per item", six)]

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load}")
    print(f"chunk: {len(LINE)} bytes on the wire; best of {repeat} x {number} calls\n")
    print("| step, per content chunk | µs |\n|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
