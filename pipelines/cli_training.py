"""`yume-data train` and `yume-data infer-check`: the TSCM training stub on the mixture (or one shard folder), and
its rollout check in both tasks."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines.cli_paths import PathOrURL, storage_options

# A walk that exercises every kind of action: forward, strafes, turns, tilts, standing still, backing up (the same
# walk as training_stub.infer_check.DEFAULT_ACTIONS).
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
@storage_options
@click.option("--mixture", type=PathOrURL(exists=True, dir_okay=False),
              help="The mixture to train (OUT/mixture.yaml, an Energon metadataset of weighted sets).")
@click.option("--shards", type=PathOrURL(exists=True),
              help="One folder of WebDataset shards (*.tar) instead of a mixture.")
@click.option("--config", "config_name", default="cpu", show_default=True,
              help="Preset (cpu, big) or a YAML file merged over one (`preset: big` at its top; default cpu).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: checkpoints/, metrics.jsonl, loss.png, the action cache.")
@click.option("--steps", type=click.IntRange(min=1), help="Train until this many optimiser steps (default: config).")
@click.option("--schedule", help="Task of each step, cycled: 't2v,i2v' (the default: alternating), 't2v', ...")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the newest checkpoint under --output when there is one.")
@click.option("--action-cache", type=click.Path(exists=True, dir_okay=False),
              help="Action-phrase cache (yume-data embed-actions); default: computed into --output when absent.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="Intra-op CPU threads (0: PyTorch's default). The cpu preset's model is small: on a shared or "
                   "busy machine 1 is often fastest.")
def train(mixture, shards, config_name, output, steps, schedule, resume, action_cache, device, threads):
    """Train the TSCM DiT stub (rectified flow over latent chunks) on the mixture, T2V and I2V steps alternating;
    resumable."""
    from training_stub.config import load_config
    from training_stub.train import METRICS_LOG
    from training_stub.train import train as run_train
    from yume_core.config import ConfigError

    if (mixture is None) == (shards is None):
        raise click.UsageError("give --mixture (OUT/mixture.yaml) or --shards (one shard folder)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        config = load_config(config_name, {"schedule": schedule})
    except (ConfigError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="--config/--schedule") from None
    try:
        summary = run_train(shards, config, output, steps=steps, resume=resume, action_cache=action_cache,
                            device=device, log=lambda m: click.echo(m, err=True), mixture=mixture)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    lines = [f"{summary['steps']} steps in {summary['elapsed_s'] / 60:.1f} min; loss {summary['loss_start']:.4f} -> "
             f"{summary['loss_end']:.4f} (means of the first and last {summary['mean_over_steps']} steps)"]
    for task, t in summary["tasks"].items():
        lines.append(f"  {task}: {t['steps']} steps, loss {t['loss_start']:.4f} -> {t['loss_end']:.4f}")
    requested, expected = summary.get("requested") or {}, summary.get("expected") or {}
    for name, count in summary["windows_by_set"].items():
        want = (f", expected {100 * expected[name]:.0f}% for its weight {100 * requested[name]:.0f}%"
                if name in requested else "")
        lines.append(f"  set {name}: {count} windows ({100 * summary['realized'][name]:.0f}%{want})")
    lines += [f"checkpoint: {summary['checkpoint']}", f"metrics: {Path(output) / METRICS_LOG}",
              f"loss curve: {Path(output) / 'loss.png'}"]
    click.echo("\n".join(lines))


@click.command("infer-check")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
              help="A checkpoint folder or a training run's --output (its newest checkpoint).")
@click.option("--chunks", "-k", default=32, show_default=True, type=click.IntRange(min=1), help="Chunks to generate.")
@click.option("--steps", type=click.IntRange(min=1), help="Euler steps per chunk (default: the config's sample_steps).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Where the JSON, plot and video go (default: <run>/infer-check).")
@click.option("--modes", default="tscm,full,sliding", show_default=True, help="History modes to roll out.")
@click.option("--tasks", default="t2v,i2v", show_default=True,
              help="Tasks to roll out: t2v (from text alone), i2v (from the start frame).")
@click.option("--start-image", type=click.Path(exists=True, dir_okay=False), help="Start frame (any image).")
@click.option("--shards", type=PathOrURL(exists=True),
              help="Take the start frame from these shards' first clip (default: the training shards, if present).")
@click.option("--actions", default=DEFAULT_ACTIONS, show_default=True,
              help="Keyboard/mouse actions, one per chunk, cycled: 'W,W+A,·→,...' or a file of them.")
@click.option("--prompt", default="", help="Event text for every chunk (default: none, actions only).")
@click.option("--flat-from", default=8, show_default=True, help="First chunk of the flatness window.")
@click.option("--flat-to", default=32, show_default=True, help="Last chunk of the flatness window.")
@click.option("--repeats", default=2, show_default=True,
              help="Passes re-timing one step of every chunk after the rollout, in shuffled order (the plot's times).")
# 15 = training_stub.infer_check.PAIRS, written out so that the CLI starts without importing torch
@click.option("--pairs", "paired", default=15, show_default=True, type=click.IntRange(min=1),
              help="Back-to-back timings of a step of the first and the last chunk of the window (the verdict's).")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", default=1, show_default=True,
              help="Intra-op CPU threads (0: PyTorch's default). With several, a small model's timings measure mostly "
                   "their synchronisation, which a busy machine makes erratic.")
@click.option("--seed", default=0, show_default=True)
def infer_check(checkpoint, chunks, steps, output, modes, tasks, start_image, shards, actions, prompt, flat_from,
                flat_to, repeats, paired, device, threads, seed):
    """Roll out K chunks per task (T2V from text, I2V from a start frame) and history mode; pass when every rollout
    is finite and TSCM's history tokens and step time stay flat from the window's first chunk to its last while full
    context's step time grows, in every task."""
    from training_stub.config import MODES
    from training_stub.infer_check import TASKS, check_checkpoint
    from yume_core.actions import VocabularyError

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = sorted(set(mode_list) - set(MODES))
    if unknown or not mode_list:
        raise click.BadParameter(f"unknown mode(s) {unknown}; known: {list(MODES)}", param_hint="--modes")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    if not task_list or set(task_list) - set(TASKS):
        raise click.BadParameter(f"{tasks!r}: a comma-separated subset of t2v, i2v", param_hint="--tasks")
    pairs = parse_actions(actions)
    try:
        report = check_checkpoint(checkpoint, output, chunks, steps, mode_list, task_list, pairs, prompt, start_image,
                                  shards, flat_from, flat_to, repeats, device, threads, seed,
                                  log=lambda m: click.echo(m, err=True), paired=paired)
    except VocabularyError as e:
        raise click.BadParameter(str(e), param_hint="--actions") from None
    verdict = report["verdict"]
    out = Path(report["output"])
    first, last = verdict["window"]
    for task, part in report["tasks"].items():
        v = part["verdict"]
        for mode, ratio in v["ratio"].items():
            t0, t1 = v["tokens"][mode]
            click.echo(f"{task} {mode:>8}: step time chunk {last} / chunk {first} {ratio:.2f}x (median of "
                       f"{v['pairs'][mode]} pairs), history tokens {t0} -> {t1}")
        click.echo(f"{task}: {'pass' if v['passed'] else 'FAIL'}; video: {part['videos'].get('tscm', '-')}")
    click.echo(f"report: {out / 'infer_check.json'}, plot: {out / 'infer_check.png'}")
    if not verdict["passed"]:
        for reason in verdict["reasons"]:
            click.echo(f"FAIL: {reason}", err=True)
        sys.exit(1)
    click.echo(f"PASS ({', '.join(task_list)}): TSCM's history tokens and step time stay flat while full "
               "context's step time grows")
