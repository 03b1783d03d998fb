"""The configured labelling mode, behind one call: `published` (Yume's per-step rule, `rule.py`) or `heading`
(windowed heading sectors, `heading.py`). Both return per-step codes in the same layout and vocabulary, so runs,
chunks, shards and the trainer do not know which mode made them."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from quantize_actions.batch import TrajectoryBatch
from quantize_actions.config import QuantizeConfig
from quantize_actions.heading import heading_batch
from quantize_actions.rule import BatchLabels, quantize_batch


def label_batch(batch: TrajectoryBatch, config: QuantizeConfig = QuantizeConfig()) -> BatchLabels:
    return heading_batch(batch, config) if config.mode == "heading" else quantize_batch(batch, config)


def label_many(poses_list: Sequence[np.ndarray],
               config: QuantizeConfig = QuantizeConfig()) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-step (key_codes, mouse_codes) of each trajectory under `config.mode`, in one pass over all of them."""
    return label_batch(TrajectoryBatch.from_list(poses_list), config).split()


def label(poses: np.ndarray, config: QuantizeConfig = QuantizeConfig()) -> tuple[np.ndarray, np.ndarray]:
    return label_many([poses], config)[0]
