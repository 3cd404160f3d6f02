"""The `Ledger`: takes a `RequestRecord` per request without making the request wait, and writes rows in batches.

    record()  ->  bounded deque  ->  writer thread: price, batch, insert  ->  database
                                                            |  unreachable
                                                            v
                                                     on-disk spool  ->  replayed when it answers again

`record()` is an append to a deque (thread-safe, no lock) and a length check; a full queue drops the row, counts
it and logs (at most every few seconds), never blocks. One thread does everything else with plain synchronous
SQLAlchemy, so the event loop never waits on the database. `close()` writes everything accepted: to the database,
or to the spool when it is down, from where the next start writes it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from gateway.ledger.database import is_transient, make_engine, upgrade
from gateway.ledger.pricing import Pricing
from gateway.ledger.record import RequestRecord
from gateway.ledger.rows import Row, build_row, decode_row, encode_row, insert_rows
from gateway.ledger.settings import LedgerSettings
from gateway.ledger.spool import Spool

log = logging.getLogger("tiergate.ledger")

_DROP_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Counters since start, for metrics. Every accepted row ends up written, spooled, rejected or dropped."""

    accepted: int
    """Rows `record()` took."""
    queued: int
    """Rows waiting in memory now."""
    written: int
    """Rows inserted into the database (replays of rows already there are not counted again)."""
    spooled: int
    """Rows that went to the on-disk spool because the database was unreachable."""
    spool_pending: int
    """Rows in the spool now, waiting for the database."""
    dropped: int
    """Rows lost: the queue was full, the spool was full, or the ledger was closed."""
    rejected: int
    """Rows the database refused as invalid; kept in the spool's `rejected/` folder."""
    batches: int
    """Inserts that succeeded."""


