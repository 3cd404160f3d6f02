"""RouteLLM's router-quality metrics, computed as `routellm/evals` in lm-sys/RouteLLM computes them.

A router gives every prompt a score: the higher, the more the prompt needs the strong model. Ten score quantiles
and their ends are the thresholds; at each, the prompts scoring at or above it go to the strong model. That traces
a curve of strong-call share against quality, summarised by:

- PGR (performance gap recovered) at a point: (quality - weak) / (strong - weak).
- APGR: the area under the curve, normalised the same way (a random router gets about 0.5).
- CPT(x%): the strong-call share at which the curve first recovers x% of the gap (`numpy.interp` over the points).

Quality is the mean over prompts of the chosen model's result (1/0 for correctness, or a judge score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]

BINS = 10
"""RouteLLM's `--num-results`: ten equal-count bins, so eleven thresholds."""


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    strong_share: float
    """Share of prompts sent to the strong model, 0..1."""
    quality: float


@dataclass(frozen=True, slots=True)
class RouterMetrics:
    points: tuple[CurvePoint, ...]
    """The curve, sorted by strong share."""
    weak_quality: float
    strong_quality: float
    auc: float
    apgr: float
    cpt50: float
    """Strong-call share (0..1) that recovers 50% of the quality gap."""
    cpt80: float

    def pgr(self, point: CurvePoint) -> float:
        return pgr(point.quality, self.weak_quality, self.strong_quality)


def qcut_thresholds(scores: ArrayLike, bins: int = BINS) -> Floats:
    """The bin edges `pandas.qcut(scores, bins, retbins=True)` returns, computed with numpy.

    pandas is not a dependency; qcut's edges are `Series.quantile` at `linspace(0, 1, bins + 1)`, whose default
    linear interpolation is numpy's default `quantile` method, so these are the same numbers. Where qcut would
    raise on duplicate edges (a scorer with many ties), we keep them: a repeated edge repeats a curve point, which
    adds nothing to the area.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no scores to cut")
    return np.quantile(values, np.linspace(0.0, 1.0, bins + 1))


def routing_curve(scores: ArrayLike, weak: ArrayLike, strong: ArrayLike, bins: int = BINS) -> tuple[CurvePoint, ...]:
    """Strong share and quality at each qcut threshold, sorted by strong share.

    At every threshold but the last a prompt goes to the strong model when its score is >= the threshold; at the
    last (the maximum score) when it is > it, so the curve always reaches a share of 0 (RouteLLM does the same).
    """
    score_values = np.asarray(scores, dtype=np.float64)
    weak_values = np.asarray(weak, dtype=np.float64)
    strong_values = np.asarray(strong, dtype=np.float64)
    if not score_values.shape == weak_values.shape == strong_values.shape or score_values.ndim != 1:
        raise ValueError("scores, weak and strong must be 1-d arrays of the same length")
    thresholds = qcut_thresholds(score_values, bins)
    points = []
    for index, threshold in enumerate(thresholds):
        last = index == len(thresholds) - 1
        to_strong = score_values > threshold if last else score_values >= threshold
        quality = float(np.where(to_strong, strong_values, weak_values).mean())
        points.append(CurvePoint(float(threshold), float(to_strong.mean()), quality))
    # A stable sort keeps the order of equal shares, which are equal points: thresholds select nested sets.
    return tuple(sorted(points, key=lambda point: point.strong_share))


def pgr(quality: float, weak_quality: float, strong_quality: float) -> float:
    """Performance gap recovered at one point of the curve."""
    return (quality - weak_quality) / _gap(weak_quality, strong_quality)


def metrics_from_curve(points: Sequence[CurvePoint], weak_quality: float, strong_quality: float) -> RouterMetrics:
    """AUC, APGR and CPT(50%), CPT(80%) of a curve (points sorted by strong share)."""
    gap = _gap(weak_quality, strong_quality)
    shares = np.array([point.strong_share for point in points])
    qualities = np.array([point.quality for point in points])
    auc = float(np.trapezoid(qualities, shares))
    span = float(shares[-1] - shares[0])
    # Each model's area is its constant quality over the same span of shares.
    apgr = (auc - weak_quality * span) / (strong_quality * span - weak_quality * span)

    def cpt(fraction: float) -> float:
        # As RouteLLM does: qualities as the x-grid, in share order. np.interp assumes them increasing; a curve
        # that dips makes this the interpolation over an unsorted grid, exactly as theirs is.
        return float(np.interp(weak_quality + fraction * gap, qualities, shares))

    return RouterMetrics(
        points=tuple(points),
        weak_quality=weak_quality,
        strong_quality=strong_quality,
        auc=auc,
        apgr=float(apgr),
        cpt50=cpt(0.5),
        cpt80=cpt(0.8),
    )


def evaluate_scores(scores: ArrayLike, weak: ArrayLike, strong: ArrayLike, bins: int = BINS) -> RouterMetrics:
    """The whole evaluation of one router's scores against per-prompt results of the two models."""
    weak_values = np.asarray(weak, dtype=np.float64)
    strong_values = np.asarray(strong, dtype=np.float64)
    curve = routing_curve(scores, weak_values, strong_values, bins)
    return metrics_from_curve(curve, float(weak_values.mean()), float(strong_values.mean()))


def mean_curve(curves: Sequence[Sequence[CurvePoint]]) -> tuple[CurvePoint, ...]:
    """Point-by-point mean of curves with the same number of points (several seeds of one random router).

    Thresholds, shares and qualities are averaged by rank; for tie-free scores the shares are the same in every
    curve, so the APGR of the mean curve is the mean of the APGRs.
    """
    if not curves or len({len(curve) for curve in curves}) != 1:
        raise ValueError("need one or more curves of equal length")
    return tuple(
        CurvePoint(
            threshold=float(np.mean([curve[i].threshold for curve in curves])),
            strong_share=float(np.mean([curve[i].strong_share for curve in curves])),
            quality=float(np.mean([curve[i].quality for curve in curves])),
        )
        for i in range(len(curves[0]))
    )


def _gap(weak_quality: float, strong_quality: float) -> float:
    gap = strong_quality - weak_quality
    if gap == 0:
        raise ValueError("the two models have the same quality: there is no gap to recover")
    return gap
