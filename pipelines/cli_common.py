"""What every `yume-data` subcommand shares: the environment Prefect runs in, settings from preset + file + flags,
the printed outputs, and the one way a command fails on bad input.

Subcommand modules import this module, never `pipelines.cli` (which imports them to build the group), so the CLI
has no import cycle.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

PRESETS_DIR = Path(__file__).parent / "presets"


def prefect_env() -> None:
    """Embedded mode by default; no phoning home from batch jobs."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def settings(preset: str | None, config: str | None, overrides: dict, presets_dir: Path = PRESETS_DIR) -> dict:
    """A preset, then a YAML file, then flags: later wins (None in `overrides` means "not given")."""
    from yume_core.config import load_yaml, merge

    data: dict = {}
    if preset:
        path = presets_dir / f"{preset}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in presets_dir.glob("*.yaml"))
            raise click.BadParameter(f"unknown preset {preset!r}; known: {known}", param_hint="--preset")
        data = load_yaml(path)
    if config:
        data = merge(data, load_yaml(config))
    return merge(data, overrides)


def print_outputs(summary: dict) -> None:
    for name, path in summary["outputs"].items():
        click.echo(f"{name:>18}: {path}")


def shard_overrides(shard_count, shard_bytes, no_poses, fps, size) -> dict:
    return {
        "max_count": shard_count,
        "max_bytes": shard_bytes,
        "include_poses": False if no_poses else None,
        "fps": fps,
        "size": list(size) if size else None,
    }


class InputErrorGroup(click.Group):
    """Runs a subcommand; a bad input file or setting (yume_core.errors.InputError, yume_core.config.ConfigError)
    ends it with one line on stderr and exit status 2 instead of a traceback. `--debug` (or YUME_DEBUG=1) shows
    the traceback."""

    def invoke(self, ctx: click.Context):
        from yume_core.config import ConfigError
        from yume_core.errors import InputError

        try:
            return super().invoke(ctx)
        except (InputError, ConfigError) as e:
            if ctx.params.get("debug") or os.environ.get("YUME_DEBUG"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
