"""`yume-data`: one subcommand per flow.

Heavy imports (Prefect, PyAV) happen inside the commands that need them, so `yume-data actions` and `--help`
start fast. Settings come from a preset, then a YAML file (`--config`), then flags: later wins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

PRESETS_DIR = Path(__file__).parent / "presets"


def _prefect_env() -> None:
    # Embedded mode by default; no phoning home from batch jobs.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _settings(preset: str | None, config: str | None, overrides: dict) -> dict:
    from yume_core.config import load_yaml, merge

    data: dict = {}
    if preset:
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
            raise click.BadParameter(f"unknown preset {preset!r}; known: {known}", param_hint="--preset")
        data = load_yaml(path)
    if config:
        data = merge(data, load_yaml(config))
    return merge(data, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yume-data")
def main() -> None:
    """Build Yume-1.5-style world-model training data: actions, captions, synthesis, filtering, shards."""


def _quantize_options(f):
    f = click.option("--rotation-threshold", type=float, help="Radians per stride step (default 1e-3).")(f)
    f = click.option("--translation-threshold", type=float, help="Per stride step (default 1e-4).")(f)
    f = click.option("--stride", type=int, help="Use every N-th pose (default 1).")(f)
    return f


def _quantize_overrides(stride, translation_threshold, rotation_threshold) -> dict:
    return {"stride": stride, "translation_threshold": translation_threshold, "rotation_threshold": rotation_threshold}


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Parquet file to write.")
@_quantize_options
@click.option("--workers", type=int, default=None, help="Threads for reading files (default: CPU count).")
def actions(paths, output, stride, translation_threshold, rotation_threshold, workers):
    """Quantize camera trajectories (.npy (N,4,4) or Sekai .npz) into keyboard/mouse labels, one row per file."""
    import quantize_actions
    from yume_core.config import from_dict, merge
    from yume_core.manifest import format_summary, summarize, write_manifest

    overrides = _quantize_overrides(stride, translation_threshold, rotation_threshold)
    config = from_dict(quantize_actions.QuantizeConfig, merge({}, overrides), "actions")
    table = quantize_actions.quantize_files(list(paths), config, workers=workers)
    write_manifest(table, output)
    click.echo(format_summary(summarize(table), f"actions -> {output}"), err=True)


def _real_world_overrides(batch_size, workers, task_runner, ray_address, stride, tt, rt, shard_count, shard_bytes, no_poses, fps, size):
    return {
        "batch_size": batch_size,
        "runner": {"kind": task_runner, "workers": workers, "ray_address": ray_address},
        "actions": _quantize_overrides(stride, tt, rt),
        "shards": {
            "max_count": shard_count,
            "max_bytes": shard_bytes,
            "include_poses": False if no_poses else None,
            "fps": fps,
            "size": list(size) if size else None,
        },
    }


@main.command("real-world")
@click.option("--csv", "csv_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Sekai annotation CSV.")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of the CSV's mp4s.")
@click.option("--trajectories", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of camera .npz files.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--preset", help="Named settings: demo or yume15.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="YAML settings file.")
@click.option("--batch-size", type=int, help="Rows per task (default 256).")
@click.option("--workers", type=int, help="Parallel tasks (default: CPU count).")
@click.option("--task-runner", type=click.Choice(["threads", "processes", "ray"]), help="Where tasks run.")
@click.option("--ray-address", help="Ray cluster to join (with --task-runner ray).")
@_quantize_options
@click.option("--shard-max-count", type=int, help="Samples per shard at most.")
@click.option("--shard-max-bytes", type=int, help="Bytes per shard at most.")
@click.option("--no-poses", is_flag=True, help="Leave the poses (.npy) out of the shards.")
@click.option("--fps", type=float, help="Transcode clips to this frame rate in the shards.")
@click.option("--size", type=(int, int), help="Transcode clips to WIDTH HEIGHT in the shards.")
def real_world(csv_path, videos, trajectories, output, preset, config, batch_size, workers, task_runner, ray_address,
               stride, translation_threshold, rotation_threshold, shard_max_count, shard_max_bytes, no_poses, fps, size):
    """Sekai clips -> actions -> WebDataset shards, as a resumable Prefect flow."""
    _prefect_env()
    from pipelines.real_world import RealWorldConfig, run_flow
    from yume_core.config import from_dict

    overrides = _real_world_overrides(batch_size, workers, task_runner, ray_address, stride, translation_threshold,
                                      rotation_threshold, shard_max_count, shard_max_bytes, no_poses, fps, size)
    cfg = from_dict(RealWorldConfig, _settings(preset, config, overrides))
    summary = run_flow(csv_path, videos, trajectories, output, cfg)
    _print_outputs(summary)


def _print_outputs(summary: dict) -> None:
    for name, path in summary["outputs"].items():
        click.echo(f"{name:>18}: {path}")


@main.group("shards")
def shards_group():
    """Write and check WebDataset shards."""


@shards_group.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--decode", is_flag=True, help="Also open every mp4 and check its frames, fps and size.")
def shards_verify(directory, decode):
    """Re-read every sample of every shard and check it against the index."""
    import shards

    rep = shards.verify_shards(directory, decode=decode)
    click.echo(shards.format_report(rep))
    sys.exit(0 if rep.ok else 1)


@shards_group.command("write")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False))
@click.option("--shard-max-count", type=int)
@click.option("--shard-max-bytes", type=int)
@click.option("--no-poses", is_flag=True)
@click.option("--fps", type=float)
@click.option("--size", type=(int, int))
def shards_write(manifest, output, shard_max_count, shard_max_bytes, no_poses, fps, size):
    """Write shards for the ok rows of a manifest (without running a flow)."""
    import shards
    from yume_core.config import from_dict
    from yume_core.manifest import read_manifest

    overrides = _real_world_overrides(None, None, None, None, None, None, None, shard_max_count, shard_max_bytes,
                                      no_poses, fps, size)["shards"]
    cfg = from_dict(shards.ShardConfig, {k: v for k, v in overrides.items() if v is not None}, "shards")
    index = shards.write_shards(read_manifest(manifest), output, cfg)
    click.echo(f"{index.num_rows} samples in {len(set(index['shard'].to_pylist()))} shards under {output}")


@main.command("export-yume")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False))
def export_yume(manifest, output):
    """Write action segments in the folder layout Yume's trainer reads (Keys_*_Mouse_*/<stem>_frames_a-b.*)."""
    import shards
    from yume_core.manifest import format_summary, read_manifest, summarize

    written = shards.export_yume(read_manifest(manifest), output)
    click.echo(format_summary(summarize(written), f"export-yume -> {output}"))


@main.command()
@click.option("--output", "-o", default="yume-data-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--clips", default=8, show_default=True, help="Good clips to generate (plus a few broken ones).")
@click.option("--frames", default=150, show_default=True, help="Frames per clip (30 fps).")
def demo(output, clips, frames):
    """Generate a small Sekai-format sample and run the real-world flow on it, offline, on CPU."""
    _prefect_env()
    from pipelines.demo import run_demo

    run_demo(Path(output), clips=clips, frames=frames)


if __name__ == "__main__":
    main()
