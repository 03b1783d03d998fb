"""Keep the best N scored videos (Yume-1.5: the top 50,000 of 80,000 by VBench quality).

The cut is taken over the whole merged manifest, after every batch is scored, because a rank only means something
against all the others. Ties are broken by key, so the same scores always give the same kept set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from yume_core.config import ConfigError
from yume_core.manifest import DROPPED, OK, mark, put_column

QUALITY = "quality_score"
RANK = "quality_rank"


@dataclass(frozen=True)
class TopK:
    """How many of the scored videos to keep: a count, a fraction, a floor on the score, or several of these."""

    keep: int | None = None  # at most this many (the paper: 50,000)
    keep_fraction: float | None = None  # at most this share of the scored videos, rounded down
    min_score: float | None = None  # and none below this quality score

    def __post_init__(self):
        if self.keep is not None and self.keep < 0:
            raise ConfigError(f"keep must be >= 0, got {self.keep}")
        if self.keep_fraction is not None and not 0 <= self.keep_fraction <= 1:
            raise ConfigError(f"keep_fraction must be within [0, 1], got {self.keep_fraction}")

    def limit(self, scored: int) -> int:
        limit = scored
        if self.keep is not None:
            limit = min(limit, self.keep)
        if self.keep_fraction is not None:
            limit = min(limit, int(np.floor(self.keep_fraction * scored + 1e-9)))
        return limit


def select_top(table: pa.Table, rule: TopK, key: str = "prompt_id") -> tuple[pa.Table, dict]:
    """Rank the ok rows by `quality_score` (1 = best) and drop those past the cut; other rows keep their verdicts.

    Returns the table with a `quality_rank` column and a dict describing the cut for the report.
    """
    ok = np.asarray(pc.equal(table["status"], OK).to_numpy(zero_copy_only=False), bool)
    scores = np.asarray(pc.fill_null(table[QUALITY].cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False))
    scored = np.flatnonzero(ok & np.isfinite(scores))
    keys = np.asarray(table[key].to_numpy(zero_copy_only=False), dtype=object)[scored].astype(str)
    order = scored[np.lexsort((keys, -scores[scored]))]  # best first; ties by key
    ranks = np.zeros(table.num_rows, np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    limit = rule.limit(len(order))
    kept = order[:limit]
    if rule.min_score is not None:
        kept = kept[scores[kept] >= rule.min_score]
    cut = float(scores[kept[-1]]) if len(kept) else None
    out = put_column(table, pa.field(RANK, pa.int64()), pa.array(ranks, pa.int64(), mask=ranks == 0))

    past = np.zeros(table.num_rows, bool)
    past[order[limit:]] = True
    low = np.zeros(table.num_rows, bool)
    if rule.min_score is not None:
        low[order[:limit]] = scores[order[:limit]] < rule.min_score
    n = len(order)
    if past.any():
        msgs = [None] * table.num_rows
        for i in np.flatnonzero(past):
            msgs[i] = (f"quality score {scores[i]:.4f} ranks {ranks[i]:,} of {n:,} scored; the top {limit:,} are kept"
                       + (f" (cut at {scores[order[limit - 1]]:.4f})" if limit else ""))
        out = mark(out, pa.array(past), DROPPED, "below_top_k", pa.array(msgs, pa.string()))
    if low.any():
        msgs = [None] * table.num_rows
        for i in np.flatnonzero(low):
            msgs[i] = f"quality score {scores[i]:.4f} is below the floor {rule.min_score:.4f}"
        out = mark(out, pa.array(low), DROPPED, "below_min_score", pa.array(msgs, pa.string()))
    return out, {"scored": n, "kept": int(len(kept)), "cut_score": cut, "limit": limit}
