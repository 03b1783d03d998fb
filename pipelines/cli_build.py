"""`yume-data build` (the whole mixture, one resumable flow) and `yume-data demo` (its tiny offline preset, then a
short training run on the mixture and an inference check of both tasks)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines.cli_common import prefect_env, runner_options, runner_overrides
from pipelines.cli_paths import PathOrURL, storage_options

@click.command("build")
@click.option("--output", "-o", required=True, type=PathOrURL(file_okay=False),
              help="Build folder (resumable), or a URL (s3://bucket/prefix) written through a local staging folder.")
@storage_options
@click.option("--preset", help="demo (tiny, CPU, offline, minutes), yume15 (the paper's sizes) or a YAML file.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="YAML settings on top of the preset: sets (each: recipe, inputs, its stage sections, tasks, "
                   "weight), generate, build_time.")
@click.option("--decisions", type=click.Path(exists=True, dir_okay=False),
              help="Screening decisions of the screened (i2v_event) set (the CSV the review pages download).")
@click.option("--text-decisions", type=click.Path(exists=True, dir_okay=False),
              help="Text review decisions of a set whose events were drafted (the CSV its text review pages "
                   "download; edited texts replace the drafted ones).")
@click.option("--accept-all", is_flag=True, help="Keep every event video (and drafted text) without screening (the "
                                                 "card says so).")
@click.option("--event-tasks", help="Tasks of the i2v_event sets: t2v,i2v (default) or t2v (\"exclusively T2V\").")
@click.option("--build-time", help="The one time written into outputs (ISO 8601 or epoch seconds; default "
                                   "SOURCE_DATE_EPOCH, else 1970-01-01).")
@runner_options(workers="each stage's own")
def build(output, preset, config, decisions, text_decisions, accept_all, event_tasks, build_time, task_runner,
          workers, ray_address):
    """Build the training mixture: every set of the config as shards, mixture.yaml, data card.

    A rerun skips every step whose inputs and settings are unchanged. With screening by decisions and none given,
    the build stops after writing the review pages (exit 3) and says how to resume. The runner options set the
    runner of every stage that runs tasks, in every set; a stage's `runner` section in --config sets its own, and
    its GPUs per Ray worker (`gpus_per_worker`), which differ by stage."""
    prefect_env()
    record = run_build_command(output, preset, config, decisions=decisions, text_decisions=text_decisions,
                               accept_all=accept_all,
                               event_tasks=event_tasks, build_time=build_time,
                               runner=runner_overrides(task_runner, workers, ray_address))
    if "waiting" in record:
        from pipelines.build import EXIT_WAITING

        click.echo(f"\npaused: {record['waiting']}", err=True)
        sys.exit(EXIT_WAITING)


def run_build_command(output, preset, config, decisions=None, accept_all=False, event_tasks=None,
                      build_time=None, runner: dict | None = None, text_decisions=None) -> dict:
    """`runner`: settings of every stage's runner (None values: not given)."""
    from pipelines.build import run_build_flow
    from pipelines.build_config import build_config, cli_overrides, merge_settings
    from pipelines.cli_common import read_config

    if (decisions or text_decisions) and accept_all:
        raise click.BadParameter("give --decisions / --text-decisions or --accept-all, not both",
                                 param_hint="--accept-all")
    screening = {"policy": "decisions", "decisions": str(Path(decisions).resolve())} if decisions else \
        {"policy": "accept_all"} if accept_all else None
    text_review = {"policy": "decisions", "decisions": str(Path(text_decisions).resolve())} if text_decisions else \
        {"policy": "accept_all"} if accept_all else None
    tasks = [t.strip() for t in event_tasks.split(",") if t.strip()] if event_tasks else None
    data = read_config(config) if config else {}
    flags = cli_overrides(data, preset, runner if runner and any(v is not None for v in runner.values()) else None,
                          screening, tasks, text_review)
    settings = merge_settings(data, {"build_time": build_time, **flags})
    base = str(Path(config).resolve().parent) if config else None
    return run_build_flow(output, build_config(preset, settings, base), preset)
