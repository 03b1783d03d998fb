"""How often each action occurs in a dataset: the first thing to look at for label balance.

A walking dataset is dominated by W/· steps; the counts show how rare turns, tilts and backward steps are before a
sampler or a training run is designed around them. Counting is done on flattened Arrow arrays (no per-row Python).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quantize_actions.batch import TrajectoryBatch
from quantize_actions.config import MODES, QuantizeConfig
from quantize_actions.modes import label_batch
from yume_core.actions import KEY_LABELS, MOUSE_LABELS, NUM_LABELS
from yume_core.figures import agg_figure, save_png


def _as_list_array(lists) -> pa.ChunkedArray:
    if isinstance(lists, pa.ChunkedArray):
        return lists
    if isinstance(lists, pa.Array):
        return pa.chunked_array([lists])
    return pa.chunked_array([pa.array([list(x) if x is not None else None for x in lists], pa.list_(pa.string()))])


def _codes(lists: pa.ChunkedArray, labels: tuple[str, ...], kind: str) -> np.ndarray:
    flat = pc.list_flatten(lists)
    codes = pc.index_in(flat, value_set=pa.array(labels))
    if codes.null_count:
        unknown = pc.unique(pc.filter(flat, pc.is_null(codes))).to_pylist()
        raise ValueError(f"{kind} lists hold labels outside {list(labels)}: {unknown[:10]}")
    return codes.to_numpy(zero_copy_only=False)


def action_histogram(keys_lists, mouse_lists) -> dict:
    """Step counts per key label, per mouse label and per (keys, mouse) pair; every label present, zeros included.

    Accepts Python lists of label lists or Arrow list arrays (e.g. `table["keys"]`); null rows (failed clips) count
    nothing. Result: {"steps": n, "keys": {label: n}, "mouse": {label: n}, "pairs": {keys: {mouse: n}}}.
    """
    keys, mouse = _as_list_array(keys_lists), _as_list_array(mouse_lists)
    steps_k, steps_m = (pc.fill_null(pc.list_value_length(x), 0) for x in (keys, mouse))
    if len(keys) != len(mouse) or pc.any(pc.not_equal(steps_k, steps_m)).as_py():
        raise ValueError("keys and mouse must have the same number of rows and the same number of steps per row")
    return code_histogram(_codes(keys, KEY_LABELS, "keys"), _codes(mouse, MOUSE_LABELS, "mouse"))


def code_histogram(k: np.ndarray, m: np.ndarray) -> dict:
    """`action_histogram` of per-step label codes (indices into KEY_LABELS / MOUSE_LABELS)."""
    k, m = np.asarray(k, np.int64), np.asarray(m, np.int64)
    pairs = np.bincount(k * NUM_LABELS + m, minlength=NUM_LABELS * NUM_LABELS).reshape(NUM_LABELS, NUM_LABELS)
    return {
        "steps": int(len(k)),
        "keys": dict(zip(KEY_LABELS, pairs.sum(axis=1).tolist())),
        "mouse": dict(zip(MOUSE_LABELS, pairs.sum(axis=0).tolist())),
        "pairs": {kl: dict(zip(MOUSE_LABELS, row)) for kl, row in zip(KEY_LABELS, pairs.tolist())},
    }


def mode_histograms(poses_list, config: QuantizeConfig = QuantizeConfig()) -> dict[str, dict]:
    """The histogram of the same trajectories under each labelling mode, with `config`'s other settings: what a
    keys x mouse grid shows either way (a set's samples hold one mode's labels; their poses give both)."""
    batch = TrajectoryBatch.from_list(poses_list)
    out = {}
    for mode in MODES:
        labels = label_batch(batch, replace(config, mode=mode))
        out[mode] = code_histogram(labels.keys, labels.mouse)
    return out


def plot_action_histogram(hist: dict, path: str | Path, title: str = "Action histogram") -> Path:
    """Bars for keys and mouse, a heat map for the pairs; PNG written atomically.

    No display needed, the caller's matplotlib backend untouched (`yume_core.figures`).
    """
    import matplotlib  # here, not at the top: it costs ~0.5 s to import, and only plotting needs it

    pairs = np.array([[hist["pairs"][k][m] for m in MOUSE_LABELS] for k in KEY_LABELS], dtype=float)
    with matplotlib.rc_context({"font.family": "DejaVu Sans"}):  # has glyphs for the arrows and ·
        fig = agg_figure(figsize=(15, 4.8), layout="constrained")
        ax_k, ax_m, ax_p = fig.subplots(1, 3, width_ratios=[1, 1, 1.2])
        for ax, labels, kind in ((ax_k, KEY_LABELS, "keys"), (ax_m, MOUSE_LABELS, "mouse")):
            ax.bar(range(NUM_LABELS), [hist[kind][label] for label in labels], color="tab:blue")
            ax.set_xticks(range(NUM_LABELS), labels)
            ax.set_title(f"{kind} (steps)")
        share = pairs / max(pairs.sum(), 1.0)
        im = ax_p.imshow(share, cmap="viridis")
        ax_p.set_xticks(range(NUM_LABELS), MOUSE_LABELS)
        ax_p.set_yticks(range(NUM_LABELS), KEY_LABELS)
        ax_p.set_xlabel("mouse")
        ax_p.set_ylabel("keys")
        ax_p.set_title("share of steps per (keys, mouse)")
        fig.colorbar(im, ax=ax_p)
        fig.suptitle(f"{title}: {hist['steps']:,} steps")
        return save_png(fig, path)
