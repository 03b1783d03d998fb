import textwrap

import pyarrow as pa
import pytest

from yume_core.manifest import CLIP_SCHEMA, summarize
from yume_core.sekai import SekaiFormatError, check_frame_counts, parse_video_stem, read_sekai_csv

HEADER = "videoFile,cameraFile,caption,location,scene,crowdDensity,weather,timeOfDay\n"


def _csv(tmp_path, body: str):
    path = tmp_path / "sekai-real-walking-hq.csv"
    path.write_text(HEADER + textwrap.dedent(body).lstrip())
    return path


@pytest.mark.parametrize(
    "stem, expected",
    [
        ("1hCmaStd-AY_0019950_0021750", ("1hCmaStd-AY", 19950, 21750)),
        ("_a_b-c_d_0000000_0001800", ("_a_b-c_d", 0, 1800)),
        ("sT6OUnU1_Fc_0169543_0171343", ("sT6OUnU1_Fc", 169543, 171343)),
        ("no-frames-here", None),
        ("abc_12x_0000300", None),
    ],
)
def test_parse_video_stem_follows_sekai_ids(stem, expected):
    assert parse_video_stem(stem) == expected


def test_one_row_per_csv_row_with_ids_and_paths(tmp_path):
    path = _csv(
        tmp_path,
        """
        _xY-z_9Q1a0_0000300_0000600.mp4,_xY-z_9Q1a0_0000300_0000600.npz,"A street, at night",Tokyo,street,high,clear,night
        abcdefghijk_0001800_0003600.mp4,,Park walk,Paris,park,low,rain,day
        """,
    )
    t = read_sekai_csv(path, tmp_path / "v", tmp_path / "c")
    assert t.schema.names[: len(CLIP_SCHEMA)] == CLIP_SCHEMA.names
    assert t.num_rows == 2
    assert t["clip_id"].to_pylist() == ["_xY-z_9Q1a0_0000300_0000600", "abcdefghijk_0001800_0003600"]
    assert t["youtube_id"].to_pylist() == ["_xY-z_9Q1a0", "abcdefghijk"]
    assert t["start_frame"].to_pylist() == [300, 1800]
    assert t["end_frame"].to_pylist() == [600, 3600]
    assert t["caption"].to_pylist() == ["A street, at night", "Park walk"]
    assert t["crowd_density"].to_pylist() == ["high", "low"]
    assert t["source"].to_pylist() == ["sekai-real-walking-hq"] * 2
    # an empty cameraFile falls back to the video's stem, as Sekai names camera files
    assert t["camera_path"].to_pylist()[1] == str(tmp_path / "c" / "abcdefghijk_0001800_0003600.npz")
    assert t["status"].to_pylist() == ["ok", "ok"]


def test_duplicates_dropped_and_malformed_rows_failed_with_reasons(tmp_path):
    path = _csv(
        tmp_path,
        """
        aaaaaaaaaaa_0000000_0000300.mp4,aaaaaaaaaaa_0000000_0000300.npz,one,x,x,x,x,x
        bbbbbbbbbbb_0000000_0000300.mp4,bbbbbbbbbbb_0000000_0000300.npz,two,x,x
        aaaaaaaaaaa_0000000_0000300.mp4,aaaaaaaaaaa_0000000_0000300.npz,again,x,x,x,x,x
        ,,no video,x,x,x,x,x
        """,
    )
    t = read_sekai_csv(path, tmp_path, tmp_path)
    assert t.num_rows == 4
    assert t["status"].to_pylist() == ["ok", "failed", "dropped", "failed"]
    assert t["reason"].to_pylist() == [None, "csv_malformed", "duplicate_video", "csv_missing_video_file"]
    errors = t["error"].to_pylist()
    assert "line 3" in errors[1] and "number of fields" in errors[1]
    assert "CSV row 0" in errors[2]
    s = summarize(t)
    assert (s["in"], s["ok"], s["dropped"], s["failed"]) == (4, 1, 1, 2)


def test_a_csv_that_is_not_sekai_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("video,caption\na.mp4,b\n")
    with pytest.raises(SekaiFormatError, match="videoFile"):
        read_sekai_csv(bad, tmp_path, tmp_path)
    with pytest.raises(SekaiFormatError, match="cannot open"):
        read_sekai_csv(tmp_path / "missing.csv", tmp_path, tmp_path)


def test_frame_count_check_allows_one_frame_of_slack():
    t = pa.table(
        {
            "status": ["ok", "ok", "ok", "failed"],
            "reason": [None, None, None, "video_missing"],
            "error": [None, None, None, "gone"],
            "video_frames": pa.array([300, 301, 290, None], pa.int64()),
            "num_poses": pa.array([300, 300, 300, None], pa.int64()),
        }
    )
    out = check_frame_counts(t, tolerance=1)
    assert out["status"].to_pylist() == ["ok", "ok", "failed", "failed"]
    assert out["reason"].to_pylist() == [None, None, "frame_count_mismatch", "video_missing"]
    assert "290 frames" in out["error"][2].as_py() and "300 poses" in out["error"][2].as_py()
