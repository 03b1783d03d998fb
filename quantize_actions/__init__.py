"""Camera trajectories -> Yume's discrete keyboard/mouse actions, their runs and chunks, and motion metrics.

Main entry points: `quantize_files` (trajectory files -> one manifest row each) and `quantize_table` (the
manifest stage). The rule itself is `quantize` / `quantize_many`; `reference_quantize` is its plain per-step oracle.
"""

from quantize_actions.batch import TrajectoryBatch
from quantize_actions.config import QuantizeConfig
from quantize_actions.histogram import action_histogram, plot_action_histogram
from quantize_actions.metrics import motion_metrics, motion_metrics_batch, motion_metrics_many
from quantize_actions.reference import reference_motion, reference_quantize
from quantize_actions.rule import BatchLabels, quantize, quantize_batch, quantize_many
from quantize_actions.segments import Spans, chunks, fixed_chunks, segment_runs, segments
from quantize_actions.stage import ACTION_COLUMNS, FILE_COLUMNS, action_columns, quantize_files, quantize_table
from quantize_actions.synthetic import random_walk_trajectory
from quantize_actions.trajectory_io import find_trajectory_files, load_trajectory
from quantize_actions.validate import validate_poses
from yume_core.actions import (
    KEY_LABELS,
    MOUSE_LABELS,
    Vocabulary,
    VocabularyError,
    available_vocabularies,
    load_vocabulary,
)

__all__ = [
    "ACTION_COLUMNS",
    "BatchLabels",
    "FILE_COLUMNS",
    "KEY_LABELS",
    "MOUSE_LABELS",
    "QuantizeConfig",
    "Spans",
    "TrajectoryBatch",
    "Vocabulary",
    "VocabularyError",
    "action_columns",
    "action_histogram",
    "available_vocabularies",
    "chunks",
    "find_trajectory_files",
    "fixed_chunks",
    "load_trajectory",
    "load_vocabulary",
    "motion_metrics",
    "motion_metrics_batch",
    "motion_metrics_many",
    "plot_action_histogram",
    "quantize",
    "quantize_batch",
    "quantize_files",
    "quantize_many",
    "quantize_table",
    "random_walk_trajectory",
    "reference_motion",
    "reference_quantize",
    "segment_runs",
    "segments",
    "validate_poses",
]
