"""The synthetic and event sets as shards (shards.write_set_shards): schema-v1 samples from the filtered and screened
manifests, only ok rows, vanished inputs failed with a reason and folded back into the manifest, Energon metadata."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from shards import ShardConfig, attach_shards, set_stats, verify_shards, write_set_shards
from shards.energon import IDX_SUFFIX, META_DIR
from yume_core.errors import InputError
from yume_core.media import write_video
from yume_core.samples import check_sample


def _video(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    write_video(path, [rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(9)], 8)


def _manifest(folder: Path, n: int, event: bool) -> pa.Table:
    rows = []
    for i in range(n):
        _video(folder / f"v{i}.mp4", i)
        row = {"prompt_id": f"p{i}", "caption": f"A street scene number {i} with people walking by.",
               "video_path": f"v{i}.mp4", "status": "ok", "reason": None, "error": None,
               "vbench_subject_consistency": 0.9 + i / 100, "quality_score": 0.5 + i / 10, "quality_rank": n - i,
               "synth_model": "tiny-random", "synth_seed": 100 + i, "synth_steps": 2, "synth_width": 32,
               "synth_height": 32, "synth_frames": 9, "synth_fps": 8}
        if event:
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(folder / f"s{i}.png")
            row.update(category="weather", image_path=f"s{i}.png", review="keep", review_note=None)
        rows.append(row)
    rows[-1].update(status="dropped", reason="below_top_k", error="score 0.1 below the cut")
    return pa.Table.from_pylist(rows)


def _samples(set_dir: Path) -> dict[str, dict]:
    out = {}
    for tar in sorted(set_dir.glob("*.tar")):
        with tarfile.open(tar) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[:-5]
                out[key] = {"json": json.loads(data), "members": sorted(n[len(key) + 1:] for n in members
                                                                       if n.rsplit(".", 1)[0] == key)}
                if f"{key}.jpg" in members:
                    out[key]["jpg"] = members[f"{key}.jpg"]
    return out


def test_synthetic_set_trains_t2v_on_its_prompt_with_scores_and_generation(tmp_path):
    manifest = _manifest(tmp_path, 4, event=False)
    index = write_set_shards(manifest, tmp_path / "synthetic", "synthetic", ShardConfig(max_count=2),
                             base_dir=tmp_path)
    samples = _samples(tmp_path / "synthetic")
    assert sorted(samples) == ["p0", "p1", "p2"]  # the dropped row never reaches a shard
    meta = samples["p1"]["json"]
    assert check_sample(meta) == [] and meta["set"] == "synthetic" and meta["tasks"] == ["t2v"]
    assert meta["event_text"] == {"t2v": "A street scene number 1 with people walking by.", "i2v": None}
    assert meta["actions"]["keys"] == [] and meta["synthetic"]["quality_rank"] == 3
    assert meta["synthetic"]["vbench"] == {"subject_consistency": pytest.approx(0.91)}
    assert meta["synthetic"]["generation"]["seed"] == 101 and (meta["frames"], meta["width"]) == (9, 32)
    assert samples["p1"]["members"] == ["json", "mp4"]
    assert verify_shards(tmp_path / "synthetic", decode=True).ok
    assert set(index["set"].to_pylist()) == {"synthetic"}
    info = json.loads((tmp_path / "synthetic" / META_DIR / ".info.json").read_text())
    assert info["shard_counts"] == {"shard-000000.tar": 2, "shard-000001.tar": 1}
    assert (tmp_path / "synthetic" / ("shard-000001.tar" + IDX_SUFFIX)).stat().st_size == 2 * 8
    assert set_stats(tmp_path / "synthetic")["tasks"] == {"t2v": 3}


def test_event_set_carries_its_start_image_and_screening_and_trains_the_tasks_asked(tmp_path):
    manifest = _manifest(tmp_path, 3, event=True)
    write_set_shards(manifest, tmp_path / "event", "event", base_dir=tmp_path, screening="decisions")
    samples = _samples(tmp_path / "event")
    meta = samples["p0"]["json"]
    assert meta["tasks"] == ["t2v", "i2v"] and meta["event"]["start_image"] == "p0.jpg"
    assert meta["event"]["screening"] == {"decision": "keep", "note": None, "policy": "decisions"}
    assert samples["p0"]["members"] == ["jpg", "json", "mp4"]
    assert Image.open(io.BytesIO(samples["p1"]["jpg"])).getpixel((0, 0)) == pytest.approx((40, 40, 40), abs=2)
    write_set_shards(manifest, tmp_path / "t2v-only", "event", base_dir=tmp_path, tasks=["t2v"])
    assert {m["json"]["event_text"]["i2v"] for m in _samples(tmp_path / "t2v-only").values()} == {None}


def test_a_vanished_start_image_fails_its_row_and_the_manifest_says_why(tmp_path):
    manifest = _manifest(tmp_path, 3, event=True)
    (tmp_path / "s1.png").unlink()
    index = write_set_shards(manifest, tmp_path / "event", "event", base_dir=tmp_path)
    assert sorted(_samples(tmp_path / "event")) == ["p0"]
    folded = attach_shards(manifest, index, "prompt_id").to_pylist()
    assert [(r["status"], r["reason"]) for r in folded] == [("ok", None), ("failed", "image_missing"),
                                                           ("dropped", "below_top_k")]
    assert folded[0]["shard"] == "shard-000000.tar" and "s1.png" in folded[1]["error"]


def test_a_manifest_without_the_sets_columns_is_refused_by_name(tmp_path):
    manifest = _manifest(tmp_path, 2, event=False)
    with pytest.raises(InputError, match="image_path"):
        write_set_shards(manifest, tmp_path / "event", "event", base_dir=tmp_path)
