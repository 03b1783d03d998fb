"""Export in Yume's folder layout: names, the exact .txt, poses, cut mp4s; checked against Yume's own files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shards import MOUSE_WORDS, export_yume, folder_name, segment_stem, segment_text
from test_shards_helpers import make_manifest, ok_rows

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "yume_test_video"


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
    segs[0][0].update(keys=None, mouse="↑→", start_frame=0, end_frame=9)  # 9 frames from frame 1: kept
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
    stem = Path(t["video_file"][0].as_py()).stem
    assert (out / "Keys_None_Mouse_Up_Right" / f"{stem}_frames_00001-00009.mp4").is_file()

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
    res = export_yume(t, tmp_path / "yume", min_frames=None, crf=30).to_pylist()
    clip0 = [r for r in res if r["clip_id"] == t["clip_id"][0].as_py()]
    assert {(r["status"], r["reason"]) for r in clip0} == {("failed", "poses_missing")}
    last = [r for r in res if r["clip_id"] == t["clip_id"][1].as_py()][-1]
    assert (last["status"], last["reason"]) == ("failed", "segment_out_of_range")
    assert [r["status"] for r in res if r["clip_id"] == t["clip_id"][1].as_py()][:-1] == ["ok", "ok"]


def test_two_clips_with_one_video_stem(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=1, bad_rows=False, frames=(24, 24))
    dup = t.set_column(t.schema.get_field_index("clip_id"), "clip_id", pa.array(["other-id"]))
    res = export_yume(pa.concat_tables([t, dup]), tmp_path / "yume", min_frames=None, crf=30).to_pylist()
    assert [r["status"] for r in res if r["clip_id"] == "other-id"] == ["failed"] * 3
    assert {r["reason"] for r in res if r["clip_id"] == "other-id"} == {"duplicate_segment"}


def _runs_manifest(root: Path) -> pa.Table:
    """Two clips whose segments are label runs as the actions stage writes them: the first starts at frame 0 and
    each begins on the frame where the one before ends (both ends inclusive)."""
    t = make_manifest(root, n_ok=2, bad_rows=False, frames=(90, 100))
    segs = []
    for n in t["num_poses"].to_pylist():
        segs.append([{"start_frame": a, "end_frame": b, "keys": k, "mouse": "·", "agreement": 1.0}
                     for (a, b), k in zip([(0, 40), (40, 75), (75, n - 1)], ["W", "W+A", "S"])])
    return t.set_column(t.schema.get_field_index("segments"), "segments",
                        pa.array(segs, t.schema.field("segments").type))


def test_export_is_what_yumes_loader_reads_without_surprises(tmp_path):
    """Segments start at frame 1 or later, never share a frame, have 33 frames or more; the full clips are under
    full_mp4/<youtubeId>/<clipstem>.mp4 (hard links) and out of the loader's ROOT/*/*.mp4 glob; the README says so."""
    from yume_core.media import probe_video

    t = _runs_manifest(tmp_path / "in")
    out = tmp_path / "yume"
    res = export_yume(t, out, crf=30).to_pylist()
    for row in ok_rows(t):
        mine = [r for r in res if r["clip_id"] == row["clip_id"]]
        assert [(r["start_frame"], r["end_frame"], r["status"]) for r in mine] == [
            (1, 40, "ok"), (41, 75, "ok"), (76, row["num_poses"] - 1, "dropped")]
        assert mine[2]["reason"] == "too_short" and "< min_frames 33" in mine[2]["error"]
        stem = Path(row["video_file"]).stem
        full = out / "full_mp4" / row["youtube_id"] / f"{stem}.mp4"
        assert {r["full_clip"] for r in mine[:2]} == {f"full_mp4/{row['youtube_id']}/{stem}.mp4"}
        assert full.stat().st_ino == Path(row["video_path"]).stat().st_ino  # a hard link: no bytes copied
    written = sorted(out.glob("*/*.mp4"))  # exactly what Yume's loader globs
    assert len(written) == 4 and all(p.parent.name.startswith("Keys_") for p in written)
    by_clip: dict[str, list[tuple[int, int]]] = {}
    for mp4 in written:
        fields = dict(line.split(": ", 1) for line in mp4.with_suffix(".txt").read_text(encoding="utf-8").splitlines())
        a, b = int(fields["Start Frame"]), int(fields["End Frame"])
        assert a >= 1 and b - a + 1 >= 33
        assert probe_video(mp4).frames == b - a + 1 == len(np.load(mp4.with_suffix(".npy")))
        by_clip.setdefault(mp4.stem.split("_frames_")[0], []).append((a, b))
    for ranges in by_clip.values():
        ranges.sort()
        assert all(later[0] > earlier[1] for earlier, later in zip(ranges, ranges[1:]))
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "full_mp4/" in readme and "dataset root" in readme


def test_full_clips_are_copied_where_hard_links_fail(tmp_path, monkeypatch):
    import os

    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    t = _runs_manifest(tmp_path / "in")
    export_yume(t, tmp_path / "yume", crf=30)
    row = ok_rows(t)[0]
    full = tmp_path / "yume" / "full_mp4" / row["youtube_id"] / f"{Path(row['video_file']).stem}.mp4"
    assert full.stat().st_ino != Path(row["video_path"]).stat().st_ino
    assert full.read_bytes() == Path(row["video_path"]).read_bytes()


def test_cli_export_takes_min_frames(tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import main
    from yume_core.manifest import write_manifest

    write_manifest(_runs_manifest(tmp_path / "in"), tmp_path / "m.parquet")
    result = CliRunner().invoke(main, ["export-yume", "--manifest", str(tmp_path / "m.parquet"), "-o",
                                       str(tmp_path / "yume"), "--min-frames", "40"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "yume").glob("*/*.mp4"))) == 2  # 1-40 kept; 41-75 (35 frames) dropped
