"""RouteLLM's metrics against cases worked out by hand.

The hand case: 12 prompts scored 0..11, the strong model right on all, the weak model wrong on 4 (weak quality
8/12). The qcut edges sit at positions 1.1 * i of the sorted scores, between two scores, so threshold i sends the
prompts scoring above it to the strong model: shares (in twelfths) 12, 10, 9, 8, 7, 6, 5, 4, 3, 2, and at the last
edge ("> 11") none.
"""

from __future__ import annotations

import numpy as np
import pytest

from router.evaluation.metrics import (
    CurvePoint,
    evaluate_scores,
    mean_curve,
    metrics_from_curve,
    pgr,
    qcut_thresholds,
    routing_curve,
)

STRONG = np.ones(12)
SHARES = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
"""The curve's strong shares in twelfths, in order."""


def _weak(failing: list[int]) -> np.ndarray:
    weak = np.ones(12)
    weak[failing] = 0
    return weak


def test_thresholds_are_pandas_qcut_edges() -> None:
    # pandas.qcut([1, 2, 3, 4], 2, retbins=True)[1] is [1.0, 2.5, 4.0].
    assert qcut_thresholds([4, 1, 3, 2], bins=2).tolist() == [1.0, 2.5, 4.0]
    assert qcut_thresholds(np.arange(12.0)) == pytest.approx([1.1 * i for i in range(11)])


def test_perfect_router_matches_hand_computation() -> None:
    scores = np.arange(12.0)
    metrics = evaluate_scores(scores, _weak([8, 9, 10, 11]), STRONG)  # the failures score highest
    assert [round(p.strong_share * 12) for p in metrics.points] == SHARES
    assert [round(p.quality * 12) for p in metrics.points] == [8, 10, 11, 12, 12, 12, 12, 12, 12, 12, 12]
    # Trapezoids in units of 1/144: (8+10)/2*2 + 10.5 + 11.5 + 12*8 = 136; weak area 96, strong 144.
    assert metrics.auc == pytest.approx(136 / 144)
    assert metrics.apgr == pytest.approx((136 - 96) / (144 - 96))
    # 50% of the gap is quality 10/12, reached at share 2/12; 80% is 11.2/12, between shares 3/12 and 4/12.
    assert metrics.cpt50 == pytest.approx(2 / 12)
    assert metrics.cpt80 == pytest.approx(3.2 / 12)


def test_inverted_router_mirrors_the_perfect_one() -> None:
    scores = np.arange(12.0)
    metrics = evaluate_scores(scores, _weak([0, 1, 2, 3]), STRONG)  # the failures score lowest
    assert [round(p.quality * 12) for p in metrics.points] == [8, 8, 8, 8, 8, 8, 8, 8, 9, 10, 12]
    # 8*8 + 8.5 + 9.5 + (10+12)/2*2 = 104 (units of 1/144).
    assert metrics.apgr == pytest.approx((104 - 96) / 48)
    assert metrics.cpt50 == pytest.approx(10 / 12)
    assert metrics.cpt80 == pytest.approx(11.2 / 12)
    perfect = evaluate_scores(scores, _weak([8, 9, 10, 11]), STRONG)
    assert metrics.apgr + perfect.apgr == pytest.approx(1.0)


def test_router_without_an_opinion_scores_one_half() -> None:
    """All scores tied: every threshold but the last sends everything to the strong model, the last nothing; the
    curve is the straight line of a coin-flip router."""
    metrics = evaluate_scores(np.zeros(12), _weak([0, 1, 2, 3]), STRONG)
    assert {(p.strong_share, p.quality) for p in metrics.points} == {(0.0, 8 / 12), (1.0, 1.0)}
    assert metrics.apgr == pytest.approx(0.5)
    assert metrics.cpt50 == pytest.approx(0.5)


def test_random_router_lands_near_one_half() -> None:
    rng = np.random.default_rng(7)
    weak = (rng.random(20_000) < 0.68).astype(float)
    strong = np.maximum(weak, rng.random(20_000) < 0.5)
    metrics = evaluate_scores(rng.random(20_000), weak, strong)
    assert metrics.apgr == pytest.approx(0.5, abs=0.02)
    assert metrics.cpt50 == pytest.approx(0.5, abs=0.05)
    assert metrics.cpt80 == pytest.approx(0.8, abs=0.05)


def test_curve_is_sorted_by_share_and_spans_all_to_none() -> None:
    rng = np.random.default_rng(1)
    curve = routing_curve(rng.random(500), rng.random(500) < 0.5, rng.random(500) < 0.8)
    shares = [point.strong_share for point in curve]
    assert shares == sorted(shares)
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert len(curve) == 11


def test_pgr_and_a_gapless_pair() -> None:
    assert pgr(0.75, 0.5, 1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no gap"):
        evaluate_scores([0.1, 0.2], [1.0, 0.0], [0.0, 1.0])


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        routing_curve([0.1, 0.2, 0.3], [1, 0], [1, 1])


def test_mean_curve_averages_point_by_point() -> None:
    first = (CurvePoint(1.0, 0.0, 0.5), CurvePoint(0.0, 1.0, 0.9))
    second = (CurvePoint(3.0, 0.0, 0.5), CurvePoint(0.0, 1.0, 0.7))
    mean = mean_curve([first, second])
    assert mean == (CurvePoint(2.0, 0.0, 0.5), CurvePoint(0.0, 1.0, 0.8))
    assert metrics_from_curve(mean, 0.5, 0.8).apgr == pytest.approx(0.5)
