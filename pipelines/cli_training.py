"""`yume-data train` and `yume-data infer-check`: the TSCM training stub on shards, and its rollout check."""

from __future__ import annotations

import sys
from pathlib import Path

import click

# A walk that exercises every kind of action: forward, strafes, turns, tilts, standing still, backing up.
DEFAULT_ACTIONS = "W,W,W+D,W→,W,·←,W+A,A,W,·↑,W,S,W↓,D,W←,W"
MOUSE_CHARS = "→←↑↓"


def parse_actions(spec: str) -> list[tuple[str, str]]:
    """"W,W+A,·→" (or a file of such items, comma- or line-separated) -> [(keys, mouse), ...].

    An item is keys then mouse: "W+A" (mouse still), "·→" or "→" (keys still), "W↑←"; "·" alone is standing still."""
    path = Path(spec)
    if "," not in spec and path.is_file():
        spec = path.read_text(encoding="utf-8")
    items = [s.strip() for s in spec.replace("\n", ",").split(",") if s.strip()]
    if not items:
        raise click.BadParameter("no actions given", param_hint="--actions")
    out = []
    for item in items:
        keys = item.rstrip(MOUSE_CHARS)
        mouse = item[len(keys):] or "·"
        out.append((keys if keys not in ("", "·") else "None", mouse))
    return out


@click.command("train")
@click.option("--shards", required=True, type=click.Path(exists=True), help="Folder of WebDataset shards (*.tar).")
@click.option("--config", "config_name", default="cpu", show_default=True,
              help="Preset (cpu, big) or a YAML file merged over one (`preset: big` at its top; default cpu).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: checkpoints/, loss.jsonl, loss.png, the action cache.")
@click.option("--steps", type=click.IntRange(min=1), help="Train until this many optimiser steps (default: config).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the newest checkpoint under --output when there is one.")
@click.option("--action-cache", type=click.Path(exists=True, dir_okay=False),
              help="Action-phrase cache (yume-data embed-actions); default: computed into --output when absent.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
def train(shards, config_name, output, steps, resume, action_cache, device):
    """Train the TSCM DiT stub (rectified flow over latent chunks) on shards; resumable."""
    from training_stub.config import load_config
    from training_stub.train import train as run_train
    from yume_core.config import ConfigError

    try:
        config = load_config(config_name)
    except (ConfigError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="--config") from None
    summary = run_train(shards, config, output, steps=steps, resume=resume, action_cache=action_cache,
                        device=device, log=lambda m: click.echo(m, err=True))
    click.echo(
        f"{summary['steps']} steps in {summary['elapsed_s'] / 60:.1f} min; loss {summary['loss_start']:.4f} -> "
        f"{summary['loss_end']:.4f} (means of the first and last {summary['mean_over_steps']} steps)\n"
        f"checkpoint: {summary['checkpoint']}\nloss curve: {Path(output) / 'loss.png'}"
    )


@click.command("infer-check")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
              help="A checkpoint folder or a training run's --output (its newest checkpoint).")
@click.option("--chunks", "-k", default=32, show_default=True, type=click.IntRange(min=1), help="Chunks to generate.")
@click.option("--steps", type=click.IntRange(min=1), help="Euler steps per chunk (default: the config's sample_steps).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Where the JSON, plot and video go (default: <run>/infer-check).")
@click.option("--modes", default="tscm,full,sliding", show_default=True, help="History modes to roll out.")
@click.option("--start-image", type=click.Path(exists=True, dir_okay=False), help="Start frame (any image).")
@click.option("--shards", type=click.Path(exists=True),
              help="Take the start frame from these shards' first clip (default: the training shards, if present).")
@click.option("--actions", default=DEFAULT_ACTIONS, show_default=True,
              help="Keyboard/mouse actions, one per chunk, cycled: 'W,W+A,·→,...' or a file of them.")
@click.option("--prompt", default="", help="Event text for every chunk (default: none, actions only).")
@click.option("--flat-from", default=8, show_default=True, help="First chunk of the flatness window.")
@click.option("--flat-to", default=32, show_default=True, help="Last chunk of the flatness window.")
@click.option("--repeats", default=2, show_default=True,
              help="Passes re-timing one step of every chunk after the rollout, in shuffled order (less noise).")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", default=1, show_default=True,
              help="Intra-op CPU threads (0: PyTorch's default). With several, a small model's timings measure mostly "
                   "their synchronisation, which a busy machine makes erratic.")
@click.option("--seed", default=0, show_default=True)
def infer_check(checkpoint, chunks, steps, output, modes, start_image, shards, actions, prompt, flat_from, flat_to,
                repeats, device, threads, seed):
    """Roll out K chunks per history mode; pass when TSCM's per-chunk time is flat while full context grows."""
    import quantize_actions
    from training_stub.config import MODES
    from training_stub.infer_check import load_trained, run_check, start_latent
    from training_stub.train import TextSide, resolve_device

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = sorted(set(mode_list) - set(MODES))
    if unknown:
        raise click.BadParameter(f"unknown mode(s) {unknown}; known: {list(MODES)}", param_hint="--modes")
    import torch

    dev = resolve_device(device)
    if dev.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
    model, config, folder, state = load_trained(checkpoint, dev)
    run_dir = folder.parent.parent
    cache_path = Path(state.get("action_cache") or "action_cache.safetensors")
    if not cache_path.is_absolute():
        cache_path = run_dir / cache_path
    text = TextSide(config.text_encoder, config.text_max_length, cache_path)
    vocabulary = quantize_actions.load_vocabulary(text.actions.metadata.get("vocabulary", "yume15"))
    try:
        phrases = [vocabulary.phrase(k, m) for k, m in parse_actions(actions)]
    except quantize_actions.VocabularyError as e:
        raise click.BadParameter(str(e), param_hint="--actions") from None
    contexts = [text.context(prompt, [p]) for p in phrases]
    if shards is None and start_image is None and state.get("shards") and Path(state["shards"]).exists():
        shards = state["shards"]
    start, source = start_latent(config.data.latents, start_image, shards, config.data)
    click.echo(f"checkpoint {folder} (step {state['step']}); start: {source}; {len(phrases)} actions cycled", err=True)
    report = run_check(
        model, start, contexts, output or run_dir / "infer-check", chunks, config.data.chunk_latents,
        steps or config.sample_steps, mode_list, first=flat_from, last=min(flat_to, chunks),
        decode=config.data.latents.decode, seed=seed, repeats=repeats, log=lambda m: click.echo(m, err=True),
    )
    verdict = report["verdict"]
    out = output or run_dir / "infer-check"
    first, last = verdict["window"]
    for mode, change in verdict["change"].items():
        click.echo(f"{mode:>8}: per-chunk time {100 * change:+.1f}% over chunks {first}..{last} (fit), "
                   f"last/first {verdict['growth'][mode]:.2f}x")
    click.echo(f"report: {out / 'infer_check.json'}, plot: {out / 'infer_check.png'}")
    if not verdict["passed"]:
        for reason in verdict["reasons"]:
            click.echo(f"FAIL: {reason}", err=True)
        sys.exit(1)
    click.echo("PASS: TSCM's per-chunk time stays flat while full context grows")
