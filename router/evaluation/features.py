"""Prompt features for the learned scorer: hashed words and word pairs plus a few numeric facts about the text.

The same code runs at training time and on the request path, so it depends on nothing but the standard library
and numpy (scikit-learn is a training-only dependency). Words and word pairs are hashed into a fixed number of
buckets (the "hashing trick") so the artifact needs no vocabulary; `zlib.crc32` is the hash because it is stable
across processes (Python's `hash` of a str is salted) and runs in C. scikit-learn's `HashingVectorizer` does the
same, but would tie the request path to scikit-learn.

Multiple-choice questions and open questions fail for different reasons (a long MMLU passage is not a long GSM8K
word problem), so every word also counts a second time in a bucket of its own for the prompt's kind, and the
numeric facts get a copy that only multiple-choice prompts turn on: one model learns what is shared and what
differs by kind (Daumé III's "frustratingly easy" domain adaptation, with the kind read from the prompt itself).
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

FEATURES_VERSION: Final = 1
"""Bumped whenever extraction changes what a prompt maps to; an artifact trained on another version is refused."""
HASH_BITS: Final = 16
MAX_TOKENS: Final = 768
"""Only the first tokens are hashed."""
WINDOW_CHARS: Final = 3_000
"""Features read at most this much of the prompt's head (its full length aside), so the cost of scoring stays
bounded on a pasted document (all but 14 of the 15,416 RouteLLM benchmark prompts are shorter)."""
KIND_SALTS: Final = {"choices": 0x2F6B5, "open": 0x1A3C9}
"""XOR-ed into a word's bucket to give it a second bucket for the prompt's kind."""

# The text is lower-cased and every digit written as 0 first, in C (str.translate), so that a number becomes its
# shape ("1,250" and "3,999" are both "0,000") without a Python step per token.
_FLATTEN_DIGITS = str.maketrans("123456789", "000000000")
_TOKEN = re.compile(r"[a-z]+|0+(?:[.,]0+)*|[^\sa-z0]")
_DIGIT_RUN = re.compile(r"0+")
_PAIR_MIX = 0x9E3779B1
"""Multiplier that combines two word hashes into the hash of the pair (Knuth's multiplicative constant)."""

FACT_NAMES: Final = (
    "log_chars",
    "log_spaces",
    "log_lines",
    "log_sentence_ends",
    "log_digit_runs",
    "log_longest_digit_run",
    "decimals",
    "percents",
    "money",
    "questions",
    "choices",
    "code",
    "math_symbols",
)
NUMERIC_NAMES: Final = (*FACT_NAMES, *(f"{name}*choices" for name in FACT_NAMES), "is_choices")
"""The dense features in order: the facts, the facts again for multiple-choice prompts only, and the kind."""


@dataclass(frozen=True, slots=True)
class PromptFeatures:
    buckets: NDArray[np.int64]
    """Hash buckets of the prompt's distinct words and word pairs, then the same again salted by kind."""
    bucket_value: float
    """The value of each bucket entry: 1 / sqrt(distinct words and pairs), so long prompts do not outweigh short."""
    numeric: NDArray[np.float64]
    """Raw numeric features, in `NUMERIC_NAMES` order."""


def _flatten(window: str) -> str:
    return window.lower().translate(_FLATTEN_DIGITS)


def tokens(text: str) -> list[str]:
    """The hashed tokens: lower-cased words, numbers by shape (every digit 0) and single symbols."""
    return _TOKEN.findall(_flatten(text[:WINDOW_CHARS]))[:MAX_TOKENS]


def hashed_buckets(words: list[str], bits: int = HASH_BITS) -> NDArray[np.int64]:
    """Distinct buckets of the words and adjacent word pairs.

    Words are hashed with crc32 one by one (`map` keeps the loop in C); a pair's hash is computed from its two
    word hashes with numpy (multiply, xor, then murmur3's finaliser to spread the bits), not by hashing its text.
    """
    if not words:
        return np.empty(0, dtype=np.int64)
    single = np.fromiter(map(zlib.crc32, map(str.encode, words)), dtype=np.uint64, count=len(words))
    pair = ((single[:-1] * _PAIR_MIX) ^ single[1:]) & 0xFFFFFFFF
    pair ^= pair >> 16
    pair = (pair * 0x85EBCA6B) & 0xFFFFFFFF
    pair ^= pair >> 13
    return np.unique(np.concatenate([single, pair]) & ((1 << bits) - 1)).astype(np.int64)


def facts(text: str) -> NDArray[np.float64]:
    """The numeric facts, in `FACT_NAMES` order."""
    window = text[:WINDOW_CHARS]
    return _facts(len(text), window, _flatten(window))


def _facts(length: int, window: str, flat: str) -> NDArray[np.float64]:
    # Counts of substrings (str.count runs in C) stand in for regex matches wherever that is close enough.
    digit_runs = _DIGIT_RUN.findall(flat)
    return np.array(
        [
            math.log1p(length),
            math.log1p(window.count(" ") + window.count("\n")),
            math.log1p(window.count("\n")),
            math.log1p(sum(window.count(end) for end in (". ", "? ", "! ", ".\n", "?\n"))),
            math.log1p(len(digit_runs)),
            math.log1p(max(map(len, digit_runs), default=0)),
            float(flat.count("0.0")),
            float(window.count("%")),
            float(window.count("$")),
            float(window.count("?")),
            float(sum(window.count(f"\n{letter}{mark} ") for letter in "ABCD" for mark in ".)")),
            float(window.count("```") + window.count("def ") + window.count("{")),
            float(sum(window.count(symbol) for symbol in "=^+*/<>")),
        ]
    )


def extract(text: str, bits: int = HASH_BITS) -> PromptFeatures:
    window = text[:WINDOW_CHARS]
    flat = _flatten(window)
    found = _facts(len(text), window, flat)
    is_choices = found[FACT_NAMES.index("choices")] >= 2
    general = hashed_buckets(_TOKEN.findall(flat)[:MAX_TOKENS], bits)
    salt = KIND_SALTS["choices" if is_choices else "open"] & ((1 << bits) - 1)
    return PromptFeatures(
        buckets=np.concatenate([general, general ^ salt]),
        bucket_value=1.0 / math.sqrt(max(len(general), 1)),
        numeric=np.concatenate([found, found * is_choices, [float(is_choices)]]),
    )
