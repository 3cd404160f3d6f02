"""Cross-fitting folds: which model of the learned scorer never saw a given prompt.

A prompt's fold is a pure function of its text and a seed, so the evaluation recomputes it from the artifact's
metadata without a stored list of prompts, the folds do not depend on file order, and a prompt that appears twice
lands in one fold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

DEFAULT_SEED = 0
DEFAULT_FOLDS = 10


def fold_of(prompt: str, seed: int = DEFAULT_SEED, folds: int = DEFAULT_FOLDS) -> int:
    digest = hashlib.blake2b(f"{seed}\0{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % folds


def fold_indices(prompts: Iterable[str], seed: int = DEFAULT_SEED, folds: int = DEFAULT_FOLDS) -> NDArray[np.int64]:
    return np.array([fold_of(prompt, seed, folds) for prompt in prompts], dtype=np.int64)
