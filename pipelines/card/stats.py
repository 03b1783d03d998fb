"""Distributions as mergeable moments (`describe`: count, sum, mean, M2, variance, min, max), so figures of several
builds, or of shards of one build, combine exactly with `merge_stats` without the raw values."""

from __future__ import annotations

import numpy as np

HIST_BINS = 20


def describe(values) -> dict:
    """count, sum, mean, M2 (sum of squared deviations), population variance, min and max of `values`; NaN (a
    missing score) is left out.

    These merge exactly across builds or shards (`merge_stats`); a histogram or a median would not."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if not x.size:
        return {"count": 0, "sum": 0.0, "mean": None, "m2": 0.0, "variance": None, "min": None, "max": None}
    mean = float(x.mean())
    m2 = float(((x - mean) ** 2).sum())
    return {"count": int(x.size), "sum": float(x.sum()), "mean": mean, "m2": m2, "variance": m2 / x.size,
            "min": float(x.min()), "max": float(x.max())}


def merge_stats(a: dict, b: dict) -> dict:
    """The `describe` of the union of two samples from theirs (Chan et al.'s parallel update of M2)."""
    if not a["count"] or not b["count"]:
        return dict(b if not a["count"] else a)
    n = a["count"] + b["count"]
    delta = b["mean"] - a["mean"]
    mean = a["mean"] + delta * b["count"] / n
    m2 = a["m2"] + b["m2"] + delta * delta * a["count"] * b["count"] / n
    return {"count": n, "sum": a["sum"] + b["sum"], "mean": mean, "m2": m2, "variance": m2 / n,
            "min": min(a["min"], b["min"]), "max": max(a["max"], b["max"])}


def distribution(values, bins: int = HIST_BINS) -> dict:
    """`describe` plus the histogram the page plots (edges and counts)."""
    stats = describe(values)
    if stats["count"]:
        counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
        stats["histogram"] = {"edges": edges.tolist(), "counts": counts.tolist()}
    else:
        stats["histogram"] = None
    return stats
