"""Quality filtering of the synthetic sets: VBench scores and a top-N cut (the Wan 2.1 text-to-video set), and
manual screening (the Wan 2.2 event set).

    table = score_table(read_manifest("videos/manifest.parquet"), ScoreConfig(), videos_root="videos")
    kept, cut = select_top(table, TopK(keep=50_000))
    make_review(kept, "videos", "review/")                    # pages a person screens in a browser
    screened = apply_review(kept, read_decisions("decisions.csv"))

No Prefect here: `pipelines.filtering` maps `score_table` over resumable batches.
"""

from filtering.dimensions import NORMALIZE, QUALITY_DIMENSIONS, WEIGHTS, check_dimensions, quality_score, score_column
from filtering.plots import plot_quality_scores
from filtering.prescreen import PrescreenConfig, auto_reject, prescreen_table
from filtering.review import (
    ReviewFormatError,
    apply_review,
    make_review,
    make_text_review,
    read_decisions,
    read_text_edits,
    review_counts,
)
from filtering.scorer import VideoScores
from filtering.stage import BACKENDS, ScoreConfig, make_scorer, score_table
from filtering.topk import TopK, select_top

__all__ = [
    "BACKENDS",
    "NORMALIZE",
    "PrescreenConfig",
    "QUALITY_DIMENSIONS",
    "WEIGHTS",
    "ReviewFormatError",
    "ScoreConfig",
    "TopK",
    "VideoScores",
    "apply_review",
    "auto_reject",
    "check_dimensions",
    "make_review",
    "make_scorer",
    "make_text_review",
    "plot_quality_scores",
    "prescreen_table",
    "quality_score",
    "read_decisions",
    "read_text_edits",
    "review_counts",
    "score_column",
    "score_table",
    "select_top",
]
