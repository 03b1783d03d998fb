"""VBench's quality dimensions and how its leaderboard folds them into one quality score.

The constants are VBench's own (its leaderboard's per-dimension min-max range and weights), so a score computed
here for one video ranks it the way VBench's quality score would, and it does not depend on which other videos
were scored with it: batches can be scored apart and merged, and a resumed run gives the same numbers.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from yume_core.config import ConfigError

# The seven quality dimensions that work on custom videos (no VBench prompt suite needed).
QUALITY_DIMENSIONS = (
    "subject_consistency",
    "background_consistency",
    "temporal_flickering",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
)

# (min, max) of each dimension's raw score on VBench's leaderboard; the score is min-max normalised with them.
NORMALIZE = {
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
}

# A static video scores high on every consistency dimension; VBench counts motion, at half weight, against that.
WEIGHTS = {dim: 0.5 if dim == "dynamic_degree" else 1.0 for dim in QUALITY_DIMENSIONS}


def score_column(dimension: str) -> str:
    """The manifest column holding a dimension's raw score."""
    return f"vbench_{dimension}"


def check_dimensions(dimensions) -> tuple[str, ...]:
    """The dimensions as a tuple, in the order given; ValueError naming the unknown ones and the known ones."""
    dims = tuple(dimensions)
    unknown = [d for d in dims if d not in QUALITY_DIMENSIONS]
    if unknown or not dims:
        raise ConfigError(f"unknown VBench quality dimension(s) {unknown or '(none given)'}; "
                         f"known: {', '.join(QUALITY_DIMENSIONS)}")
    if len(set(dims)) != len(dims):
        raise ConfigError(f"a dimension is listed twice in {list(dims)}")
    return dims


def quality_score(raw: Mapping[str, np.ndarray]) -> np.ndarray:
    """Weighted mean of the min-max normalised dimensions present in `raw` (dimension -> raw scores per video).

    NaN where any given dimension is NaN: a video missing a score is not ranked on the others alone.
    """
    dims = check_dimensions(raw)
    total = np.zeros(len(np.asarray(raw[dims[0]])), np.float64)
    for dim in dims:
        lo, hi = NORMALIZE[dim]
        total += WEIGHTS[dim] * (np.asarray(raw[dim], np.float64) - lo) / (hi - lo)
    return total / sum(WEIGHTS[d] for d in dims)
