"""The real-world path: Sekai CSV + camera files + mp4s -> actions -> WebDataset shards, as one Prefect flow.

Steps run over batches of the manifest (`map_batches`), each resumable on its own:
  1. clips:    probe each video, quantize its trajectory, cross-check their lengths   (CPU, one task per batch)
  2. captions: when a captioner is configured, event captions and training prompts     (one task per batch)
  3. shards:   plan shards over the ok rows and write one tar per task                 (I/O, one task per shard)
  4. manifest: the last step's parts streamed into `manifest.parquet`, each row with its shard
The output manifest keeps every CSV row with its status, so counts in equal counts out.

The driver holds the CSV's rows and, after that, only `Parts` (paths and counts), the shard plan (row positions)
and per-task counts: tasks read their rows from the parts, planning reads only the columns it needs, and the
manifest and report are written by streaming the parts, so memory stays bounded by a batch as the set grows.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

import quantize_actions
import shards
from shards.plan import ok_positions
from shards.sample import SampleSpec, real_world_spec, recorded_path
from captioning.stage import CaptionConfig
from pipelines.batching import Parts, fingerprint, map_batches, write_parts
from pipelines.flows import StageFlow
from pipelines.reporting import report
from pipelines.runners import Runner, RunnerConfig, task_paths, task_runner, worth_retrying
from yume_core import __version__
from yume_core.config import load_preset, to_dict
from yume_core.identity import batch_keys, file_identities
from yume_core.manifest import CLIP_SCHEMA, conform
from yume_core.remote import finish_output, is_url, open_output
from yume_core.sekai import check_frame_counts, check_sekai_csv, probe_clips, read_sekai_csv
from yume_core.storage import check_writable


@dataclass(frozen=True)
class RealWorldConfig:
    batch_size: int = 256
    io_threads: int = 4  # threads per batch for probing videos and reading trajectories
    frame_tolerance: int = 1  # largest allowed |video frames - poses|
    actions: quantize_actions.QuantizeConfig = field(default_factory=quantize_actions.QuantizeConfig)
    shards: shards.ShardConfig = field(default_factory=shards.ShardConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    caption: CaptionConfig | None = None  # set to caption the ok clips before they are sharded
    allow_outside_root: bool = False  # trust CSV paths that leave the videos / cameras folders


def process_clip_batch(batch: pa.Table, config: RealWorldConfig) -> pa.Table:
    """Stage composition for one batch; plain Python so a benchmark (or a notebook) can call it without Prefect."""
    batch = probe_clips(batch, workers=config.io_threads)
    batch = quantize_actions.quantize_table(batch, config.actions)
    return check_frame_counts(batch, tolerance=config.frame_tolerance)


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, retry_condition_fn=worth_retrying)
def write_shard_task(manifest: Parts, positions: np.ndarray, shards_dir: str, index: int,
                     config: shards.ShardConfig, provenance: dict, spec: SampleSpec) -> int:
    """Read the shard's rows from the parts (by position) and write it, unless it was written from the same rows
    and settings already (`write_shard_part` compares fingerprints)."""
    rows = manifest.take(positions)
    shards.write_shard_part(rows, Path(shards_dir), index, config, provenance, spec=spec)
    return rows.num_rows


def plan_all_shards(manifest: Parts, config: shards.ShardConfig) -> list[np.ndarray]:
    """`shards.plan_shards` over the ok rows of every part, reading only the columns planning needs; returns the
    global row positions of each shard."""
    columns = shards.plan_columns(manifest.column_names)
    positions, estimates = [], []
    for i in range(len(manifest.paths)):
        part = manifest.read(i, columns)
        ok = ok_positions(part)
        positions.append(ok + manifest.starts[i])
        estimates.append(shards.estimate_sample_bytes(part.take(pa.array(ok)), config))
    if not positions:
        return []
    return shards.group_rows(np.concatenate(positions), np.concatenate(estimates), config)


def write_all_shards(manifest: Parts, shards_dir: Path, config: shards.ShardConfig,
                     provenance: dict, runner: Runner, spec: SampleSpec) -> list[np.ndarray]:
    """One task per shard (a shard already written from the same rows is kept); writes the merged index and
    returns the plan. Temp files of a killed earlier run are removed once every shard is written, so
    `shards/*.tar` names the shards and nothing else."""
    groups = plan_all_shards(manifest, config)
    shards.remove_stale_shards(shards_dir, len(groups), config)
    futures = [
        runner.submit(write_shard_task, {"manifest": manifest, "positions": rows, "shards_dir": str(shards_dir),
                                         "index": i, "config": config, "provenance": provenance, "spec": spec},
                      f"shard-{i:06d}")
        for i, rows in enumerate(groups)
    ]
    wait(futures)
    for fut in futures:
        fut.result()
    shards.remove_temp_files(shards_dir)
    shards.merge_index(shards_dir, len(groups), config)
    return groups


ATTACH_COLUMNS = ["clip_id", "shard", "status", "reason", "error"]


def attached_parts(manifest: Parts, groups: list[np.ndarray], shards_dir: Path,
                   config: shards.ShardConfig) -> Iterator[pa.Table]:
    """The manifest's rows a part at a time with their shards attached (`shards.attach_shards`), each against the
    index parts of just the shards that hold its rows."""
    firsts = np.array([g[0] for g in groups], dtype=np.int64)
    lasts = np.array([g[-1] for g in groups], dtype=np.int64)
    for i in range(len(manifest.paths)):
        lo, hi = manifest.starts[i], manifest.starts[i + 1]
        mine = np.flatnonzero((firsts < hi) & (lasts >= lo))
        index = [pq.read_table(shards.index_part_path(shards_dir, int(s), config), columns=ATTACH_COLUMNS)
                 for s in mine]
        index = pa.concat_tables(index) if index else pa.table({c: pa.array([], pa.string()) for c in ATTACH_COLUMNS})
        yield shards.attach_shards(manifest.read(i), index)


def run_real_world(csv: str, videos: str, trajectories: str, output: str, config: RealWorldConfig,
                   shards_dir: str | None = None, set_name: str = "real_world", tasks: list[str] | None = None,
                   roots: list[str] | None = None) -> dict:
    """The flow body; `real_world_flow` wraps it so Prefect records the run. `shards_dir`: where the set's shards
    go (default `<output>/shards`; `yume-data build` puts them in the set folder and names the set and its tasks).
    `roots`: folders that source paths are recorded relative to (`SampleSpec.roots`): the build folder and the
    config file's, or for the command the output folder and the working directory."""
    started = time.perf_counter()
    csv, videos, trajectories, output, shards_dir = task_paths(config.runner, csv, videos, trajectories, output,
                                                               shards_dir)
    output = open_output(output)  # a URL: its local staging folder, mirrored to the bucket as files are finished
    shards_dir = open_output(shards_dir) if shards_dir else None
    out = Path(output)
    roots = [output, os.getcwd()] if roots is None else roots
    table = read_sekai_csv(csv, videos, trajectories, allow_outside_root=config.allow_outside_root)
    # what decides a batch's output: its rows, where their files are, the settings that change results, and (per
    # batch) what those files are: a video or trajectory replaced under the same name redoes its batch alone
    settings = {k: v for k, v in to_dict(config).items() if k not in ("shards", "runner", "io_threads", "caption")}
    inputs = fingerprint(table, settings, columns=("csv_row", "clip_id", "status", "video_path", "camera_path"))
    keys = batch_keys([file_identities(table[c].to_pylist()) for c in ("video_path", "camera_path")],
                      config.batch_size, table.num_rows)
    clips_dir = out / "_work" / f"clips-{inputs}"
    step = functools.partial(process_clip_batch, config=config)
    provenance = {
        "pipeline": f"yume-data {__version__}",
        "flow": "real-world",
        "csv": csv if is_url(csv) else recorded_path(str(Path(csv).resolve()), roots),
        "actions": config.actions.recorded(),
    }
    shards_path = Path(shards_dir) if shards_dir else out / "shards"
    with task_runner(config.runner) as runner:
        clips = map_batches(step, table, clips_dir, config.batch_size, "clips", runner, keys=keys)
        del table  # from here on the rows live in the parts
        manifest = clips.with_schema(conform(clips.schema.empty_table(), CLIP_SCHEMA).schema)
        if config.caption is not None:
            from pipelines.captioning import caption_step

            manifest = caption_step(manifest, out, config.caption, config.batch_size, runner)
        spec = real_world_spec(tasks, set_name, roots)
        groups = write_all_shards(manifest, shards_path, config.shards, provenance, runner, spec)
    path = write_parts(attached_parts(manifest, groups, shards_path, config.shards), out / "manifest.parquet",
                       manifest.schema, {"yume_data": json.dumps(provenance)})
    summary = report(Parts.of_files([path]), out, title="real-world", seconds=time.perf_counter() - started)
    finish_output(output)
    if out.resolve() not in shards_path.resolve().parents:  # shards elsewhere (the build's set folder)
        finish_output(shards_path)
    return summary


