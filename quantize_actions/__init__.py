"""Camera trajectories -> Yume's discrete keyboard/mouse actions, their runs and chunks, motion metrics and
trajectory checks.

Main entry points: `quantize_files` (trajectory files -> one manifest row each) and `quantize_table` (the
manifest stage). `label` / `label_many` label poses under the configured mode: `published` (Yume's rule,
`quantize` / `quantize_many`, with `reference_quantize` its plain per-step oracle) or `heading`. `check_many`
flags jitter, jumps and frozen stretches; `write_overlay` draws the labels under the videos for a person to check.
"""

from quantize_actions.batch import TrajectoryBatch
from quantize_actions.checks import CheckResult, check_batch, check_many, flag_counts
from quantize_actions.config import MODES, TRAJECTORY_FLAGS, CheckConfig, HeadingConfig, QuantizeConfig
from quantize_actions.heading import heading_batch
from quantize_actions.histogram import action_histogram, code_histogram, mode_histograms, plot_action_histogram
from quantize_actions.metrics import motion_metrics, motion_metrics_batch, motion_metrics_many
from quantize_actions.modes import label, label_batch, label_many
from quantize_actions.overlay import write_overlay
from quantize_actions.reference import reference_motion, reference_quantize
from quantize_actions.rule import BatchLabels, quantize, quantize_batch, quantize_many
from quantize_actions.segments import Spans, chunks, fixed_chunks, segment_runs, segments
from quantize_actions.stage import ACTION_COLUMNS, FILE_COLUMNS, action_columns, quantize_files, quantize_table
from quantize_actions.synthetic import random_walk_trajectory
from quantize_actions.trajectory_io import find_trajectory_files, load_trajectory
from quantize_actions.validate import validate_poses
from quantize_actions.walks import IntentWalk, chunk_agreement, intent_walk, poses_from_actions
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
    "CheckConfig",
    "CheckResult",
    "FILE_COLUMNS",
    "HeadingConfig",
    "IntentWalk",
    "KEY_LABELS",
    "MODES",
    "MOUSE_LABELS",
    "QuantizeConfig",
    "TRAJECTORY_FLAGS",
    "Spans",
    "TrajectoryBatch",
    "Vocabulary",
    "VocabularyError",
    "action_columns",
    "action_histogram",
    "available_vocabularies",
    "check_batch",
    "check_many",
    "chunk_agreement",
    "chunks",
    "code_histogram",
    "find_trajectory_files",
    "fixed_chunks",
    "flag_counts",
    "heading_batch",
    "intent_walk",
    "label",
    "label_batch",
    "label_many",
    "load_trajectory",
    "load_vocabulary",
    "motion_metrics",
    "motion_metrics_batch",
    "mode_histograms",
    "motion_metrics_many",
    "plot_action_histogram",
    "poses_from_actions",
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
    "write_overlay",
]
