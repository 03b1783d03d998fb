"""The `vbench` backend end to end: the real runner script, run by this python against a fake `vbench` package.

tests/fake_vbench mimics vbench 0.1.5's API surface (see its docstring): scores follow from file sizes, so each
number proves which file it came from, and FAKE_VBENCH_FAIL makes it crash, hang, drop a video or botch its JSON.
"""

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

from filtering.dimensions import QUALITY_DIMENSIONS
from filtering.vbench_backend import VBenchScorer, VBenchUnavailable

FAKE = Path(__file__).parent / "fake_vbench"


def make_scorer(fail: str = "", record: Path | None = None, **kwargs) -> VBenchScorer:
    env = {"PYTHONPATH": str(FAKE), "FAKE_VBENCH_FAIL": fail}
    if record is not None:
        env["FAKE_VBENCH_RECORD"] = str(record)
    kwargs.setdefault("dimensions", QUALITY_DIMENSIONS)
    kwargs.setdefault("device", "cpu")
    return VBenchScorer(python=sys.executable, env=env, **kwargs)


def make_video(folder: Path, name: str, size: int) -> str:
    """An arbitrary file of `size` bytes: the fake never decodes, it scores by size."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return str(path)


def expected(size: int, dimensions=QUALITY_DIMENSIONS) -> dict[str, float]:
    # imaging_quality: the fake's per-video 0-100 score (size / 10), brought to VBench's 0-1 scale by the backend
    return {d: float(size % 2) if d == "dynamic_degree" else size / 1000 for d in dimensions}


@pytest.fixture(autouse=True)
def _no_outside_cache(monkeypatch):
    monkeypatch.delenv("VBENCH_CACHE_DIR", raising=False)


def test_scores_map_back_to_odd_keys_in_input_order(tmp_path):
    folder = tmp_path / "vids with spaces" / "ü"
    keys = ["clip a b", "dir/sub/clip.mp4", "ünï©ødé 🎬", "../../etc/passwd", "dup", "dup"]
    sizes = [101, 202, 303, 404, 505, 606]
    items = [(key, make_video(folder, f"{i}-video.mkv", size)) for i, (key, size) in enumerate(zip(keys, sizes))]
    record = tmp_path / "call.json"
    with make_scorer(record=record) as scorer:
        results = scorer.score(items)
    assert [r.key for r in results] == keys
    assert all(r.ok for r in results), [r.error for r in results]
    for result, size in zip(results, sizes):
        assert result.scores == pytest.approx(expected(size))
        assert all(type(v) is float for v in result.scores.values())
    assert [r.scores["dynamic_degree"] for r in results] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    call = json.loads(record.read_text())
    assert call["mode"] == "custom_input" and call["dimension_list"] == list(QUALITY_DIMENSIONS)
    assert call["device"] == "cpu" and call["local"] is False and call["read_frame"] is False
    assert call["full_info_dir"] == str(FAKE / "vbench" / "VBench_full_info.json")
    # keys never become file names: VBench's prompts (taken from the names) are the staged names
    assert all(re.fullmatch(r"v\d{5}", p) for p in call["prompts"]) and len(set(call["prompts"])) == 6


def test_local_cache_dir_and_device_reach_vbench(tmp_path):
    video = make_video(tmp_path, "a.mp4", 11)
    record = tmp_path / "call.json"
    scorer = make_scorer(record=record, dimensions=("dynamic_degree",), device="cuda:1", local=True,
                         cache_dir=tmp_path / "cache")
    assert scorer.score([("a", video)])[0].scores == {"dynamic_degree": 1.0}
    call = json.loads(record.read_text())
    assert (call["device"], call["local"], call["cache_dir"]) == ("cuda:1", True, str(tmp_path / "cache"))


def test_missing_file_is_video_missing_while_others_score(tmp_path):
    items = [("a", make_video(tmp_path, "a.mp4", 120)), ("gone", str(tmp_path / "gone.mp4")),
             ("dir", str(tmp_path)), ("b", make_video(tmp_path, "b.mp4", 121))]
    results = make_scorer(dimensions=("aesthetic_quality",)).score(items)
    assert [r.reason for r in results] == [None, "video_missing", "video_missing", None]
    assert "gone.mp4" in results[1].error
    assert results[3].scores == pytest.approx({"aesthetic_quality": 0.121})


def test_no_existing_video_starts_no_vbench(tmp_path):
    record = tmp_path / "call.json"
    results = make_scorer(record=record).score([("x", str(tmp_path / "x.mp4"))])
    assert results[0].reason == "video_missing"
    assert not record.exists()


def test_video_left_out_by_vbench_is_no_result(tmp_path):
    dims = ("temporal_flickering", "motion_smoothness")
    items = [("small", make_video(tmp_path, "s.mp4", 10)), ("largest", make_video(tmp_path, "l.mp4", 999))]
    small, largest = make_scorer("omit", dimensions=dims).score(items)
    assert small.ok and small.scores == pytest.approx(expected(10, dims))
    assert largest.reason == "vbench_no_result" and not largest.scores
    assert "temporal_flickering" in largest.error and "motion_smoothness" not in largest.error


def test_vbench_crash_fails_the_batch_with_its_traceback(tmp_path):
    items = [("a", make_video(tmp_path, "a.mp4", 5)), ("gone", str(tmp_path / "gone.mp4")),
             ("b", make_video(tmp_path, "b.mp4", 6))]
    a, gone, b = make_scorer("crash").score(items)
    assert (a.reason, gone.reason, b.reason) == ("vbench_failed", "video_missing", "vbench_failed")
    assert a.error == b.error
    assert "exit code 1" in a.error
    assert "RuntimeError: CUDA out of memory (fake VBench crash)" in a.error
    assert "_score" in a.error  # a frame of the fake's own traceback
    assert len(a.error.splitlines()) <= 16


def test_timeout_fails_the_batch(tmp_path):
    start = time.monotonic()
    (result,) = make_scorer("hang", timeout=1).score([("a", make_video(tmp_path, "a.mp4", 5))])
    assert time.monotonic() - start < 30
    assert result.reason == "vbench_failed" and "timeout" in result.error


@pytest.mark.parametrize("fail, message", [("nowrite", "without writing"), ("badjson", "not valid JSON")])
def test_results_file_problems_fail_the_batch(tmp_path, fail, message):
    (result,) = make_scorer(fail).score([("a", make_video(tmp_path, "a.mp4", 5))])
    assert result.reason == "vbench_failed" and message in result.error


@pytest.mark.parametrize("python", [sys.executable, "/nonexistent/vbench-env/bin/python"])
def test_python_without_vbench_is_unavailable(python):
    with pytest.raises(VBenchUnavailable) as info:
        VBenchScorer(dimensions=("dynamic_degree",), python=python)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert python in message
    for hint in ("own environment", "-m venv", "pip install vbench", "VBENCH_CACHE_DIR", "local=True"):
        assert hint in message


def test_unknown_dimension_is_value_error():
    with pytest.raises(ValueError, match="unknown VBench quality dimension"):
        make_scorer(dimensions=("subject_consistency", "overall_consistency"))


def test_work_folders_are_removed_after_success_and_failure(tmp_path, monkeypatch):
    video = make_video(tmp_path, "a.mp4", 5)
    work = tmp_path / "work"
    work.mkdir()
    for fail in ("", "crash"):
        make_scorer(fail, work_dir=work).score([("a", video)])
        assert os.listdir(work) == []
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    assert make_scorer().score([("a", video)])[0].ok
    assert os.listdir(system_tmp) == []


@pytest.mark.parametrize("refused", [("symlink",), ("symlink", "link")])
def test_videos_are_linked_or_copied_where_symlinks_are_refused(tmp_path, monkeypatch, refused):
    def refuse(*args, **kwargs):
        raise OSError("not supported here")

    for name in refused:
        monkeypatch.setattr(os, name, refuse)
    (result,) = make_scorer(dimensions=("imaging_quality",)).score([("a", make_video(tmp_path, "a.mp4", 250))])
    assert result.scores == pytest.approx({"imaging_quality": 0.25})
