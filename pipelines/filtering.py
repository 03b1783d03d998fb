"""The filtering flow: a synthesis manifest in, every video scored with VBench's quality dimensions, the top N kept.

Scoring is split as every flow's: contiguous batches of the video rows, one resumable part per batch under
`<out>/_work/score-<fingerprint>/` (the fingerprint covers the rows and every scoring setting). The top-N cut is
taken afterwards over the merged scores, so changing N reruns no scoring. The output manifest keeps every row
(counts in = counts out); `video_path` is rewritten relative to the output folder, as every manifest's is.

The cut reads only the score columns of the parts (ids, statuses, scores); the output manifest is then streamed
part by part with each row's rank and verdict, so no step holds every row's full record at once.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow

from filtering import ScoreConfig, TopK, plot_quality_scores, score_table, select_top
from filtering.dimensions import score_column
from filtering.presets import load_preset
from filtering.stage import scoring_watch, shared_scorer
from filtering.topk import QUALITY, RANK
from pipelines.batching import BatchPlan, Parts, fingerprint, map_batches, write_parts
from pipelines.flows import StageFlow
from pipelines.reporting import report
from pipelines.runners import Resources, RunnerConfig, task_paths, task_runner
from yume_core import __version__
from yume_core import remote
from yume_core.errors import InputError
from yume_core.identity import batch_keys, file_identities
from yume_core.manifest import OK, put_column, read_manifest_schema
from yume_core.remote import finish_output, open_flow_output_file, open_output, public_path
from yume_core.storage import check_writable


@dataclass(frozen=True)
class FilterFlowConfig:
    batch_size: int = 256  # videos per task: VBench loads its models per call, so batches amortise that
    score: ScoreConfig = field(default_factory=ScoreConfig)
    top: TopK = field(default_factory=TopK)
    runner: RunnerConfig = field(default_factory=lambda: RunnerConfig(kind="threads", workers=1))


def score_gpus(config: ScoreConfig) -> float:
    """GPUs a scoring task needs by default: one when the scorer runs on CUDA, else none."""
    return 1 if config.device.startswith("cuda") else 0


def output_folder(manifest: Path, output: str | Path) -> Path:
    """The folder a manifest-to-manifest step writes to, created; refused when it is the input's own (its
    manifest.parquet would be overwritten by the output's) or cannot be written (`check_writable`)."""
    out = Path(output)
    if out.resolve() == manifest.parent.resolve():
        raise InputError(out, f"is the input's folder: its {manifest.name} would be overwritten",
                         "write to another folder")
    return check_writable(out)


def run_filter(manifest: str, output: str, config: FilterFlowConfig) -> dict:
    manifest, output = task_paths(config.runner, manifest, output)
    manifest, output = open_flow_output_file(manifest), open_output(output)  # URLs: staged (`yume_core.remote`)
    source = Path(manifest)
    out = output_folder(source, output)
    table = Parts.of_files([source])  # tasks read their batches from the file's row groups
    settings = asdict(config.score)
    settings.pop("device")  # the same scores on any device
    settings.pop("fail_fast")
    inputs = fingerprint(table, settings, columns=("prompt_id", "video_path", "status"))
    plan = BatchPlan(out / "_work" / f"score-{inputs}", config.batch_size, table.num_rows)
    keys = _video_keys(table, source.parent, config.batch_size)  # a video rendered again is scored again
    if config.runner.kind == "threads" and not all(plan.done(i, keys[i]) for i in range(plan.num_batches)):
        shared_scorer(config.score)  # load models (or find VBench) here: a bad setting fails before any task runs
    step = functools.partial(score_table, config=config.score, videos_root=str(source.parent),
                             fail_fast=scoring_watch(config.score))
    with task_runner(config.runner) as runner:
        started = time.perf_counter()
        resources = Resources(cpus=1, gpus=runner.gpus(score_gpus(config.score)))
        scored = map_batches(step, table, plan.parts_dir, config.batch_size, "score", runner, resources, keys=keys,
                             holds_model=True)  # on Ray, actors keep the scorer (`pipelines.ray_actors`)
        seconds = time.perf_counter() - started
    ranked, cut = select_top(scored.columns(score_columns(scored.column_names)), config.top)
    rows = _cut_rows(scored, ranked, source.parent, out)
    schema = with_verdicts(scored.schema.empty_table(), ranked.slice(0, 0)).schema
    path = write_parts(rows, out / "manifest.parquet", schema,
                       metadata={"yume_data.version": __version__, "yume_data.scores": inputs})
    png = plot_quality_scores(ranked, cut, out / "quality_scores.png")
    summary = report(Parts.of_files([path]), out, title="filtering", seconds=seconds,
                     extra=filter_figures(ranked, cut, config, seconds))
    summary["outputs"]["quality_scores"] = public_path(png)
    finish_output(out)
    return summary