class Ledger:
    """Records requests and answers the feedback and report functions' queries. One per process."""

    def __init__(self, settings: LedgerSettings, cache_dir: Path, *, pricing: Pricing | None = None) -> None:
        self.settings = settings
        self.database_url = settings.resolved_database_url(cache_dir)
        self._pricing = pricing
        self._engine: Engine | None = None
        self._spool = Spool(settings.resolved_spool_dir(cache_dir), settings.spool_max_bytes)
        self._queue: deque[RequestRecord] = deque()
        self._max_rows = settings.queue_max_rows
        self._batch_rows = settings.batch_max_rows
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._flush_waiters: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopping = False
        self._schema_ready = not settings.apply_migrations
        self._retry_at = 0.0
        """While the database is unreachable: the monotonic time before which it is not tried again."""
        self._accepted = self._dropped_full = self._dropped_later = 0
        self._written = self._spooled = self._rejected = self._batches = 0
        self._drops_unlogged = 0
        self._last_drop_log = float("-inf")

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load prices (imports litellm: seconds, once), open the database, apply migrations, start the writer.

        An unreachable database does not stop start-up: rows go to the spool until it answers. Raises
        `gateway.settings.ConfigError` when the default frontier model has no price."""
        await asyncio.to_thread(self._open)
        self._thread = threading.Thread(target=self._run, name="tiergate-ledger", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Write everything accepted (to the database, or to the spool if it is down) and stop the writer."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.to_thread(thread.join)
            self._thread = None
        if self._engine is not None:
            await asyncio.to_thread(self._drain)  # anything recorded from another thread while we were stopping
            self._engine.dispose()

    async def flush(self) -> None:
        """Return once every row recorded before the call is in the database or the spool."""
        if self._thread is None:
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        def wake_caller() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(resolve)

        with self._lock:
            self._flush_waiters.append(wake_caller)
        self._wake.set()
        await done

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the ledger is not started")
        return self._engine

    @property
    def pricing(self) -> Pricing:
        if self._pricing is None:
            raise RuntimeError("the ledger is not started")
        return self._pricing

    def stats(self) -> LedgerStats:
        return LedgerStats(
            accepted=self._accepted,
            queued=len(self._queue),
            written=self._written,
            spooled=self._spooled,
            spool_pending=self._spool.pending_rows,
            dropped=self._dropped_full + self._dropped_later,
            rejected=self._rejected,
            batches=self._batches,
        )

    # --- the request path -----------------------------------------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        """Queue one request's row. Never blocks and never raises; a full queue drops the row (counted, logged)."""
        try:
            queue = self._queue
            if self._closed or len(queue) >= self._max_rows:
                self._dropped_full += 1
                self._note_drop()
                return
            queue.append(record)
            self._accepted += 1
            if len(queue) >= self._batch_rows and not self._wake.is_set():
                self._wake.set()
        except Exception:  # a metrics path must not fail a request; the row is counted as dropped
            self._dropped_full += 1
            log.exception("ledger: could not queue a row")

    def _note_drop(self) -> None:
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            why = "the ledger is closed" if self._closed else f"the queue holds {self._max_rows} rows"
            log.warning("ledger: dropped %d row(s): %s", self._drops_unlogged, why)
            self._drops_unlogged = 0
            self._last_drop_log = now

    # --- the writer thread ------------------------------------------------------------------------------------------

    def _open(self) -> None:
        if self._pricing is None:
            self._pricing = Pricing.from_settings(self.settings)
        model = self.settings.default_frontier_model
        if self._pricing.token_price(model) is None:
            from gateway.settings import ConfigError

            raise ConfigError(
                f"ledger.default_frontier_model: no price for {model!r} in litellm's price map; add it to ledger.prices"
            )
        self._engine = make_engine(self.database_url, timeout_s=self.settings.db_timeout_s)
        self._spool.open()
        if self._spool.pending_rows:
            log.info("ledger: %d row(s) from an earlier run in %s", self._spool.pending_rows, self._spool.directory)
        try:
            self._ensure_schema()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("ledger: database unreachable at start-up (%s); rows will wait in the spool", exc)
            self._retry_at = time.monotonic() + self.settings.retry_interval_ms / 1000

    def _run(self) -> None:
        """Write full batches as soon as they fill, and whatever waits once the interval is up."""
        interval = self.settings.batch_interval_ms / 1000
        deadline = time.monotonic() + interval
        while True:
            self._wake.wait(max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            stopping = self._stopping
            with self._lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            due = stopping or bool(waiters) or time.monotonic() >= deadline
            try:
                self._drain(everything=due)
                if due:
                    deadline = time.monotonic() + interval
                    if self._spool.pending_rows and time.monotonic() >= self._retry_at:
                        self._replay()
            except Exception:  # a bug here must not stop the writer for good
                log.exception("ledger: writer failed")
            for wake_caller in waiters:
                wake_caller()
            if stopping and not self._queue:
                return

    def _drain(self, *, everything: bool = True) -> None:
        queue = self._queue
        pricing = self.pricing
        while len(queue) >= self._batch_rows or (everything and queue):
            batch: list[Row] = []
            while queue and len(batch) < self._batch_rows:
                record = queue.popleft()
                try:
                    batch.append(build_row(record, pricing))
                except Exception:
                    self._rejected += 1
                    log.exception("ledger: could not build the row of request %s", record.request_id)
            self._write(batch)

    def _write(self, rows: list[Row]) -> None:
        if not rows:
            return
        if time.monotonic() < self._retry_at:
            self._to_spool(rows)
            return
        unwritten = self._insert_or_sort(rows)
        if unwritten:
            self._to_spool(unwritten)

    def _insert_or_sort(self, rows: Sequence[Row]) -> list[Row]:
        """Insert the batch; if the database refuses it as invalid, insert row by row and set the bad ones aside.
        Returns the rows left unwritten because the database is unreachable."""
        try:
            self._insert(rows)
            return []
        except Exception as exc:
            if is_transient(exc):
                self._went_down(exc)
                return list(rows)
        for index, row in enumerate(rows):
            try:
                self._insert([row])
            except Exception as exc:
                if is_transient(exc):
                    self._went_down(exc)
                    return list(rows[index:])
                self._rejected += 1
                log.error("ledger: the database refused the row of request %s: %s", row.get("id"), exc)
                self._set_aside([row])
        return []

    def _insert(self, rows: Sequence[Row]) -> None:
        self._ensure_schema()
        with self.engine.begin() as connection:
            inserted = insert_rows(connection, rows)
        self._written += inserted  # counted once committed
        self._batches += 1
        if self._retry_at != 0.0:
            log.info("ledger: the database answers again; %d spooled row(s) to write", self._spool.pending_rows)
            self._retry_at = 0.0

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            upgrade(self.database_url, engine=self.engine)
            self._schema_ready = True

    def _went_down(self, exc: BaseException) -> None:
        if self._retry_at == 0.0:
            log.warning("ledger: database unreachable, rows go to the spool at %s: %s", self._spool.directory, exc)
        self._retry_at = time.monotonic() + self.settings.retry_interval_ms / 1000

    def _to_spool(self, rows: Sequence[Row]) -> None:
        lines: list[bytes] = []
        for row in rows:
            try:
                lines.append(encode_row(row))
            except Exception:
                self._rejected += 1
                log.exception("ledger: could not encode the row of request %s", row.get("id"))
        try:
            stored = self._spool.append(lines)
        except OSError:
            log.exception("ledger: the spool at %s cannot be written", self._spool.directory)
            stored = False
        if stored:
            self._spooled += len(lines)
        else:
            self._dropped_later += len(lines)
            log.error("ledger: dropped %d row(s): the database is unreachable and the spool is full", len(lines))

    def _set_aside(self, rows: Sequence[Row]) -> None:
        try:
            self._spool.set_aside(encode_row(row) for row in rows)
        except Exception:
            log.exception("ledger: could not set aside %d refused row(s)", len(rows))

    def _replay(self) -> None:
        """Write the spool's batches, oldest first; stop at the first sign that the database is still away."""
        replayed = 0
        for path in self._spool.files():
            lines = self._spool.read(path)
            rows: list[Row] = []
            for line in lines:
                try:
                    rows.append(decode_row(line))
                except Exception:
                    self._rejected += 1
                    log.exception("ledger: a spooled row in %s cannot be read; set aside", path.name)
                    self._spool.set_aside([line])
            if self._insert_or_sort(rows):
                return  # still unreachable; the file stays, and rows it already wrote are skipped next time
            self._spool.remove(path, lines)
            replayed += len(lines)
        if replayed:
            log.info("ledger: %d spooled row(s) written", replayed)
