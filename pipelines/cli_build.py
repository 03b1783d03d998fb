"""`yume-data build` (the whole mixture, one resumable flow) and `yume-data demo` (its tiny offline preset, then a
short training run on the mixture and an inference check of both tasks)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines.cli_common import prefect_env, runner_options, runner_overrides
from pipelines.cli_paths import PathOrURL, storage_options

RUNNER_SECTIONS = ("real_world", "synthetic", "filter", "event")  # the stages that run tasks: each has a `runner`


@click.command("build")
@click.option("--output", "-o", required=True, type=PathOrURL(file_okay=False),
              help="Build folder (resumable), or a URL (s3://bucket/prefix) written through a local staging folder.")
@storage_options
@click.option("--preset", help="demo (tiny, CPU, offline, minutes), yume15 (the paper's sizes) or a YAML file.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="YAML settings on top of the preset: inputs, real_world, prompts, synthetic, filter, "
                   "event_images, event, review, screening, shards, mixture, build_time.")
@click.option("--decisions", type=click.Path(exists=True, dir_okay=False),
              help="Screening decisions of the event set (the CSV the review pages download).")
@click.option("--accept-all", is_flag=True, help="Keep every event video without screening (the card says so).")
@click.option("--event-tasks", help="Tasks of the event set: t2v,i2v (default) or t2v (\"exclusively T2V\").")
@click.option("--build-time", help="The one time written into outputs (ISO 8601 or epoch seconds; default "
                                   "SOURCE_DATE_EPOCH, else 1970-01-01).")
@runner_options(workers="each stage's own")
def build(output, preset, config, decisions, accept_all, event_tasks, build_time, task_runner, workers, ray_address):
    """Build the training mixture: real-world, synthetic and event sets as shards, mixture.yaml, data card.

    A rerun skips every step whose inputs and settings are unchanged. With screening by decisions and none given,
    the build stops after writing the review pages (exit 3) and says how to resume. The runner options set the
    runner of every stage (real_world, synthetic, filter, event); a stage's `runner` section in --config sets its
    own, and its GPUs per Ray worker (`gpus_per_worker`), which differ by stage."""
    prefect_env()
    record = run_build_command(output, preset, config, decisions=decisions, accept_all=accept_all,
                               event_tasks=event_tasks, build_time=build_time,
                               runner=runner_overrides(task_runner, workers, ray_address))
    if "waiting" in record:
        from pipelines.build import EXIT_WAITING

        click.echo(f"\npaused: {record['waiting']}", err=True)
        sys.exit(EXIT_WAITING)


def run_build_command(output, preset, config, decisions=None, accept_all=False, event_tasks=None,
                      build_time=None, runner: dict | None = None) -> dict:
    """`runner`: settings of every stage's runner (None values: not given)."""
    from pipelines.build import build_config, run_build_flow
    from yume_core.config import load_yaml, merge

    if decisions and accept_all:
        raise click.BadParameter("give --decisions or --accept-all, not both", param_hint="--accept-all")
    overrides: dict = {"build_time": build_time, **{section: {"runner": runner} for section in RUNNER_SECTIONS}}
    if decisions:
        overrides["screening"] = {"policy": "decisions", "decisions": str(Path(decisions).resolve())}
    if accept_all:
        overrides["screening"] = {"policy": "accept_all"}
    if event_tasks:
        overrides["mixture"] = {"event_tasks": [t.strip() for t in event_tasks.split(",") if t.strip()]}
    cfg = build_config(preset, merge(load_yaml(config) if config else {}, overrides))
    return run_build_flow(output, cfg, preset)
