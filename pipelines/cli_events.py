"""`yume-data draft-events`: a VLM drafts the event set's texts from start images (a resumable Prefect flow)."""

from __future__ import annotations

import click

from pipelines.cli_common import prefect_env, print_outputs, settings


@click.command("draft-events")
@click.option("--images", required=True, type=click.Path(exists=True),
              help="Start images: the manifest.parquet of yume-data event-images, or a folder of .jpg/.png files.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Output folder: events.jsonl (the event set), manifest.parquet (every image x category), "
                   "summary.json.")
@click.option("--categories", help="Comma-separated categories to draft (default: every category of the file).")
@click.option("--category-file",
              help="Categories YAML (name, guidance, examples, keywords per category; default categories-v1: "
                   "urban_daily_life, sci_fi, fantasy, weather).")
@click.option("--per-category", type=int, help="Keep at most N events per category.")
@click.option("--count", type=int, help="Keep N events in all, split by the categories' shares (instead of "
                                         "--per-category).")
@click.option("--backend", type=click.Choice(["openai", "vllm", "transformers"]), help="Default: transformers.")
@click.option("--endpoint", "endpoints", multiple=True, help="OpenAI-compatible server URL (repeat for replicas).")
@click.option("--model", help="Served model name (openai), hub id or path (vllm, transformers), or tiny-random.")
@click.option("--concurrency", type=int, help="Requests in flight over all endpoints (openai).")
@click.option("--prompt", help="Drafting prompt version or YAML file (default draft-v1).")
@click.option("--max-tokens", type=int, help="Longest answer in tokens (default 96).")
@click.option("--seed", type=int, help="Base seed; each image and category draws its own from it (default 0).")
@click.option("--batch-size", type=int, help="Image x category rows per task (default 64).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="YAML settings: vlm (the backend, prompt, categories, check), categories, per_category, count, "
                   "dedup, min_side, batch_size, runner.")
def draft_events(images, output, categories, category_file, per_category, count, backend, endpoints, model,
                 concurrency, prompt, max_tokens, seed, batch_size, config):
    """Draft events for start images with a VLM: one per image and category, checked, deduplicated, balanced.

    A rerun sends no request for rows already drafted and writes the same bytes."""
    prefect_env()
    from pipelines.drafting import DraftFlowConfig, run_draft_events_flow
    from yume_core.config import from_dict

    overrides = {
        "categories": [c.strip() for c in categories.split(",") if c.strip()] if categories else None,
        "per_category": per_category, "count": count, "batch_size": batch_size,
        "vlm": {"backend": backend, "endpoints": list(endpoints) or None, "model": model,
                  "concurrency": concurrency, "prompt": prompt, "max_tokens": max_tokens, "seed": seed,
                  "categories": category_file},
    }
    cfg = from_dict(DraftFlowConfig, settings(None, config, overrides))
    summary = run_draft_events_flow(images, output, cfg)
    for cat, row in summary["draft-events"]["by_category"].items():
        click.echo(f"{cat:>18}: asked {row['asked']}, written {row['written']}"
                   + (f" ({row['short']} short)" if row["short"] else ""))
    print_outputs(summary)
