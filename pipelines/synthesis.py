"""The synthesis flow: a prompts file in, one mp4 per prompt and `manifest.parquet` out (Wan T2V or I2V).

Work is split as every flow's: contiguous batches of the prompt rows, one resumable part per batch under
`<out>/_work/synth-<fingerprint>/` (the fingerprint covers the prompt rows and every setting that changes the
pixels), merged into `<out>/manifest.parquet` at the end. Inside a batch each finished video is kept (see
`synthesis.generate`), so a run killed mid-batch loses at most the video in progress.

Where batches run:

- one process (default): `threads` runner, one worker: one pipeline on one GPU (or the CPU).
- all GPUs of a node from one command: `processes` (or `threads`) runner with `workers` = GPU count; each worker
  claims its own GPU and keeps its pipeline loaded across batches (`synthesis.gpu_pool`).
- one process per GPU, launched by `torchrun`, Slurm or by hand: `--rank/--world-size` (or RANK/WORLD_SIZE,
  SLURM_PROCID/SLURM_NTASKS; LOCAL_RANK/SLURM_LOCALID picks the GPU). Rank r runs batches r, r+W, ...; whichever
  rank finds every part written merges them (ranks may finish in any order; a rank that finishes early says how
  many batches are still out and exits).
- a Ray cluster: `ray` runner, one actor per GPU (`pipelines.ray_actors`), each asking Ray for `gpus_per_worker`
  GPUs (default one; none for a tiny model or a CPU device); an actor lost with its node restarts on another.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow
from prefect.futures import as_completed
from tqdm.auto import tqdm

from pipelines.batching import BatchPlan, fingerprint, read_parts, run_batch
from pipelines.flows import StageFlow
from pipelines.ray_actors import run_on_actors
from pipelines.reporting import report
from pipelines.runners import Resources, Runner, RunnerConfig, task_paths, task_runner
from synthesis.generate import (
    SynthConfig,
    check_against_model,
    check_prompts,
    fingerprint_settings,
    generate_table,
    synthesis_watch,
    video_seconds,
)
from synthesis.gpu_pool import rank_batches, resolve_rank
from synthesis.inputs import prompts_kind, read_prompts
from synthesis.models import parse_wan_spec
from synthesis.planning import plan_synthesis
from synthesis.presets import load_preset
from yume_core import __version__
from yume_core.manifest import OK, format_summary, read_manifest, summarize, write_manifest
from yume_core.remote import finish_output, open_flow_output_file, open_output
from yume_core.storage import check_writable

PAPER_SYNTHETIC_VIDEOS = 80_000  # Yume-1.5's synthetic set before VBench filtering


@dataclass(frozen=True)
class SynthFlowConfig:
    batch_size: int = 8  # videos per task: minutes each at 720p, so small batches balance GPUs and resume finely
    synth: SynthConfig = field(default_factory=SynthConfig)
    runner: RunnerConfig = field(default_factory=lambda: RunnerConfig(kind="threads", workers=1))
    projection_count: int = PAPER_SYNTHETIC_VIDEOS  # videos the end report projects GPU-hours for


def synth_preset_settings(name: str) -> dict:
    """A generation preset as flow settings: its `SynthConfig` under `synth`, which records the preset's name."""
    return {"synth": {**load_preset(name), "preset": Path(name).stem}}


def synth_flow_config(preset: str | None = None, settings: Mapping[str, Any] | None = None) -> SynthFlowConfig:
    """The command's settings: a generation preset (`preset`, else `synth.preset`, else wan21-t2v-720p), then
    `settings` (YAML + flags) on top; the config records the preset's name."""
    settings = dict(settings or {})
    name = preset or (settings.get("synth") or {}).get("preset") or "wan21-t2v-720p"
    settings["synth"] = {**(settings.get("synth") or {}), "preset": Path(name).stem}
    return SYNTHESIS.config(name, settings)


def synth_gpus(config: SynthConfig) -> float:
    """GPUs a Wan worker needs by default: one, or none for a tiny model or a CPU device."""
    return 0 if config.device == "cpu" or parse_wan_spec(config.model).is_tiny else 1


def synth_figures(manifest: pa.Table, seconds: float, config: SynthFlowConfig, out: Path) -> dict:
    """Per-video time (from the videos' records: the manifest holds no clock values) and what the paper's 80,000
    videos would cost at it, one video at a time per GPU."""
    ok = manifest.filter(pc.equal(manifest["status"], OK))
    times = video_seconds(out, ok["video_path"].to_pylist())
    if not times:
        return {"videos": 0, "run_seconds": round(seconds, 2)}
    per_video = statistics.fmean(times)
    devices = sorted(set(ok["synth_device"].to_pylist()))
    on_gpu = any(d.startswith("cuda") for d in devices)
    plan = plan_synthesis(config.projection_count, 1, per_video)
    unit = "gpu" if on_gpu else "cpu"
    return {
        "videos": ok.num_rows,
        "seconds_per_video": float(f"{per_video:.4g}"),
        "videos_per_hour_per_worker": round(3600 / per_video, 1),
        "run_seconds": round(seconds, 2),
        f"projected_{unit}_hours_{config.projection_count}": plan.gpu_hours,
        "projection_basis": f"{config.synth.model} ({config.synth.preset}) on {', '.join(devices)}, "
                            "mean seconds per video of this manifest's videos, model load excluded",
    }


