"""`yume-data actions`: label camera trajectories (`actions PATHS -o OUT.parquet`, the default subcommand `label`),
and `actions view`: the overlay page that draws the labels under the videos for a person to spot-check them."""

from __future__ import annotations

from pathlib import Path

import click

MODES = ("published", "heading")  # quantize_actions.MODES (not imported here: `--help` stays fast)
FLAGS = ("jitter", "jump", "frozen")  # quantize_actions.TRAJECTORY_FLAGS


def quantize_options(f):
    """The labelling settings every command that quantizes takes (also `real-world`)."""
    f = click.option("--drop-flag", "drop_flags", multiple=True, type=click.Choice(FLAGS),
                     help="Drop clips whose trajectory carries this flag (repeat; default: flag only).")(f)
    f = click.option("--mode", type=click.Choice(MODES),
                     help="published: Yume's per-step rule (default); heading: windowed heading sectors.")(f)
    f = click.option("--rotation-threshold", type=float, help="Radians per stride step (default 1e-3).")(f)
    f = click.option("--translation-threshold", type=float, help="Per stride step (default 1e-4).")(f)
    f = click.option("--stride", type=int, help="Use every N-th pose (default 1).")(f)
    return f


def quantize_overrides(stride, translation_threshold, rotation_threshold, mode=None, drop_flags=()) -> dict:
    return {"stride": stride, "translation_threshold": translation_threshold, "rotation_threshold": rotation_threshold,
            "mode": mode, "drop_flags": list(drop_flags) or None}


class _LabelByDefault(click.Group):
    """A group whose first argument, unless it names a subcommand, starts `label`: `yume-data actions DIR -o X`
    keeps working beside `yume-data actions view`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["label", *args]
        return super().parse_args(ctx, args)


@click.group("actions", cls=_LabelByDefault)
def actions() -> None:
    """Camera trajectories -> keyboard/mouse labels: `yume-data actions PATHS... -o OUT.parquet [--mode heading]`
    (the `label` subcommand), and `yume-data actions view` to look at them under the videos."""


@actions.command("label")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Parquet file to write.")
@quantize_options
@click.option("--workers", type=int, default=None, help="Threads for reading files (default: CPU count).")
def label(paths, output, stride, translation_threshold, rotation_threshold, mode, drop_flags, workers):
    """Quantize camera trajectories (.npy (N,4,4) or Sekai .npz) into keyboard/mouse labels, one row per file, with
    the trajectory checks' flags."""
    import quantize_actions
    from yume_core.config import from_dict, merge
    from yume_core.manifest import format_summary, summarize, write_manifest

    overrides = quantize_overrides(stride, translation_threshold, rotation_threshold, mode, drop_flags)
    config = from_dict(quantize_actions.QuantizeConfig, merge({}, overrides), "actions")
    table = quantize_actions.quantize_files(list(paths), config, workers=workers)
    write_manifest(table, output)
    counts = quantize_actions.flag_counts(table["trajectory_flags"])
    click.echo(format_summary(summarize(table), f"actions ({config.mode}) -> {output}"), err=True)
    click.echo("  trajectory flags: " + ", ".join(f"{k} {v}" for k, v in counts.items()), err=True)


@actions.command("view")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for index.html and its preview videos.")
@click.option("--per-label", default=2, show_default=True, type=click.IntRange(min=1),
              help="Clips shown per (keys, mouse) label, chosen by the label that covers most of each clip.")
@click.option("--videos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder searched for <stem>.mp4 when the manifest names no video (`actions` output).")
@click.option("--seed", default=0, show_default=True, help="Which clips are sampled (the page is reproducible).")
def view(source, output, per_label, videos, seed):
    """Write an overlay page for SOURCE: a manifest.parquet (of `actions` or `real-world`) or the real-world flow's
    output folder. Each sampled clip plays with its per-step keys and mouse drawn under it as a timeline, the current
    label shown as it plays, for both labelling modes when its poses can be read."""
    from quantize_actions.overlay import write_overlay
    from yume_core.errors import InputError
    from yume_core.manifest import read_manifest

    path = source / "manifest.parquet" if source.is_dir() else source
    if not path.is_file():
        raise InputError(source, "holds no manifest.parquet", "pass a manifest or the real-world flow's output folder")
    page = write_overlay(read_manifest(path), output, per_label=per_label, videos=videos, seed=seed)
    click.echo(f"overlay page: {page}")
