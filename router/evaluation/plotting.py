"""The cost/quality curve as a PNG: strong-model call share against quality, one line per scorer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from router.evaluation.report import ScorerResult


def plot_curves(results: Sequence[ScorerResult], path: Path, *, title: str, quality_label: str) -> Path:
    """Write the curves of one benchmark's results to `path`.

    A bare `Figure` draws with the Agg canvas and touches no pyplot state, so nothing needs a display or a
    global backend switch.
    """
    evaluated = [result for result in results if result.metrics is not None]
    if not evaluated:
        raise ValueError(f"{title}: nothing was evaluated, nothing to plot")
    figure = Figure(figsize=(8, 5), dpi=110)
    axes = figure.subplots()
    first = evaluated[0].metrics
    assert first is not None
    weak, strong = first.weak_quality, first.strong_quality
    for result in evaluated:
        metrics = result.metrics
        assert metrics is not None
        shares = [100 * point.strong_share for point in metrics.points]
        qualities = [point.quality for point in metrics.points]
        axes.plot(shares, qualities, marker=".", label=f"{result.scorer} (APGR {metrics.apgr:.3f})")
    axes.plot([0, 100], [weak, strong], linestyle=":", color="black", label="random router (expected)")
    axes.axhline(weak, linestyle="--", color="grey", label=f"weak model only ({weak:.3g})")
    axes.axhline(strong, linestyle="--", color="red", label=f"strong model only ({strong:.3g})")
    axes.set_xlabel("strong-model calls (%)")
    axes.set_ylabel(quality_label)
    axes.set_xlim(0, 100)
    axes.set_title(f"{title}: {evaluated[0].prompts} prompts")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
