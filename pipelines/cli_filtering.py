"""`yume-data filter` (VBench scores, top N), `yume-data prescreen` (event videos scored against their texts, best
first) and `yume-data review make|apply` (manual screening of the event set).

Settings for `filter`: a preset (`--preset`: yume15, native, tiny, or a YAML file), then `--config`, then flags.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli_common import prefect_env, print_outputs, read_config, runner_options, runner_overrides
from pipelines.cli_paths import PathOrURL, storage_options

DIMENSIONS = ("subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
              "dynamic_degree", "aesthetic_quality", "imaging_quality")  # filtering.QUALITY_DIMENSIONS (tested equal)


@click.command("filter")
@click.option("--manifest", required=True, type=PathOrURL(exists=True, dir_okay=False),
              help="Synthesis manifest (manifest.parquet of `yume-data synthesize`).")
@storage_options
@click.option("--output", "-o", required=True, type=PathOrURL(file_okay=False),
              help="Output folder (not the synthesis folder).")
@click.option("--preset", help="yume15 (VBench, top 50,000), native, tiny, or a preset YAML file.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="YAML settings file.")
@click.option("--backend", type=click.Choice(["native", "vbench"]), help="Who computes the VBench dimensions.")
@click.option("--dimension", "dimensions", multiple=True, type=click.Choice(DIMENSIONS),
              help="A quality dimension to score (repeat the option; default: the preset's).")
@click.option("--keep", type=click.IntRange(min=0), help="Keep at most this many videos, the best first.")
@click.option("--keep-fraction", type=click.FloatRange(0, 1), help="Keep at most this share of the scored videos.")
@click.option("--min-score", type=float, help="Keep no video with a quality score below this.")
@click.option("--device", help="cpu or cuda[:N].")
@click.option("--dino-model", help="native: subject consistency model (default facebook/dino-vitb16).")
@click.option("--clip-model", help="native: background consistency model (default openai/clip-vit-base-patch32).")
@click.option("--aesthetic-model", help="native: aesthetic model (default openai/clip-vit-large-patch14).")
@click.option("--aesthetic-head", type=click.Path(exists=True, dir_okay=False),
              help="native: LAION's aesthetic head, sa_0_4_vit_l_14_linear.pth.")
@click.option("--max-frames", type=click.IntRange(min=2), help="native: score at most this many frames per video.")
@click.option("--vbench-python", help="vbench: the python of the environment VBench is installed in.")
@click.option("--vbench-cache", type=click.Path(file_okay=False), help="vbench: VBENCH_CACHE_DIR (model weights).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Videos per task (default 256).")
@runner_options(workers="1; one scorer each, at most one per GPU", gpus="1 on a cuda device, else 0",
                on_ray="the number of scoring actors, one scorer each (default: one per GPU share it asks for, "
                       "else one per node)")
def filter_videos(manifest, output, preset, config, backend, dimensions, keep, keep_fraction, min_score, device,
                  dino_model, clip_model, aesthetic_model, aesthetic_head, max_frames, vbench_python, vbench_cache,
                  batch_size, task_runner, workers, ray_address, gpus_per_worker):
    """Score every video with VBench's quality dimensions and keep the best (Yume-1.5: 50,000 of 80,000)."""
    prefect_env()
    from pipelines.filtering import FILTER, run_filter_flow
    from yume_core.config import merge

    overrides = {
        "batch_size": batch_size,
        "runner": runner_overrides(task_runner, workers, ray_address, gpus_per_worker),
        "score": {"backend": backend, "dimensions": list(dimensions) or None, "device": device,
                  "dino_model": dino_model, "clip_model": clip_model, "aesthetic_model": aesthetic_model,
                  "aesthetic_head": aesthetic_head, "max_frames": max_frames, "vbench_python": vbench_python,
                  "vbench_cache": vbench_cache},
        "top": {"keep": keep, "keep_fraction": keep_fraction, "min_score": min_score},
    }
    cfg = FILTER.config(preset, merge(read_config(config) if config else {}, overrides))
    print_outputs(run_filter_flow(manifest, output, cfg))


@click.command("prescreen")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Synthesis manifest of an event set (manifest.parquet of `yume-data synthesize` with I2V).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Output folder (not the synthesis folder): manifest.parquet with the scores, summary.json.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="YAML settings: clip_model, device, max_frames, weights, quality (the VBench scorer's settings, "
                   "as `filter`'s score section), with_quality, batch_size, auto_reject_below.")