PRESETS = Path(__file__).parent / "presets"


def load_real_world_preset(name_or_path: str) -> dict:
    """A real-world preset's settings (`demo`, `yume15` or a YAML path)."""
    return load_preset(PRESETS, name_or_path, "real-world preset")


def _check_inputs(csv: str, videos: str, trajectories: str, output: str, *args, config: RealWorldConfig,
                  **kwargs) -> None:
    """A bad CSV, output folder or caption prompt stops before a Prefect run starts."""
    check_sekai_csv(csv)
    check_writable(output)
    if config.caption is not None:
        from pipelines.captioning import check_caption_inputs

        check_caption_inputs(None, output, config.caption)


REAL_WORLD = StageFlow("real-world", RealWorldConfig, load_real_world_preset, _check_inputs)


@flow(name="real-world")
def real_world_flow(csv: str, videos: str, trajectories: str, output: str, config: dict | None = None,
                    shards_dir: str | None = None, preset: str | None = None, set_name: str = "real_world",
                    tasks: list[str] | None = None, roots: list[str] | None = None) -> dict:
    """`preset` then `config` on top, as `yume-data real-world --preset P --config FILE` (`pipelines.flows`)."""
    return run_real_world(csv, videos, trajectories, output, REAL_WORLD.config(preset, config), shards_dir,
                          set_name, tasks, roots)


def run_flow(csv: str, videos: str, trajectories: str, output: str, config: RealWorldConfig, **kwargs) -> dict:
    """The flow, after the checks that need no Prefect run (`shards_dir`, `set_name`, `tasks`, `roots` as the
    flow takes them)."""
    for key in ("tasks", "roots"):
        if kwargs.get(key):
            kwargs[key] = list(kwargs[key])
    return REAL_WORLD.launch(real_world_flow, csv, videos, trajectories, output, config=config, **kwargs)
