"""`yume-data embed-actions`: the action-phrase cache the trainer reads instead of encoding actions per sample."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("embed-actions")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="safetensors file to write (atomically).")
@click.option("--encoder", default="tiny-random", show_default=True,
              help="Text encoder: tiny-random[:seed], a hub id (google/umt5-xxl, a Wan -Diffusers repo) or a directory.")
@click.option("--vocabulary", default="yume15", show_default=True, help="Packaged vocabulary name or a YAML file.")
@click.option("--max-length", type=click.IntRange(min=1),
              help="Tokens per phrase, at most; a longer phrase is an error (default: the longest phrase's length).")
@click.option("--device", default="cpu", show_default=True)
def embed_actions(output, encoder, vocabulary, max_length, device):
    """Encode every action phrase of a vocabulary once into a safetensors file keyed by phrase."""
    from training_stub.text import ActionCache
    from training_stub.text import embed_actions as write_cache
    from yume_core.config import ConfigError

    try:
        path = write_cache(output, encoder, vocabulary, max_length=max_length, device=device)
    except ConfigError:
        raise  # a bad vocabulary file (read before any model loads): one line, exit 2
    except ValueError as e:  # a malformed model spec, a non-T5 model or a phrase over --max-length
        raise click.ClickException(str(e)) from None
    cache = ActionCache.load(path)
    click.echo(f"{len(cache)} action phrases of vocabulary {vocabulary!r}, encoder {encoder} (dim {cache.dim}, "
               f"at most {cache.metadata['max_length']} tokens) -> {path}")