def _video_keys(table: Parts, root: Path, batch_size: int) -> list[str]:
    paths = [None if p is None else p if remote.is_url(p) or os.path.isabs(p) else str(root / p)
             for p in table.columns(["video_path"])["video_path"].to_pylist()]
    return batch_keys([file_identities(paths)], batch_size, table.num_rows)


VERDICT = ("status", "reason", "error", RANK)


def score_columns(names: list[str]) -> list[str]:
    """What the cut, its figures and its plot read: ids, verdicts and every score column."""
    wanted = {"prompt_id", "status", "reason", "error", QUALITY, RANK}
    return [n for n in names if n in wanted or n.startswith("vbench_")]


def with_verdicts(rows: pa.Table, ranked: pa.Table) -> pa.Table:
    """`rows` (a run of the scored manifest) with the status, reason, error and rank the cut gave them."""
    for name in VERDICT:
        rows = put_column(rows, ranked.schema.field(name), ranked[name])
    return rows


def _cut_rows(scored: Parts, ranked: pa.Table, src: Path, out: Path):
    """The scored rows a row group at a time, with their verdicts and paths relative to the output folder."""
    start = 0
    for t in scored.iter_tables():
        yield relocated(with_verdicts(t, ranked.slice(start, t.num_rows)), src, out)
        start += t.num_rows


def filter_figures(table: pa.Table, cut: dict, config: FilterFlowConfig, seconds: float) -> dict:
    """The cut and each dimension's mean over the scored videos and over the kept ones, for the report."""
    figures = {"backend": config.score.backend, **cut,
               "cut_score": None if cut["cut_score"] is None else round(cut["cut_score"], 4),
               "seconds_per_video": round(seconds / cut["scored"], 4) if cut["scored"] else None}
    ranked = pc.is_valid(table["quality_rank"])
    kept = pc.and_(ranked, pc.equal(table["status"], OK))
    for dim in (*config.score.dimensions, None):
        name = score_column(dim) if dim else QUALITY
        values = table[name]
        figures[f"mean_{name}"] = {"scored": _mean(values.filter(ranked)), "kept": _mean(values.filter(kept))}
    return figures


def _mean(values: pa.ChunkedArray) -> float | None:
    mean = pc.mean(values).as_py()
    return None if mean is None else round(mean, 4)


def relocated(table: pa.Table, src: Path, out: Path) -> pa.Table:
    """Paths relative to the input manifest's folder become relative to the output folder."""
    for name in ("video_path", "image_path"):
        if name not in table.column_names:
            continue
        values = [None if p is None else os.path.relpath(src / p, out) if not os.path.isabs(p) else p
                  for p in table[name].to_pylist()]
        table = put_column(table, name, pa.array(values, pa.string()))
    return table


def _check_inputs(manifest: str, output: str, *args, config: FilterFlowConfig, **kwargs) -> None:
    """An unusable output folder or manifest stops before a Prefect run starts."""
    output_folder(Path(manifest), output)
    read_manifest_schema(manifest)


# presets: `filtering.presets` (`yume15`: VBench, top 50,000; `native`; `tiny`), by name or path
FILTER = StageFlow("filter", FilterFlowConfig, load_preset, _check_inputs)


@flow(name="filter")
def filter_flow(manifest: str, output: str, config: dict | None = None, preset: str | None = None) -> dict:
    """`preset` then `config` on top, as `yume-data filter --preset P --config FILE` (`pipelines.flows`)."""
    return run_filter(manifest, output, FILTER.config(preset, config))


def run_filter_flow(manifest: str, output: str, config: FilterFlowConfig) -> dict:
    """The flow, after the checks that need no Prefect run."""
    return FILTER.launch(filter_flow, manifest, output, config=config)
