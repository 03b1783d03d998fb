"""Export in Yume's folder layout: names, the exact .txt, poses, cut mp4s; checked against Yume's own files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shards import MOUSE_WORDS, export_yume, folder_name, segment_stem, segment_text
from test_shards_helpers import make_manifest, ok_rows

FIXTURES = Path("/work/shared/fixtures/yume_test_video")


def test_folder_names():
    assert folder_name("W+A", "←") == "Keys_W_A_Mouse_Left"
    assert folder_name("S", "·") == "Keys_S_Mouse_·"
    assert folder_name("None", "↓") == "Keys_None_Mouse_Down"
    assert folder_name(None, None) == "Keys_None_Mouse_·"
    assert folder_name("W+D", "↑→") == "Keys_W_D_Mouse_Up_Right"
    assert folder_name("S+A", "↓←") == "Keys_S_A_Mouse_Down_Left"
    assert set(MOUSE_WORDS) == {"·", "→", "←", "↑", "↓", "↑→", "↑←", "↓→", "↓←"}
    with pytest.raises(ValueError):
        folder_name("Q", "·")


def test_text_matches_yume_example_byte_for_byte():
    assert segment_stem("1hCmaStd-AY_0019950_0021750", 1070, 1116) == "1hCmaStd-AY_0019950_0021750_frames_01070-01116"
    assert segment_text(1070, 1116, "W+A", "←") == (
        "Start Frame: 1070\nEnd Frame: 1116\nDuration: 47 frames\nKeys: W+A\nMouse: ←\n")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="Yume's test_video fixtures are not on this machine")
def test_names_and_text_agree_with_every_yume_fixture():
    checked = 0
    for txt in sorted(FIXTURES.glob("*/*_frames_*.txt")):
        lines = txt.read_text(encoding="utf-8").splitlines()
        fields = dict(line.split(": ", 1) for line in lines)
        a, b = int(fields["Start Frame"]), int(fields["End Frame"])
        stem, fa, fb = re.fullmatch(r"(.+)_frames_(\d{5})-(\d{5})", txt.stem).groups()
        assert (int(fa), int(fb)) == (a, b)
        assert folder_name(fields["Keys"], fields["Mouse"]) == txt.parent.name
        assert segment_stem(stem, a, b) == txt.stem
        assert segment_text(a, b, fields["Keys"], fields["Mouse"]) == txt.read_text(encoding="utf-8")
        npy = txt.with_suffix(".npy")
        if npy.exists():
            assert np.load(npy).shape == (b - a + 1, 4, 4)
        checked += 1
    assert checked >= 50


def test_export(tmp_path):
    from yume_core.media import probe_video

    t = make_manifest(tmp_path / "in", n_ok=3, bad_rows=True, frames=(24, 30))
    # one segment with a combined mouse label and one with no key label
    segs = t["segments"].to_pylist()
    segs[0][0].update(keys=None, mouse="↑→", start_frame=0, end_frame=9)  # 10 frames: kept
    t = t.set_column(t.schema.get_field_index("segments"), "segments", pa.array(segs, t.schema.field("segments").type))
    out = tmp_path / "yume"
    res = export_yume(t, out, min_frames=6, crf=30)
    rows = {r["clip_id"]: r for r in ok_rows(t)}
    n_segs = sum(len(r["segments"]) for r in rows.values())
    assert res.num_rows == n_segs
    assert set(res["clip_id"].to_pylist()) == set(rows)  # failed/dropped rows are not exported
    written = 0
    for rec in res.to_pylist():
        row = rows[rec["clip_id"]]
        a, b = rec["start_frame"], rec["end_frame"]
        assert rec["folder"] == folder_name(rec["keys"], rec["mouse"])
        assert rec["stem"] == f"{Path(row['video_file']).stem}_frames_{a:05d}-{b:05d}"
        base = out / rec["folder"] / rec["stem"]
        if b - a + 1 < 6:
            assert (rec["status"], rec["reason"]) == ("dropped", "too_short")
            assert not base.with_suffix(".txt").exists()
            continue
        assert (rec["status"], rec["reason"]) == ("ok", "written"), rec
        written += 1
        assert base.with_suffix(".txt").read_text(encoding="utf-8") == (
            f"Start Frame: {a}\nEnd Frame: {b}\nDuration: {b - a + 1} frames\n"
            f"Keys: {rec['keys'] or 'None'}\nMouse: {rec['mouse']}\n")
        poses = np.load(base.with_suffix(".npy"))
        with np.load(row["camera_path"]) as z:
            np.testing.assert_array_equal(poses, z["extrinsic"][a : b + 1])
        assert poses.dtype == np.float32 and poses.shape == (b - a + 1, 4, 4)
        info = probe_video(base.with_suffix(".mp4"))
        assert (info.frames, info.width, info.height) == (b - a + 1, 64, 36)
    assert written >= 5
    assert (out / "Keys_None_Mouse_Up_Right" / f"{Path(t['video_file'][0].as_py()).stem}_frames_00000-00009.mp4").is_file()

    # rerun: every written segment is found and skipped, nothing rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = export_yume(t, out, min_frames=6, crf=30)
    assert again["reason"].to_pylist().count("exists") == written
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes


def test_export_failures_are_per_segment(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=2, bad_rows=False, frames=(24, 26))
    Path(t["camera_path"][0].as_py()).unlink()
    segs = t["segments"].to_pylist()
    segs[1][-1]["end_frame"] = 500  # past the clip's end
    t = t.set_column(t.schema.get_field_index("segments"), "segments", pa.array(segs, t.schema.field("segments").type))
    res = export_yume(t, tmp_path / "yume", crf=30).to_pylist()
    clip0 = [r for r in res if r["clip_id"] == t["clip_id"][0].as_py()]
    assert {(r["status"], r["reason"]) for r in clip0} == {("failed", "poses_missing")}
    last = [r for r in res if r["clip_id"] == t["clip_id"][1].as_py()][-1]
    assert (last["status"], last["reason"]) == ("failed", "segment_out_of_range")
    assert [r["status"] for r in res if r["clip_id"] == t["clip_id"][1].as_py()][:-1] == ["ok", "ok"]


def test_two_clips_with_one_video_stem(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=1, bad_rows=False, frames=(24, 24))
    dup = t.set_column(t.schema.get_field_index("clip_id"), "clip_id", pa.array(["other-id"]))
    res = export_yume(pa.concat_tables([t, dup]), tmp_path / "yume", crf=30).to_pylist()
    assert [r["status"] for r in res if r["clip_id"] == "other-id"] == ["failed"] * 3
    assert {r["reason"] for r in res if r["clip_id"] == "other-id"} == {"duplicate_segment"}
