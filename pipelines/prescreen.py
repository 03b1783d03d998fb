"""The pre-screen step of an event set: every generated video scored (`filtering.prescreen`) in resumable batches,
so the review pages can put the likely keepers first, and the ones under `screening.auto_reject_below` are
dropped before a person sees them.

It runs inside the build's flow (as the other steps' flows do), or alone as `yume-data prescreen` (`prescreen_flow`)
between `synthesize` and `review make`, and writes `manifest.parquet` (the synthesis manifest plus the pre-screen
columns, the auto-rejected rows dropped as `prescreen_rejected`) and `summary.json`. Batches resume like every
flow's: a changed `auto_reject_below` re-cuts without scoring a video again.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefect import flow

from filtering.prescreen import SCORE, PrescreenConfig, auto_reject, prescreen_table
from pipelines.batching import fingerprint, map_batches
from pipelines.flows import StageFlow
from pipelines.reporting import report
from pipelines.runners import RunnerConfig, task_runner
from yume_core.config import to_dict
from yume_core.manifest import read_manifest, read_manifest_schema, write_manifest


@dataclass(frozen=True)
class EventPrescreenConfig(PrescreenConfig):
    """A build's `prescreen:` section of an `i2v_event` set: the scorer's settings, whether it runs, and the
    videos per batch."""

    enabled: bool = False
    batch_size: int = 64


@dataclass(frozen=True)
class PrescreenFlowConfig(PrescreenConfig):
    """`yume-data prescreen`: the scorer's settings, the videos per batch and the auto-reject cut (in a build the
    cut is the event set's `screening.auto_reject_below`)."""

    batch_size: int = 64
    auto_reject_below: float | None = None


def prescreen_batch(batch: pa.Table, config: PrescreenConfig, videos_root: str) -> pa.Table:
    return prescreen_table(batch, config, videos_root)


def run_prescreen(manifest: Path, videos_root: Path, out: Path, config: EventPrescreenConfig | PrescreenFlowConfig,
                  auto_reject_below: float | None, relocate: bool = False) -> dict:
    """`relocate`: the written manifest's video and image paths resolve from `out` (for `review make` on it), not
    from the input manifest's folder (what the build's later steps expect)."""
    started = time.perf_counter()
    table = read_manifest(manifest)
    scorer = PrescreenConfig(**{k: getattr(config, k) for k in PrescreenConfig.__dataclass_fields__})
    settings = {k: v for k, v in to_dict(scorer).items()}
    key = fingerprint(table, settings, columns=[c for c in ("prompt_id", "status", "video_path", "video_bytes",
                                                            "caption", "image_path") if c in table.column_names])
    step = functools.partial(prescreen_batch, config=scorer, videos_root=str(videos_root))
    with task_runner(RunnerConfig(kind="threads", workers=1)) as runner:  # one model set: batches in turn
        parts = map_batches(step, table, out / "_work" / f"prescreen-{key}", config.batch_size, "prescreen", runner)
    scored = pa.concat_tables(list(parts.iter_tables())) if parts.paths else table
    cut = auto_reject(scored, auto_reject_below)
    if relocate:
        from pipelines.filtering import relocated

        cut = relocated(cut, videos_root, out)
    write_manifest(cut, out / "manifest.parquet")
    values = scored[SCORE].to_numpy(zero_copy_only=False).astype(np.float64) if SCORE in scored.column_names \
        else np.zeros(0)
    values = values[np.isfinite(values)]
    extra = {"scored": int(values.size), "auto_reject_below": auto_reject_below,
             "auto_rejected": int(pc.sum(pc.equal(cut["reason"], "prescreen_rejected").cast(pa.int64())).as_py()
                                  or 0),
             "score_mean": round(float(values.mean()), 4) if values.size else None,
             "score_min": round(float(values.min()), 4) if values.size else None,
             "score_max": round(float(values.max()), 4) if values.size else None}
    return report(cut, out, title="prescreen", seconds=time.perf_counter() - started, extra=extra)


def _check_inputs(manifest: str, output: str, *args, config: PrescreenFlowConfig, **kwargs) -> None:
    """An unusable output folder or manifest stops before a Prefect run starts."""
    from pipelines.filtering import output_folder

    from yume_core.errors import InputError

    output_folder(Path(manifest), output)
    missing = {"prompt_id", "status", "video_path", "caption"} - set(read_manifest_schema(manifest).names)
    if missing:
        raise InputError(manifest, f"has no column(s) {', '.join(sorted(missing))}",
                         "pass the manifest.parquet of `yume-data synthesize` for an event set")


PRESCREEN = StageFlow("prescreen", PrescreenFlowConfig, None, _check_inputs)


@flow(name="prescreen")
def prescreen_flow(manifest: str, output: str, config: dict | None = None) -> dict:
    """`config` on top of the defaults (`pipelines.flows`)."""
    return run_prescreen_alone(manifest, output, PRESCREEN.config(None, config))


def run_prescreen_alone(manifest: str, output: str, config: PrescreenFlowConfig) -> dict:
    source = Path(manifest)
    return run_prescreen(source, source.parent, Path(output), config, config.auto_reject_below, relocate=True)


def run_prescreen_flow(manifest: str, output: str, config: PrescreenFlowConfig) -> dict:
    return PRESCREEN.launch(prescreen_flow, manifest, output, config=config)