def run_synthesis(prompts: str, output: str, config: SynthFlowConfig, rank: int | None = None,
                  world_size: int | None = None) -> dict:
    prompts, output = task_paths(config.runner, prompts, output)
    prompts, output = open_flow_output_file(prompts), open_output(output)  # URLs: staged (`yume_core.remote`)
    out = Path(output)
    rank, world_size = resolve_rank(rank, world_size)
    table = check_prompts(read_prompts(prompts))
    inputs = fingerprint(table, fingerprint_settings(config.synth),
                         columns=("prompt_id", "caption", "image_path", "status"))
    plan = BatchPlan(out / "_work" / f"synth-{inputs}", config.batch_size, table.num_rows)
    plan.parts_dir.mkdir(parents=True, exist_ok=True)
    mine = rank_batches(plan.num_batches, rank, world_size)
    todo = [i for i in mine if not plan.done(i)]
    with task_runner(config.runner) as runner:
        started = time.perf_counter()
        _run_batches(table, plan, todo, out, config, runner)
        seconds = time.perf_counter() - started
    missing = [i for i in range(plan.num_batches) if not plan.done(i)]
    if missing:  # other ranks are still at work: the last one to finish merges
        own = summarize([read_manifest(plan.part(i)) for i in mine]) if mine else summarize(table.slice(0, 0))
        print(format_summary(own, f"synthesis rank {rank}/{world_size}") + f"\n  {len(missing)} batch(es) of other "
              "ranks still running; the last rank to finish writes manifest.parquet")
        finish_output(out)
        return {**own, "complete": False, "rank": rank, "world_size": world_size, "pending_batches": len(missing)}
    merged = read_parts(plan, table)
    write_manifest(merged, out / "manifest.parquet",
                   metadata={"yume_data.version": __version__, "yume_data.synthesis": inputs})
    summary = report(merged, out, title="synthesis", seconds=seconds, extra=synth_figures(merged, seconds, config, out))
    finish_output(out)
    return {**summary, "complete": True, "rank": rank, "world_size": world_size}


def _run_batches(table: pa.Table, plan: BatchPlan, todo: list[int], out: Path, config: SynthFlowConfig,
                 runner: Runner) -> None:
    """Batches as tasks on a local runner; on Ray, on restartable actors (`pipelines.ray_actors`: they keep their
    pipeline loaded between batches, where Ray would start a fresh process, and load the model again, for every GPU
    task, and a batch whose actor's node is lost is redone on another)."""
    batches = [{"batch": table.slice(i * plan.batch_size, plan.batch_size), "part": str(plan.part(i))} for i in todo]
    watch = synthesis_watch(config.synth)  # one for the run (on Ray: one per actor), its first videos
    step = functools.partial(generate_table, config=config.synth, out_dir=str(out), fail_fast=watch)
    resources = Resources(cpus=1, gpus=runner.gpus(synth_gpus(config.synth)))
    if batches:
        runner.require(resources, "synthesis")  # on Ray: stops before the progress bar when no node can take one
    with tqdm(total=len(batches), desc="synthesis", unit="batch", leave=False) as bar:
        if runner.on_ray:
            jobs = [(f"synth-{i:05d}", batch) for i, batch in zip(todo, batches)]
            run_on_actors(step, jobs, runner, resources, "synthesis", on_done=lambda: bar.update(1))
            return
        futures = [runner.submit(run_batch, {"step": step, **batch}, f"synth-{i:05d}")
                   for i, batch in zip(todo, batches)]
        for fut in as_completed(futures):
            fut.result()
            bar.update(1)


def _check_inputs(prompts: str, output: str, *args, config: SynthFlowConfig, **kwargs) -> None:
    """Settings the model cannot render, a file that holds no prompts and an unwritable output folder stop before a
    Prefect run starts."""
    check_against_model(config.synth)
    prompts_kind(prompts)
    check_writable(output)


SYNTHESIS = StageFlow("synthesize", SynthFlowConfig, synth_preset_settings, _check_inputs)


@flow(name="synthesize")
def synth_flow(prompts: str, output: str, config: dict | None = None, rank: int | None = None,
               world_size: int | None = None, preset: str | None = None) -> dict:
    """`preset` then `config` on top, as `yume-data synthesize --preset P --config FILE` (`pipelines.flows`)."""
    return run_synthesis(prompts, output, SYNTHESIS.config(preset, config), rank, world_size)


def run_synthesis_flow(prompts: str, output: str, config: SynthFlowConfig, rank: int | None = None,
                       world_size: int | None = None) -> dict:
    """The flow, after the checks that need no Prefect run."""
    return SYNTHESIS.launch(synth_flow, prompts, output, config=config, rank=rank, world_size=world_size)
