"""The manifest stage: rows kept in order, failures recorded, action columns filled and typed."""

from pathlib import Path

import numpy as np
import pyarrow as pa

from quantize_actions import QuantizeConfig, load_vocabulary, quantize_table
from yume_core.manifest import CLIP_SCHEMA, summarize

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "yume_test_video"


def make_manifest(tmp_path: Path) -> pa.Table:
    good = sorted(FIXTURES.glob("Keys_W_D_Mouse_Right/*.npy"))[:2]
    nan = np.load(good[0])
    nan[5, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    rows = [  # clip_id, status, reason, error, camera_path
        ("good0", "ok", None, None, str(good[0])),
        ("prefailed", "failed", "video_missing", "no video", str(good[1])),
        ("missing", "ok", None, None, str(tmp_path / "missing.npz")),
        ("nan", "ok", None, None, str(tmp_path / "nan.npy")),
        ("dropped", "dropped", "too_short", "clip under 2 s", str(good[0])),
        ("no_path", "ok", None, None, None),
        ("good1", "ok", None, None, str(good[1])),
    ]
    columns = list(zip(*rows))
    return pa.table(
        {
            "clip_id": columns[0],
            "status": columns[1],
            "reason": pa.array(columns[2], pa.string()),
            "error": pa.array(columns[3], pa.string()),
            "camera_path": pa.array(columns[4], pa.string()),
            "caption": [f"caption {i}" for i in range(len(rows))],
            "extra_score": [float(i) for i in range(len(rows))],
        }
    )


def test_quantize_table(tmp_path):
    manifest = make_manifest(tmp_path)
    out = quantize_table(manifest, QuantizeConfig(), batch_size=2)
    assert out.num_rows == manifest.num_rows
    assert out.schema.names[: len(CLIP_SCHEMA)] == CLIP_SCHEMA.names and out.schema.names[-1] == "extra_score"
    for field in CLIP_SCHEMA:
        assert out.schema.field(field.name).type == field.type
    rows = out.to_pylist()
    assert [r["clip_id"] for r in rows] == manifest["clip_id"].to_pylist()
    assert [r["caption"] for r in rows] == manifest["caption"].to_pylist()
    by_id = {r["clip_id"]: r for r in rows}

    not_ok = ("prefailed", "missing", "nan", "dropped", "no_path")
    assert [(by_id[c]["status"], by_id[c]["reason"]) for c in not_ok] == [
        ("failed", "video_missing"),
        ("failed", "camera_missing"),
        ("failed", "poses_nonfinite"),
        ("dropped", "too_short"),
        ("failed", "camera_missing"),
    ]
    assert by_id["prefailed"]["error"] == "no video" and by_id["prefailed"]["keys"] is None  # untouched
    assert "nan.npy" in by_id["nan"]["error"] and "first at frame 5" in by_id["nan"]["error"]
    for cid in not_ok:
        assert by_id[cid]["num_poses"] is None and by_id[cid]["segments"] is None

    for cid in ("good0", "good1"):
        r = by_id[cid]
        assert (r["status"], r["reason"], r["error"]) == ("ok", None, None)
        assert len(r["keys"]) == len(r["mouse"]) == r["num_poses"] - 1 > 30
        assert set(r["keys"]) == {"W+D"} and set(r["mouse"]) == {"→"}
        phrase = load_vocabulary("yume15").phrase("W+D", "→")
        assert r["segments"] == [{"start_frame": 0, "end_frame": r["num_poses"] - 1, "keys": "W+D", "mouse": "→",
                                  "agreement": 1.0, "phrase": phrase}]
        assert r["chunks"][0] == {"start_frame": 0, "end_frame": 31, "keys": "W+D", "mouse": "→", "agreement": 1.0,
                                  "phrase": phrase}
        assert r["speed"] > 0 and r["view_rotation_deg"] > 0 and r["turn_deg"] >= 0
    assert summarize(out)["ok"] == 2 and summarize(out)["failed"] == 4
    assert b"yume_data.quantize_actions.config" in out.schema.metadata

    # one batch or many: same result
    assert quantize_table(manifest, batch_size=100).equals(out)


def test_rows_already_carrying_actions_pass_through(tmp_path):
    manifest = make_manifest(tmp_path)
    once = quantize_table(manifest)
    # re-run on the output with different settings: rows no longer ok keep their columns, ok rows are recomputed
    again = quantize_table(once, QuantizeConfig(stride=2))
    assert again["status"].to_pylist() == once["status"].to_pylist()
    assert again["error"].to_pylist() == once["error"].to_pylist()
    good = once["clip_id"].to_pylist().index("good0")
    assert len(again["keys"][good].as_py()) == (once["num_poses"][good].as_py() + 1) // 2 - 1


def test_empty_and_all_failed_tables():
    empty = quantize_table(pa.table({"clip_id": pa.array([], pa.string()), "status": pa.array([], pa.string())}))
    assert empty.num_rows == 0 and empty.schema.names[: len(CLIP_SCHEMA)] == CLIP_SCHEMA.names
    failed = quantize_table(pa.table({"clip_id": ["a"], "status": ["failed"], "reason": ["x"], "error": ["y"]}))
    assert failed.to_pylist()[0]["status"] == "failed" and failed.to_pylist()[0]["keys"] is None
