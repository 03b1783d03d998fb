"""`yume-data synthesize` and `yume-data plan synth`: Wan video generation and its cost projection.

Settings: a generation preset (`--preset`, default wan21-t2v-720p), then a YAML file (`--config`, flow settings
with a `synth:` section), then flags; later wins. Heavy imports (torch, diffusers, Prefect) happen in the commands.
"""

from __future__ import annotations

import json

import click

from pipelines.cli_common import prefect_env, print_outputs, read_config, runner_options, runner_overrides
from pipelines.cli_paths import PathOrURL, storage_options

# synthesis.models.CACHE_KINDS (a test keeps them equal): importing the stage here would make every command's
# start-up depend on it
CACHE_KINDS = ("none", "first_block", "pab", "taylorseer")


def _generation_options(f):
    for decorator in reversed([
        click.option("--model", help="Hub id, checkpoint folder, or tiny-random[-t2v|-i2v-2.1|-i2v-2.2][:seed]."),
        click.option("--preset", help="wan21-t2v-720p (default), wan21-t2v-480p, wan22-i2v-720p, wan21-i2v-720p, "
                                      "tiny, or a preset YAML file."),
        click.option("--width", type=int, help="Video width (multiple of 16)."),
        click.option("--height", type=int, help="Video height (multiple of 16)."),
        click.option("--frames", "num_frames", type=int, help="Frames per video (4k+1, e.g. 81)."),
        click.option("--fps", type=float, help="Frame rate written to the mp4s."),
        click.option("--steps", type=int, help="Denoising steps."),
        click.option("--guidance", "guidance_scale", type=float, help="Classifier-free guidance scale."),
        click.option("--guidance-2", "guidance_scale_2", type=float, help="Guidance of Wan 2.2's low-noise expert."),
        click.option("--flow-shift", type=float, help="Scheduler flow shift (5.0 at 720p, 3.0 at 480p)."),
        click.option("--scheduler", type=click.Choice(["unipc", "euler"]), help="Flow-matching scheduler."),
        click.option("--negative-prompt", help="Negative prompt (default: Wan's own)."),
        click.option("--seed", type=int, help="Base seed; each video's seed hashes it with the prompt id."),
        click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]),
                     help="Precision: auto is bf16 on GPU, fp32 on CPU."),
        click.option("--device", help="auto (a free GPU, else CPU), cpu or cuda:N."),
        click.option("--cpu-offload/--no-cpu-offload", default=None, help="Keep components on the CPU until used."),
        click.option("--cache", "cache_kind", type=click.Choice(CACHE_KINDS),
                     help="diffusers cache hook on the transformer(s): faster, slightly less faithful."),
        click.option("--cache-threshold", type=float, help="first_block: reuse below this change (default 0.05)."),
    ]):
        f = decorator(f)
    return f


def _generation_overrides(model, width, height, num_frames, fps, steps, guidance_scale, guidance_scale_2, flow_shift,
                          scheduler, negative_prompt, seed, dtype, device, cpu_offload, cache_kind,
                          cache_threshold) -> dict:
    return {
        "model": model, "width": width, "height": height, "num_frames": num_frames, "fps": fps, "steps": steps,
        "guidance_scale": guidance_scale, "guidance_scale_2": guidance_scale_2, "flow_shift": flow_shift,
        "scheduler": scheduler, "negative_prompt": negative_prompt, "seed": seed, "dtype": dtype, "device": device,
        "cpu_offload": cpu_offload, "cache": {"kind": cache_kind, "threshold": cache_threshold},
    }


@click.command()
@click.option("--prompts", required=True, type=PathOrURL(exists=True, dir_okay=False),
              help="Prompts: .parquet (select-prompts output), .csv (OpenVid captions or an event set), .jsonl "
                   "(event set) or .txt (one prompt per line).")