@click.option("--clip-model", help="CLIP whose towers compare frames with the text and the start image (default "
                                   "openai/clip-vit-base-patch32; tiny-random offline).")
@click.option("--device", help="cpu or cuda[:N].")
@click.option("--max-frames", type=click.IntRange(min=1), help="Frames after the start frame compared (default 16).")
@click.option("--no-quality", is_flag=True, default=None, help="Leave the VBench quality score out of the mean.")
@click.option("--auto-reject-below", type=float,
              help="Drop videos scoring under this before anyone sees them (reason prescreen_rejected).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Videos per batch (default 64).")
def prescreen(manifest, output, config, clip_model, device, max_frames, no_quality, auto_reject_below, batch_size):
    """Score generated event videos for agreement with their event text and start image (and VBench quality), so
    `review make` on the output shows the likely keepers first."""
    prefect_env()
    from pipelines.prescreen import PRESCREEN, run_prescreen_flow
    from yume_core.config import merge

    overrides = {"clip_model": clip_model, "device": device, "max_frames": max_frames,
                 "with_quality": False if no_quality else None, "auto_reject_below": auto_reject_below,
                 "batch_size": batch_size}
    cfg = PRESCREEN.config(None, merge(read_config(config) if config else {}, overrides))
    print_outputs(run_prescreen_flow(manifest, output, cfg))


@click.group("review")
def review():
    """Manual review (the event set): pages to screen videos, or event texts before synthesis, in a browser; then
    apply the decisions."""


def _one_source(manifest, events) -> None:
    if bool(manifest) == bool(events):
        raise click.UsageError("give --manifest (a video manifest) or --events (an event set), one of them")


@review.command("make")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="Video manifest (of `synthesize` or `filter`; sorted best first when it has pre-screen scores).")
@click.option("--events", type=click.Path(exists=True, dir_okay=False),
              help="Or an event set (.jsonl/.csv, e.g. draft-events' events.jsonl): review its texts before synthesis.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the pages.")
@click.option("--page-size", default=200, show_default=True, type=click.IntRange(min=1), help="Cards per page.")
@click.option("--title", help="Title on the pages (default: the input's folder name).")
def review_make(manifest, events, output, page_size, title):
    """Write static review pages (open index.html; y/n keep or reject, e edits an event's text; download the
    decisions CSV)."""
    from filtering.review import make_review
    from yume_core.errors import InputError
    from yume_core.manifest import read_manifest
    from yume_core.storage import check_writable

    _one_source(manifest, events)
    check_writable(output)
    if events:
        from pipelines.event_review import make_event_review

        click.echo(f"review pages: {make_event_review(events, output, page_size=page_size, title=title)}")
        return
    source = Path(manifest)
    table = read_manifest(source)
    try:
        index = make_review(table, source.parent, output, page_size=page_size, title=title or source.parent.name)
    except ValueError as e:  # not a video manifest
        raise InputError(source, str(e)) from None
    click.echo(f"review pages: {index}")


@review.command("apply")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), help="Video manifest.")
@click.option("--events", type=click.Path(exists=True, dir_okay=False),
              help="Or an event set: writes OUTPUT/events.jsonl with the kept events and their edited texts.")
@click.option("--decisions", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Decisions (.csv key,decision,note,text as the pages export, or .jsonl).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Output folder (not the input's folder).")
@click.option("--unreviewed", type=click.Choice(["drop", "keep", "error"]), default="drop", show_default=True,
              help="What happens to videos (or events) nobody decided on.")
def review_apply(manifest, events, decisions, output, unreviewed):
    """Keep what people kept: rejected and unreviewed rows are dropped with a reason, nothing is lost; on an event
    set, edited texts replace the drafted ones."""
    from filtering.review import apply_review, read_decisions, read_text_edits, review_counts
    from pipelines.filtering import output_folder, relocated
    from pipelines.reporting import report
    from yume_core.manifest import read_manifest, write_manifest

    _one_source(manifest, events)
    if events:
        from pipelines.event_review import apply_event_review

        print_outputs(apply_event_review(events, read_decisions(decisions), read_text_edits(decisions), output,
                                         unreviewed=unreviewed, source=str(decisions)))
        return
    source = Path(manifest)
    out = output_folder(source, output)
    table = apply_review(read_manifest(source), read_decisions(decisions), unreviewed=unreviewed,
                         source=str(decisions))
    table = relocated(table, source.parent, out)
    write_manifest(table, out / "manifest.parquet")
    print_outputs(report(table, out, title="review", seconds=0.0, extra=review_counts(table)))
