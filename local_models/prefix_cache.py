"""Keeps each session's KV cache between its steps, so that a step evaluates only the tokens its prefix lacks.

llama-cpp-python's `Llama.generate` already reuses the longest common prefix with the tokens in the context, so
consecutive steps of one session are cheap. What is lost is a session's context once another session's request ran
in between: its next step (AgentFlow's planner: 3-6k tokens, a stable prefix and a growing tail) would pay for the
whole prompt again. This module saves the displaced context's KV state in host memory, keyed by session, in an LRU
bounded by bytes, and restores the saved state whose tokens share the longest prefix with a new prompt.

Why not the library's own tools (read in llama-cpp-python 0.3.36 and measured here on Gemma 3 270M, 1.5-2k tokens):
- `Llama.set_cache(LlamaRAMCache)` is consulted only inside `create_completion`; we drive `Llama.generate` ourselves
  (see generation.py), so it would never be looked up.
- `Llama.save_state()` also copies `scores`, an n_batch x vocabulary float array (512 x 262k = 512 MiB for Gemma)
  that we never read (logits_all is off) and that its `llama_state_size` does not count; with the whole-context
  state (38 MB) it took 1.3 s to save and 2.6 s to load. The per-sequence state (`llama_state_seq_get_data`, the
  KV cells of sequence 0, which is all llama-cpp-python uses) was 12.5 MB and took 15 ms to save and 10 ms to load.
Entries are keyed by session (one per session: a session's newer state replaces its older one, where a token-keyed
cache would keep every step's state), but looked up by tokens across all sessions, so that sessions sharing a long
system prompt can also start from one another's state.

On models with sliding-window attention (the embedded Gemma 3) a saved state is resumed only at its end (see
`PrefixCache._exact`): a chat that grows by appending turns is restored, a prompt rebuilt with a changed tail is not.

Everything here runs on the model's worker thread, like every other use of the `Llama` object.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import Llama

log = logging.getLogger("tiergate.local_models")

_SEQUENCE = 0
"""llama-cpp-python evaluates every prompt as sequence 0."""

MIN_RESTORE_GAIN = 16
"""Restore a saved state only when it spares at least this many tokens over what the context already holds: a
restore copies the whole saved state (on Gemma 3 270M about 8 MB for its windowed layers plus 3 KB per token: about
10 ms), which costs about as much as evaluating a few tokens."""


@dataclass(slots=True)
class _Saved:
    tokens: npt.NDArray[np.intc]
    """The tokens whose KV cells the state holds, in order."""
    state: ctypes.Array[ctypes.c_uint8]
    first_position: int
    """The earliest position the restored state will hold in every layer (see `PrefixCache._exact`)."""

    @property
    def nbytes(self) -> int:
        return ctypes.sizeof(self.state) + self.tokens.nbytes


def common_prefix(a: npt.NDArray[np.intc], b: npt.NDArray[np.intc]) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class PrefixCache:
    """Per-session KV states of one `Llama`, at most `capacity_bytes` in all (0: none kept, only the live context)."""

    def __init__(self, llama: Llama, capacity_bytes: int) -> None:
        self._llama = llama
        self.capacity_bytes = capacity_bytes
        self._saved: OrderedDict[str, _Saved] = OrderedDict()
        self._bytes = 0
        self._window: int = llama_cpp.llama_model_n_swa(llama.model)
        """Sliding-window attention span of the model, 0 without (see `_exact`)."""
        self._live_session: str | None = None
        """The session whose tokens the context holds now (None: a request without a session, or nothing yet)."""

    @property
    def nbytes(self) -> int:
        return self._bytes

    def prepare(self, session_id: str | None, prompt_tokens: Sequence[int]) -> int:
        """Before a generation of `prompt_tokens`: make the context hold the longest prefix available.

        Returns how many prompt tokens will not be evaluated again (`Llama.generate` keeps the common prefix)."""
        prompt = np.asarray(prompt_tokens, dtype=np.intc)
        # At least one prompt token is always evaluated again, as `Llama.generate` does, for fresh logits to sample.
        limit = len(prompt) - 1
        live_tokens = self._llama.input_ids[: self._llama.n_tokens]
        live = min(common_prefix(live_tokens, prompt), limit)
        best, keep = self._best_saved(prompt, limit)
        if self._live_session is not None and self._live_session != session_id and live < len(live_tokens):
            # This request overwrites that session's context: keep it first. `best` is held here, so saving may
            # evict it from the cache without losing this restore.
            self._save(self._live_session)
        self._live_session = session_id
        if best is not None and keep >= live + MIN_RESTORE_GAIN:
            return self._restore(best, keep)
        if not self._exact(self._first_position(), live):
            self._llama.n_tokens = 0  # `Llama.generate` then resets the context and evaluates the prompt in full
            return 0
        return max(0, live)

    def clear(self) -> None:
        self._saved.clear()
        self._bytes = 0
        self._live_session = None

    def _best_saved(self, prompt: npt.NDArray[np.intc], limit: int) -> tuple[_Saved | None, int]:
        """The saved state that restores exactly the most tokens of `prompt`, marked most recently used, and how many
        tokens to keep from it."""
        best: str | None = None
        longest = 0
        for session, saved in self._saved.items():
            keep = min(common_prefix(saved.tokens, prompt), limit)
            if keep > longest and self._exact(saved.first_position, keep):
                best, longest = session, keep
        if best is None:
            return None, 0
        self._saved.move_to_end(best)
        return self._saved[best], longest

    def _exact(self, first_position: int, keep: int) -> bool:
        """Whether continuing after `keep` tokens of a context whose windowed layers start at `first_position` gives
        what evaluating them all would.

        With sliding-window attention (Gemma 3: 512 tokens), llama.cpp's sequence state holds only the last window
        of the windowed layers' cells, and so does a live context after a restore. Cut back by more than that
        allows, it lacks cells the next tokens attend to: seen here, such a cut changed a later greedy answer.
        The condition is llama-server's own (it re-evaluates the prompt when `n_past < pos_min + n_swa`)."""
        return self._window == 0 or keep == 0 or first_position == 0 or keep >= first_position + self._window

    def _first_position(self) -> int:
        """The earliest position the live context holds in every layer (0 when empty)."""
        memory = llama_cpp.llama_get_memory(self._llama.ctx)
        return max(0, int(llama_cpp.llama_memory_seq_pos_min(memory, _SEQUENCE)))

    def _save(self, session_id: str) -> None:
        if self.capacity_bytes <= 0 or self._llama.n_tokens == 0:
            return
        ctx = self._llama.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, _SEQUENCE)
        if size > self.capacity_bytes:
            return
        state = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, state, size, _SEQUENCE)
        if written != size:
            log.warning("prefix cache: saving session state wrote %d of %d bytes; not kept", written, size)
            return
        self._drop(session_id)
        n_tokens = self._llama.n_tokens
        # The state keeps only the last window of the windowed layers (see `_exact`).
        first = max(self._first_position(), n_tokens - self._window) if self._window else 0
        saved = _Saved(np.array(self._llama.input_ids[:n_tokens], dtype=np.intc), state, first)
        self._saved[session_id] = saved
        self._bytes += saved.nbytes
        while self._bytes > self.capacity_bytes:
            self._drop(next(iter(self._saved)))

    def _drop(self, session_id: str) -> None:
        old = self._saved.pop(session_id, None)
        if old is not None:
            self._bytes -= old.nbytes

    def _restore(self, saved: _Saved, keep: int) -> int:
        """Load `saved` and keep its first `keep` tokens; 0 when llama.cpp refused the state."""
        llama = self._llama
        size = ctypes.sizeof(saved.state)
        if llama_cpp.llama_state_seq_set_data(llama.ctx, saved.state, size, _SEQUENCE) != size:
            log.warning("prefix cache: llama.cpp refused a saved session state; evaluating in full")
            llama.n_tokens = 0  # nothing reusable: `Llama.generate` then resets the context and evaluates in full
            return 0
        if self._first_position() > saved.first_position:
            log.warning("prefix cache: a restored state holds less than expected; evaluating in full")
            llama.n_tokens = 0
            return 0
        # `Llama.generate` compares the prompt with input_ids[:n_tokens] and removes the KV cells past the common
        # prefix itself; these two fields are what `Llama.load_state` sets too.
        llama.input_ids[:keep] = saved.tokens[:keep]
        llama.n_tokens = keep
        return keep
