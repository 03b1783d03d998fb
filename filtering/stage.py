"""Score a batch of video rows with VBench's quality dimensions: the stage the filtering flow maps over batches.

Two backends compute the same dimensions: `native` (VBench's formulas in-process with transformers models; four
dimensions, no extra environment; `tiny-random` models for tests and the demo) and `vbench` (VBench itself in its
own environment, all seven quality dimensions). The raw score of each dimension lands in a `vbench_<dimension>`
column and their VBench-weighted mean in `quality_score`, which `filtering.topk` ranks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filtering.dimensions import check_dimensions, quality_score, score_column
from filtering.topk import QUALITY
from yume_core.config import ConfigError
from yume_core.failfast import FailFast
from yume_core.manifest import FAILED, OK, mark, mark_each, put_column
from yume_core.model_spec import parse_model_spec
from yume_core.remote import ensure_local

BACKENDS = ("native", "vbench")


@dataclass(frozen=True)
class ScoreConfig:
    backend: str = "native"
    # aesthetic_quality is left out by default: with a real model it needs LAION's head file (`aesthetic_head`)
    dimensions: tuple[str, ...] = ("subject_consistency", "background_consistency", "temporal_flickering")
    device: str = "cpu"
    # native: one model spec each (tiny-random[:seed], a hub id or a checkpoint directory)
    dino_model: str = "facebook/dino-vitb16"
    clip_model: str = "openai/clip-vit-base-patch32"
    aesthetic_model: str = "openai/clip-vit-large-patch14"
    aesthetic_head: str | None = None  # LAION's sa_0_4_vit_l_14_linear.pth (needed with a real aesthetic model)
    frame_batch: int = 64
    video_workers: int = 4  # native: videos decoded and scored at once (decoding overlaps the model calls)
    max_frames: int | None = None  # None: every frame, as VBench does
    # vbench: the python of an environment where `pip install vbench` was done
    vbench_python: str = "python"
    vbench_cache: str | None = None  # VBENCH_CACHE_DIR; pre-fill it on air-gapped nodes
    vbench_local: bool = False
    vbench_timeout: float | None = None  # seconds per batch
    fail_fast: int = 8  # stop the run when its first N videos all fail with the same reason (0: never)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown scoring backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        check_dimensions(self.dimensions)
        if (self.backend == "native" and "aesthetic_quality" in self.dimensions and self.aesthetic_head is None
                and not parse_model_spec(self.aesthetic_model).is_tiny):
            raise ConfigError(
                f"aesthetic_quality with {self.aesthetic_model} needs LAION's linear head on top: download "
                "sa_0_4_vit_l_14_linear.pth (LAION-AI/aesthetic-predictor on GitHub) and pass its path as "
                "aesthetic_head (--aesthetic-head), or leave aesthetic_quality out of the dimensions"
            )


def make_scorer(config: ScoreConfig):
    """A backend as configured (models load here, once)."""
    if config.backend == "native":
        from filtering.native import NativeScorer

        return NativeScorer(dimensions=config.dimensions, dino_model=config.dino_model, clip_model=config.clip_model,
                            aesthetic_model=config.aesthetic_model, aesthetic_head=config.aesthetic_head,
                            device=config.device, frame_batch=config.frame_batch, max_frames=config.max_frames,
                            workers=config.video_workers)
    from filtering.vbench_backend import VBenchScorer

    return VBenchScorer(dimensions=config.dimensions, python=config.vbench_python, device=config.device,
                        cache_dir=config.vbench_cache, timeout=config.vbench_timeout, local=config.vbench_local)


_cache_lock = threading.Lock()
_cached: dict = {}


def shared_scorer(config: ScoreConfig):
    """One scorer per process and config, with a lock: batches on worker threads share the loaded models."""
    with _cache_lock:
        if config not in _cached:
            for old, _ in _cached.values():
                old.close()
            _cached.clear()
            _cached[config] = (make_scorer(config), threading.Lock())
        return _cached[config]


def score_columns(config: ScoreConfig) -> list[pa.Field]:
    return [pa.field(score_column(d), pa.float64()) for d in config.dimensions] + [pa.field(QUALITY, pa.float64())]


FAIL_FAST_HINT = ("the scoring backend, its models or environment, or the videos' folder is at fault, not the videos: "
                  "check --vbench-python / the model settings and that video_path resolves next to the manifest; "
                  "score.fail_fast: 0 goes on anyway")


def scoring_watch(config: ScoreConfig) -> FailFast:
    """The `FailFast` a run shares over its batches (`yume_core.failfast`)."""
    return FailFast(config.fail_fast, "videos scored", FAIL_FAST_HINT)


def score_table(table: pa.Table, config: ScoreConfig, videos_root: str | Path, scorer=None,
                fail_fast: FailFast | None = None) -> pa.Table:
    """Score the ok rows' videos (`video_path`, relative to `videos_root`); rows that cannot be scored fail.

    `scorer`: a backend to use instead of the process's shared one (tests, notebooks holding their own).
    `fail_fast`: the run's watch over its first videos (default: this call's own). A backend scores a batch at once,
    so the watch judges the batch's results in row order: a VBench crash that fails a whole batch stops the run
    there instead of crashing again on every batch.
    """
    watch = fail_fast or scoring_watch(config)
    watch.check()
    n = table.num_rows
    ok = np.asarray(pc.equal(table["status"], OK).to_numpy(zero_copy_only=False), bool)
    paths = table["video_path"].to_pylist() if "video_path" in table.column_names else [None] * n
    keys = table["prompt_id"].to_pylist()
    no_video = ok & np.array([not p for p in paths], bool)
    table = mark(table, pa.array(no_video), FAILED, "no_video",
                 "this row has no video_path; was it generated? rerun synthesis for it")
    todo = np.flatnonzero(ok & ~no_video).tolist()
    root = Path(videos_root)
    items = [(keys[i], str(ensure_local(root / paths[i]))) for i in todo]  # fetched if another node wrote it
    results = _score(items, config, scorer) if items else []
    for res in results:
        watch.record(res.reason, res.error or "")

    raw = {d: np.full(n, np.nan) for d in config.dimensions}
    reasons, messages = [None] * n, [None] * n
    for i, res in zip(todo, results):
        if res.ok:
            for d in config.dimensions:
                raw[d][i] = res.scores.get(d, np.nan)
            missing = [d for d in config.dimensions if not np.isfinite(raw[d][i])]
            if missing:
                reasons[i], messages[i] = "score_missing", f"no finite score for {', '.join(missing)}"
        else:
            reasons[i], messages[i] = res.reason, res.error
    table = mark_each(table, reasons, messages)
    quality = quality_score(raw)
    for f in score_columns(config)[:-1]:
        dim = f.name.removeprefix("vbench_")
        table = _put(table, f, raw[dim])
    return _put(table, pa.field(QUALITY, pa.float64()), quality)


def _score(items, config, scorer):
    if scorer is not None:
        return scorer.score(items)
    shared, lock = shared_scorer(config)
    with lock:
        return shared.score(items)


def _put(table: pa.Table, field: pa.Field, values: np.ndarray) -> pa.Table:
    return put_column(table, field, pa.array(values, field.type, mask=~np.isfinite(values)))
