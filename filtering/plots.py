"""The score distribution with the top-N cut: where a person checks that the cut falls where they meant it to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from filtering.dimensions import score_column
from filtering.topk import QUALITY, RANK
from yume_core.figures import agg_figure, save_png


def plot_quality_scores(table: pa.Table, cut: dict, path: str | Path, bins: int = 50) -> Path:
    """Histogram of the ranked videos' quality scores, the kept share shaded, the cut marked; one small histogram
    per raw dimension below it."""
    from matplotlib.ticker import MaxNLocator  # here, not at the top: matplotlib is slow to import

    ranked = table.filter(table[RANK].is_valid())
    dims = [c.removeprefix("vbench_") for c in table.column_names if c.startswith("vbench_")]
    fig = agg_figure(figsize=(3.2 * max(len(dims), 3), 6.4), layout="constrained")
    grid = fig.add_gridspec(2, max(len(dims), 1))
    ax = fig.add_subplot(grid[0, :])
    scores = _values(ranked, QUALITY)
    kept = scores[_values(ranked, RANK) <= cut["kept"]] if len(scores) else scores
    edges = np.histogram_bin_edges(scores, bins=bins) if len(scores) else bins
    ax.hist(scores, bins=edges, color="tab:gray", label=f"scored ({len(scores):,})")
    ax.hist(kept, bins=edges, color="tab:green", label=f"kept ({cut['kept']:,})")
    if cut["cut_score"] is not None:
        ax.axvline(cut["cut_score"], color="tab:red", linestyle="--", label=f"cut {cut['cut_score']:.4f}")
    ax.set_xlabel("quality score (VBench-normalised, weighted)")
    ax.set_ylabel("videos")
    ax.legend()
    for j, dim in enumerate(dims):
        sub = fig.add_subplot(grid[1, j])
        sub.hist(_values(ranked, score_column(dim)), bins=min(bins, 30), color="tab:blue")
        sub.set_title(dim.replace("_", " "), fontsize=9)
        sub.xaxis.set_major_locator(MaxNLocator(4))
        sub.tick_params(labelsize=7)
    fig.suptitle(f"Quality scores: top {cut['kept']:,} of {cut['scored']:,} kept")
    return save_png(fig, path)


def _values(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table[name].to_numpy(zero_copy_only=False), np.float64)
