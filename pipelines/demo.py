"""`yume-data demo`: every flow end to end on generated inputs, offline, on CPU, with tiny random-weight models.

1. real world: a Sekai-format sample -> actions -> captions (tiny InternVL) -> shards, verified, Yume layout;
2. synthetic set: an OpenVid-format CSV -> prompt selection -> Wan text-to-video (tiny Wan 2.1) -> VBench-style
   quality scores (tiny models) -> the top 62.5% kept (the paper's 50,000 of 80,000);
3. event set: start frames cut from the sample's clips + written events -> Wan image-to-video (tiny Wan 2.2) ->
   pages for manual screening.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.real_world import RealWorldConfig, run_flow
from yume_core.config import from_dict, load_yaml
from yume_core.manifest import OK, read_manifest
from yume_core.sample_data import SekaiSample, make_sekai_sample
from yume_core.storage import atomic_write_text

# Broken inputs the demo mixes in, to show how bad rows are reported rather than lost.
DEMO_FAULTS = ("duplicate", "video_truncated", "poses_nonfinite")
# One written event per category, paired with the sample's start frames (round robin).
DEMO_EVENTS = (
    ("urban_daily_life", "A street vendor pushes a fruit cart across the square while pigeons scatter."),
    ("sci_fi", "A silver drone fleet descends between the buildings and projects glowing signs onto the walls."),
    ("fantasy", "Vines covered in blue flowers climb the houses and a small dragon lands on a rooftop."),
    ("weather", "Heavy rain starts to fall, puddles spread over the street and people open umbrellas."),
)


def run_demo(output: Path, clips: int = 8, frames: int = 150, synthetic: int = 4) -> dict:
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
    if synthetic:
        summary["outputs"].update(_synthetic_set(output, synthetic))
        summary["outputs"].update(_event_set(output, sample))
    click.echo("\noutputs:")
    for name, path in summary["outputs"].items():
        click.echo(f"{name:>18}: {path}")
    if not verified.ok:
        raise SystemExit("demo shards failed verification")
    return summary


def _synthetic_set(output: Path, count: int) -> dict:
    """OpenVid-style captions (with planted near-duplicates) -> `count` diverse prompts -> tiny Wan 2.1 T2V."""
    from pipelines.filtering import filter_flow_config, run_filter_flow
    from pipelines.synthesis import run_synthesis_flow, synth_flow_config
    from synthesis import SelectConfig, format_report, select_prompts_csv
    from synthesis.select_sample import make_captions, write_openvid_csv

    work = output / "synthetic"
    csv = write_openvid_csv(work / "openvid-sample.csv", make_captions(6 * count, dup_fraction=0.25).captions)
    report = select_prompts_csv(csv, work / "prompts.parquet", SelectConfig(count=count))
    click.echo(format_report(report))
    config = synth_flow_config("tiny", {"synth": {"model": "tiny-random"}})
    run_synthesis_flow(str(work / "prompts.parquet"), str(work / "videos"), config)
    run_filter_flow(str(work / "videos" / "manifest.parquet"), str(work / "filtered"), filter_flow_config("tiny"))
    return {"synthetic_prompts": str(work / "prompts.parquet"), "synthetic_videos": _videos(work / "videos"),
            "synthetic_kept": _videos(work / "filtered")}


def _event_set(output: Path, sample: SekaiSample) -> dict:
    """Start frames of the sample's clips paired with one written event per category -> tiny Wan 2.2 I2V."""
    from filtering import make_review
    from pipelines.synthesis import run_synthesis_flow, synth_flow_config
    from synthesis import EventImageConfig, event_images

    work = output / "events"
    cut = event_images(sample.csv_path, sample.videos_dir, work / "images", EventImageConfig(size=(256, 256)))
    images = [r["image_path"] for r in read_manifest(cut["outputs"]["manifest"]).to_pylist() if r["status"] == OK]
    lines = [
        json.dumps({"event_id": f"demo-{i}", "category": category, "description": text,
                    "image": str(Path("images") / images[i % len(images)])})
        for i, (category, text) in enumerate(DEMO_EVENTS)
    ]
    atomic_write_text(work / "events.jsonl", "\n".join(lines) + "\n")
    config = synth_flow_config("tiny", {"synth": {"model": "tiny-random-i2v-2.2"}})
    run_synthesis_flow(str(work / "events.jsonl"), str(work / "videos"), config)
    pages = make_review(read_manifest(work / "videos" / "manifest.parquet"), work / "videos", work / "review",
                        title="demo event set")
    return {"event_set": str(work / "events.jsonl"), "event_videos": _videos(work / "videos"),
            "event_review": f"{pages} (screen, then: yume-data review apply)"}


def _videos(out: Path) -> str:
    rows = read_manifest(out / "manifest.parquet")["status"].to_pylist()
    return f"{out} ({rows.count(OK)} of {len(rows)} videos)"
