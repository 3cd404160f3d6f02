"""A bounded on-disk spool: batches that could not reach the database wait here, one file per batch, oldest first.

Each file is written whole under a temporary name, synced, then renamed, so a crash leaves either the whole batch
or none of it. Files left by an earlier run are picked up at start. Rows the database refuses as bad (not as
unreachable) are set aside under `rejected/`, where they stay for a person to look at.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger("tiergate.ledger")

_SUFFIX = ".jsonl"


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._sequence = itertools.count()
        self._bytes = 0
        self._rows = 0

    def open(self) -> None:
        """Create the directory and count what an earlier run left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._bytes = self._rows = 0
        for path in self.files():
            data = path.read_bytes()
            self._bytes += len(data)
            self._rows += data.count(b"\n")

    @property
    def pending_rows(self) -> int:
        return self._rows

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def files(self) -> list[Path]:
        """Waiting batches, oldest first (names start with the time they were written)."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == _SUFFIX and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def append(self, lines: Sequence[bytes]) -> bool:
        """Write one batch durably. False (nothing written) when it would pass the size bound."""
        data = b"".join(line + b"\n" for line in lines)
        if self._bytes + len(data) > self.max_bytes:
            return False
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence):08d}{_SUFFIX}"
        _write_durably(self.directory / name, data)
        self._bytes += len(data)
        self._rows += len(lines)
        return True

    def read(self, path: Path) -> list[bytes]:
        try:
            return path.read_bytes().splitlines()
        except FileNotFoundError:  # another replica sharing the directory replayed it first
            return []

    def remove(self, path: Path, lines: Sequence[bytes]) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._bytes -= sum(len(line) + 1 for line in lines)
        self._rows -= len(lines)

    def set_aside(self, lines: Iterable[bytes]) -> None:
        rejected = self.directory / "rejected"
        rejected.mkdir(parents=True, exist_ok=True)
        data = b"".join(line + b"\n" for line in lines)
        if data:
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence):08d}{_SUFFIX}"
            _write_durably(rejected / name, data)


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name("." + path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
