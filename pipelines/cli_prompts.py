"""`yume-data select-prompts` and `yume-data event-images`: the inputs of synthesis.

Both are plain functions over files (no Prefect flow): selection is one vectorised pass over the whole CSV (it has
to see every caption to find duplicates), and event images are thousands, decoded on a thread pool.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.cli_common import read_config


@click.command("select-prompts")
@click.option("--csv", "csv_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="OpenVid-1M caption CSV.")
@click.option("--count", type=int, help="Prompts to select (default 80000).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Parquet of the selected prompts; <name>.rows.parquet and <name>.report.json go beside it.")
@click.option("--seed", type=int, help="Seed of the random sample, default 0 (dedup does not depend on it).")
@click.option("--method", type=click.Choice(["minhash", "embedding"]),
              help="minhash (default): word-shingle Jaccard, offline. embedding: cosine of sentence embeddings.")
@click.option("--threshold", type=float,
              help="Duplicate when similarity >= this (default: Jaccard 0.7 for minhash, cosine 0.9 for embedding).")
@click.option("--model", help="Sentence-embedding model for --method embedding: hub id, directory or tiny-random "
              "(default sentence-transformers/all-MiniLM-L6-v2).")
@click.option("--shingle", type=int, help="Words per shingle for minhash (default 3).")
@click.option("--batch-size", type=int, help="Captions per encoder batch for embedding (default 256).")
@click.option("--device", help="Encoder device for embedding (default: cuda if available).")
@click.option("--examples", type=int, help="Duplicate pairs to show (default 5).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="YAML with SelectConfig settings (count, seed, method, minhash: {...}, embedding: {...}).")
def select_prompts(csv_path, count, output, seed, method, threshold, model, shingle, batch_size, device, examples,
                   config):
    """Pick --count diverse captions from OpenVid-1M: drop near-duplicates, then sample at random with --seed."""
    from synthesis.select import SelectConfig, format_report, select_prompts_csv
    from yume_core.config import from_dict, merge
    from yume_core.errors import InputError
    from yume_core.storage import check_writable

    base = read_config(config) if config else {}
    chosen = method or base.get("method") or SelectConfig.method
    overrides = {
        "count": count, "seed": seed, "method": method, "examples": examples,
        "minhash": {"shingle": shingle, "threshold": threshold if chosen == "minhash" else None},
        "embedding": {"model": model, "batch_size": batch_size, "device": device,
                      "threshold": threshold if chosen == "embedding" else None},
    }
    cfg = from_dict(SelectConfig, merge(base, overrides), "select-prompts")
    check_writable(output.parent)
    try:
        report = select_prompts_csv(csv_path, output, cfg, progress=True)
    except InputError:
        raise  # not an OpenVid CSV: one line, exit 2
    except ValueError as exc:  # an embedding model that does not load
        raise click.ClickException(str(exc)) from None
    click.echo(format_report(report), err=True)
    for name, path in report["outputs"].items():
        click.echo(f"{name:>8}: {path}")


@click.command("event-images")
@click.option("--csv", "csv_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Sekai annotation CSV.")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of the clips.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--per-clip", default=1, show_default=True, help="Frames per clip (the first after the skip, or N spread).")
@click.option("--size", type=(int, int), default=(1280, 720), show_default=True, help="WIDTH HEIGHT of the images.")
@click.option("--skip-seconds", default=0.0, show_default=True, help="Skip this much of each clip's start.")
@click.option("--format", "fmt", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True)
@click.option("--workers", default=4, show_default=True, help="Clips decoded at once.")
def event_images(csv_path, videos, output, per_clip, size, skip_seconds, fmt, workers):
    """First-person start frames from Sekai clips, a manifest, and an event-set template to fill in."""
    from synthesis.event_images import EventImageConfig
    from synthesis.event_images import event_images as run
    from yume_core.manifest import format_summary
    from yume_core.storage import check_writable

    cfg = EventImageConfig(per_clip=per_clip, size=tuple(size), skip_seconds=skip_seconds, format=fmt,
                           workers=workers)
    check_writable(output)
    summary = run(csv_path, videos, output, cfg, progress=True)  # a CSV that is not Sekai's: one line, exit 2
    click.echo(format_summary(summary, f"event-images -> {output}"), err=True)
    click.echo(json.dumps(summary["outputs"], indent=2))
    click.echo("next: write category and description for each line of the template, then "
               f"`yume-data synthesize --prompts {summary['outputs']['template']}`", err=True)
