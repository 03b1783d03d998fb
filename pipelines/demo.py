"""`yume-data demo`: the real-world flow end to end on a generated Sekai-format sample, offline, on CPU."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.real_world import RealWorldConfig, run_flow
from yume_core.config import from_dict, load_yaml
from yume_core.manifest import read_manifest
from yume_core.sample_data import make_sekai_sample

# Broken inputs the demo mixes in, to show how bad rows are reported rather than lost.
DEMO_FAULTS = ("duplicate", "video_truncated", "poses_nonfinite")


def run_demo(output: Path, clips: int = 8, frames: int = 150) -> dict:
    import shards

    output = Path(output)
    click.echo(f"generating {clips} Sekai-format clips (+{len(DEMO_FAULTS)} broken rows) under {output / 'input'}")
    sample = make_sekai_sample(output / "input", n_clips=clips, n_frames=frames, faults=DEMO_FAULTS)
    cfg = from_dict(RealWorldConfig, load_yaml(Path(__file__).parent / "presets" / "demo.yaml"))
    summary = run_flow(str(sample.csv_path), str(sample.videos_dir), str(sample.cameras_dir), str(output / "real-world"), cfg)
    verified = shards.verify_shards(output / "real-world" / "shards", decode=True)
    click.echo(shards.format_report(verified))
    exported = shards.export_yume(read_manifest(output / "real-world" / "manifest.parquet"), output / "yume-layout")
    summary["outputs"]["yume_layout"] = f"{output / 'yume-layout'} ({exported.num_rows} segments)"
    click.echo("\noutputs:")
    for name, path in summary["outputs"].items():
        click.echo(f"{name:>18}: {path}")
    if not verified.ok:
        raise SystemExit("demo shards failed verification")
    return summary

