"""Generated inputs for `yume-data build --preset demo`: everything the real build reads, made offline.

A Sekai-format sample (mp4s rendered along known trajectories, a CSV, camera .npz files) with a few broken rows
to show how bad rows are reported; an OpenVid-1M-format CSV with planted near-duplicates; one written event per
category, paired round-robin with start frames cut from the sample's clips (the event-images step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from yume_core.manifest import OK, read_manifest
from yume_core.storage import atomic_write_text

# Broken inputs mixed in, to show how bad rows are reported rather than lost.
DEMO_FAULTS = ("duplicate", "video_truncated", "poses_nonfinite")
# One written event per category.
DEMO_EVENTS = (
    ("urban_daily_life", "A street vendor pushes a fruit cart across the square while pigeons scatter."),
    ("sci_fi", "A silver drone fleet descends between the buildings and projects glowing signs onto the walls."),
    ("fantasy", "Vines covered in blue flowers climb the houses and a small dragon lands on a rooftop."),
    ("weather", "Heavy rain starts to fall, puddles spread over the street and people open umbrellas."),
)


def generate_sekai(folder: Path, clips: int, frames: int) -> dict:
    """The Sekai-format sample; returns the paths the real-world step reads."""
    from yume_core.sample_data import make_sekai_sample

    sample = make_sekai_sample(folder, n_clips=clips, n_frames=frames, faults=DEMO_FAULTS)
    return {"sekai_csv": str(sample.csv_path), "videos": str(sample.videos_dir),
            "trajectories": str(sample.cameras_dir)}


def generate_openvid(path: Path, captions: int) -> str:
    """An OpenVid-1M-format CSV of `captions` rows, a quarter of them planted near-duplicates."""
    from synthesis.select_sample import make_captions, write_openvid_csv

    return str(write_openvid_csv(path, make_captions(captions, dup_fraction=0.25).captions))


def write_demo_events(images_manifest: Path, path: Path) -> str:
    """One event per category on the start frames the event-images step cut (round robin), as JSON Lines with
    image paths relative to the file (so the build folder can move and two builds write the same bytes)."""
    table = read_manifest(images_manifest)
    images = [r["image_path"] for r in table.select(["status", "image_path"]).to_pylist() if r["status"] == OK]
    if not images:
        raise RuntimeError(f"{images_manifest}: no usable start frame was cut from the sample's clips")
    lines = [json.dumps({"event_id": f"demo-{i}", "category": category, "description": text,
                         "image": os.path.relpath(images_manifest.parent / images[i % len(images)], path.parent)})
             for i, (category, text) in enumerate(DEMO_EVENTS)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return str(path)
