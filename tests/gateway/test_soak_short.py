"""A short soak through the real server: a few hundred mixed requests (frontier answers, escalations, streams,
upstream failures, cut streams, malformed bodies; no local generation) with the gateway's RSS sampled.

The driver is bench/soak.py's, which runs thousands for BENCHMARKS.md. Memory that grows with the request count is
the failure this catches: after the warm-up, RSS may move by at most GROWTH_BOUND_MB.
"""

from __future__ import annotations

from pathlib import Path

from support.gateway_server import LOCAL_TEST_MODEL

from bench.soak import NO_MODEL_MIX, run_soak

REQUESTS = 600
GROWTH_BOUND_MB = 30.0


def test_memory_levels_off_under_mixed_load(tmp_path: Path) -> None:
    result = run_soak(
        REQUESTS,
        NO_MODEL_MIX,
        concurrency=8,
        warmup_share=0.25,
        sample_every_s=0.25,
        local_model=LOCAL_TEST_MODEL,
        workdir=tmp_path,
    )
    assert sum(result.by_kind.values()) == REQUESTS
    assert not result.unexpected, f"requests with an unexpected outcome: {dict(result.unexpected)}"
    assert len(result.samples) >= 4
    assert result.growth_after_warmup_mb < GROWTH_BOUND_MB, (
        f"RSS grew {result.growth_after_warmup_mb:.1f} MB after the warm-up "
        f"({result.rss_after_warmup_mb:.1f} -> {result.rss_end_mb:.1f} MB)"
    )
