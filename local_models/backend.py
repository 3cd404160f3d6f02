"""A local GGUF model as a `Backend`: one worker thread per model, bounded admission, cancellation per request.

One `Llama` object is not thread-safe and has no batching, so each model serves one generation at a time on its
own thread; the event loop only waits. Requests beyond the running one wait in the thread pool's queue, at most
`max_queue` of them; beyond that the answer is `QueueFull` (429 with Retry-After). Scale-out is llama.cpp's own
`llama-server` (continuous batching), reached as an OpenAI-compatible frontier-style upstream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from llama_cpp import Llama

from local_models.embedded import ensure_embedded_model
from local_models.generation import Cancelled, Emit, Generator
from local_models.prefix_cache import PrefixCache
from local_models.prompting import Formatter, formatter_for, render_prompt
from local_models.settings import LocalModelSettings
from router.backend import Backend
from router.chat import ChatRequest, Completion, StreamEvent
from router.errors import ContextLengthExceeded, InvalidRequest, QueueFull, Unavailable

log = logging.getLogger("tiergate.local_models")

_END = object()


class LocalBackend(Backend):
    tier = "local"

    def __init__(self, settings: LocalModelSettings, cache_dir: Path) -> None:
        self.name = settings.name
        self.context_tokens = settings.context_tokens
        self._settings = settings
        self._cache_dir = cache_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{settings.name}")
        self._admitted = 0
        self._running = 0
        self._llama: Llama | None = None
        self._formatter: Formatter | None = None
        self._generator: Generator | None = None
        self._prefix_cache: PrefixCache | None = None
        self._load_error: str | None = "not loaded yet"
        self.load_seconds: float | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
            self._load_error = None
        except Exception as exc:  # a bad path or a broken file: the gateway still serves the other tier
            self._load_error = f"{type(exc).__name__}: {exc}"
            log.error("local model %s failed to load: %s", self.name, self._load_error)

    def _load(self) -> None:
        s = self._settings
        path = s.path if s.path is not None else ensure_embedded_model(self._cache_dir)
        log.info("loading local model %s from %s", self.name, path)
        started = time.perf_counter()
        self._llama = Llama(
            model_path=str(path),
            n_ctx=s.context_tokens,
            n_threads=s.threads or max(1, (os.cpu_count() or 2) - 1),
            n_batch=s.batch_tokens,
            n_gpu_layers=s.gpu_layers,
            verbose=False,
        )
        self._formatter = formatter_for(s.chat_format, self._llama)
        self._generator = Generator(self._llama, self.name)
        self._prefix_cache = PrefixCache(self._llama, int(s.prefix_cache_mb * 1024 * 1024))
        self.load_seconds = time.perf_counter() - started
        log.info("local model %s loaded in %.1f s", self.name, self.load_seconds)

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._llama is not None:
            self._llama.close()
            self._llama = None
            self._generator = None
            self._prefix_cache = None

    # --- state -----------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._generator is not None

    @property
    def not_ready_reason(self) -> str | None:
        return None if self.ready else self._load_error

    @property
    def prefix_cache_bytes(self) -> int:
        """Host memory held by saved session states (see `prefix_cache`)."""
        return self._prefix_cache.nbytes if self._prefix_cache is not None else 0

    @property
    def queue_depth(self) -> int:
        return self._admitted

    def count_prompt_tokens(self, request: ChatRequest) -> int:
        """Tokens of the request as this model will read it (chat template and tools included)."""
        generator, formatter = self._loaded()
        return len(generator.tokenize_prompt(render_prompt(request, formatter, self._settings.chat_format)))

    # --- answering -------------------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> Completion:
        max_tokens = self._admit(request)
        cancel = threading.Event()
        future = self._submit(request, max_tokens, cancel, None)
        try:
            return await asyncio.wrap_future(future)
        finally:
            cancel.set()  # a no-op when finished; stops the generation when the caller was cancelled

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        # Admission happens here, before the first event, so that a full queue is an HTTP 429, not a broken stream.
        max_tokens = self._admit(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: StreamEvent) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        future = self._submit(request, max_tokens, cancel, emit)
        future.add_done_callback(
            lambda f: loop.call_soon_threadsafe(queue.put_nowait, f.exception() or _END) if not f.cancelled() else None
        )
        return self._events(queue, cancel)

    async def _events(self, queue: asyncio.Queue[object], cancel: threading.Event) -> AsyncIterator[StreamEvent]:
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            cancel.set()

    def _loaded(self) -> tuple[Generator, Formatter]:
        if self._generator is None or self._formatter is None:
            raise Unavailable(f"The local model {self.name} is not loaded: {self._load_error}.")
        return self._generator, self._formatter

    def _admit(self, request: ChatRequest) -> int:
        self._loaded()
        requested = request.sampling.max_tokens
        if requested is not None and requested > self._settings.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens is {requested}; this model allows at most {self._settings.max_tokens_limit}.",
                param="max_tokens",
            )
        if self._admitted > self._settings.max_queue:
            raise QueueFull(f"The local model {self.name} is busy ({self._admitted} requests ahead); retry shortly.")
        self._admitted += 1
        return requested or self._settings.default_max_tokens

    def _release(self) -> None:
        self._admitted -= 1

    def _submit(
        self, request: ChatRequest, max_tokens: int, cancel: threading.Event, emit: Emit | None
    ) -> Future[Completion]:
        loop = asyncio.get_running_loop()
        future = self._executor.submit(self._run, request, max_tokens, cancel, emit)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return future

    def _run(self, request: ChatRequest, max_tokens: int, cancel: threading.Event, emit: Emit | None) -> Completion:
        """On the worker thread."""
        if cancel.is_set():
            raise Cancelled
        generator, formatter = self._loaded()
        prompt = render_prompt(request, formatter, self._settings.chat_format)
        prompt_tokens = generator.tokenize_prompt(prompt)
        room = self._settings.context_tokens - len(prompt_tokens)
        if room <= 0:
            raise ContextLengthExceeded(
                f"The prompt is {len(prompt_tokens)} tokens; the local model {self.name} reads at most "
                f"{self._settings.context_tokens}.",
                param="messages",
            )
        cached = self._prefix_cache.prepare(request.session_id, prompt_tokens) if self._prefix_cache else 0
        return generator.generate(request, prompt, prompt_tokens, min(max_tokens, room), cancel, emit, cached)