@click.option("--output", "-o", required=True, type=PathOrURL(file_okay=False),
              help="Output folder, or a URL (s3://bucket/prefix) written through a local staging folder.")
@storage_options
@_generation_options
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="YAML settings file.")
@click.option("--batch-size", type=int, help="Videos per task (default 8).")
@runner_options(workers="1; one pipeline each, at most one per GPU", gpus="1, or 0 for a tiny model or --device cpu",
                on_ray="actors, one pipeline each (default: one per GPU the cluster has)")
@click.option("--rank", type=int, help="This process's rank (default: RANK or SLURM_PROCID, else 0).")
@click.option("--world-size", type=int, help="Number of ranks (default: WORLD_SIZE or SLURM_NTASKS, else 1).")
def synthesize(prompts, output, preset, config, batch_size, task_runner, workers, ray_address, gpus_per_worker, rank,
               world_size, **generation):
    """Generate one video per prompt with Wan (T2V, or I2V for rows with an image), resumable per video."""
    prefect_env()
    from pipelines.synthesis import run_synthesis_flow, synth_flow_config
    from yume_core.config import merge

    overrides = {
        "batch_size": batch_size,
        "runner": runner_overrides(task_runner, workers, ray_address, gpus_per_worker),
        "synth": _generation_overrides(**generation),
    }
    settings = merge(read_config(config) if config else {}, overrides)
    cfg = synth_flow_config(preset, settings)
    summary = run_synthesis_flow(prompts, output, cfg, rank=rank, world_size=world_size)
    if summary.get("complete"):
        print_outputs(summary)


@click.group("plan")
def plan():
    """Project what a run costs before starting it."""


@plan.command("synth")
@click.option("--count", default=80_000, show_default=True, help="Videos to generate.")
@click.option("--gpus", default=64, show_default=True, help="GPUs working in parallel, one pipeline each.")
@click.option("--seconds-per-video", type=float, help="Measured seconds per video on one GPU.")
@click.option("--load-seconds", type=float, default=0.0, show_default=True,
              help="Model load per GPU (with --seconds-per-video).")
@click.option("--calibrate", is_flag=True, help="Measure seconds per video here with --model/--preset instead.")
@click.option("--model", help="Model for --calibrate (default: the preset's).")
@click.option("--preset", help="Generation preset for --calibrate (default wan21-t2v-720p).")
@click.option("--calibrate-videos", default=2, show_default=True, help="Videos --calibrate makes (first is warm-up).")
@click.option("--device", help="Device for --calibrate: auto, cpu or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def plan_synth(count, gpus, seconds_per_video, load_seconds, calibrate, model, preset, calibrate_videos, device,
               as_json):
    """GPU-hours and wall-clock for COUNT videos on GPUS GPUs, from a given or measured per-video time."""
    from synthesis.planning import format_plan, plan_synthesis

    if calibrate == (seconds_per_video is not None):
        raise click.UsageError("give exactly one of --seconds-per-video S or --calibrate")
    calibration = None
    if calibrate:
        from synthesis.planning import calibrate as measure
        from synthesis.presets import synth_config

        calibration = measure(synth_config(preset, {"model": model, "device": device}), videos=calibrate_videos)
        seconds_per_video, load_seconds = calibration["seconds_per_video"], calibration["load_seconds"]
        basis = (f"measured here: {calibration['model']} ({calibration['preset']}, {calibration['size']}, "
                 f"{calibration['frames']} frames, {calibration['steps']} steps) on {calibration['device']}")
    else:
        basis = "given"
    try:
        result = plan_synthesis(count, gpus, seconds_per_video, load_seconds, basis)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if as_json:
        click.echo(json.dumps({"plan": result.as_dict(), "calibration": calibration}, indent=2, ensure_ascii=False))
        return
    if calibration:
        click.echo(f"calibration: load {calibration['load_seconds']} s, videos {calibration['video_seconds']} s")
    click.echo(format_plan(result))
