"""Helpers for the ledger's tests (a module with a distinctive name, importable from the test files)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import URL

from gateway.ledger.database import make_engine
from gateway.ledger.models import RequestRow
from gateway.ledger.record import RequestRecord

PG_HOST, PG_PORT, PG_DATABASE = "127.0.0.1", 5432, "test"


def frontier_record(request_id: str, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "requested_model": "auto",
        "tier": "frontier",
        "model": "gpt-4.1",
        "tokens_in": 1200,
        "tokens_out": 300,
        "latency_ms": 850.0,
    }
    values.update(fields)
    return RequestRecord(request_id=request_id, **values)


def local_record(request_id: str, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "requested_model": "auto",
        "tier": "local",
        "model": "gemma3-270m",
        "tokens_in": 900,
        "tokens_out": 120,
        "compute_ms": 2100.0,
        "latency_ms": 2150.0,
    }
    values.update(fields)
    return RequestRecord(request_id=request_id, **values)


def postgres_url(user: str, schema: str, *, host: str = PG_HOST, port: int = PG_PORT) -> str:
    url = URL.create(
        "postgresql+psycopg",
        username=user,
        host=host,
        port=port,
        database=PG_DATABASE,
        query={"options": f"-csearch_path={schema}"},
    )
    return url.render_as_string(hide_password=False)


def count_rows(database_url: str, table: Any = RequestRow) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class TcpProxy:
    """Forwards a loopback port to another; `stop()` refuses new connections and cuts the open ones, as a
    database server going away does; `start()` brings it back on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept(); close() alone does not
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):  # either side went away: end both
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
