"""`yume-data filter` and `yume-data review`: a synthesis manifest in, scored and cut (or screened) manifests out."""

import json
import sys
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import filtering.stage
from filtering import QUALITY_DIMENSIONS
from pipelines.cli import main
from pipelines.cli_filtering import DIMENSIONS
from pipelines.filtering import FILTER, run_filter_flow
from yume_core.errors import InputError
from yume_core.manifest import read_manifest, write_manifest
from yume_core.media import write_video


def _frames(kind: str, seed: int, n: int = 9, size: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "static":
        frame = rng.integers(0, 255, (size, size, 3), np.uint8)
        return [frame] * n
    return [rng.integers(0, 255, (size, size, 3), np.uint8) for _ in range(n)]  # flickering noise


@pytest.fixture
def synthesized(tmp_path):
    """A synthesis-like output folder: 3 steady videos, 2 of noise, a broken file, a row failed upstream."""
    root = tmp_path / "synth"
    kinds = {"steady-0": "static", "steady-1": "static", "steady-2": "static", "noise-0": "noise", "noise-1": "noise"}
    for seed, (key, kind) in enumerate(kinds.items()):
        write_video(root / "videos" / f"{key}.mp4", _frames(kind, seed), fps=8)
    (root / "videos" / "broken.mp4").write_bytes(b"not a video at all")
    keys = [*kinds, "broken", "empty"]
    table = pa.table({
        "prompt_id": keys,
        "caption": [f"caption of {k}" for k in keys],
        "status": ["ok"] * 6 + ["failed"],
        "reason": [None] * 6 + ["empty_prompt"],
        "error": [None] * 6 + ["the prompt is empty"],
        "video_path": [f"videos/{k}.mp4" for k in keys[:-1]] + [None],
    })
    write_manifest(table, root / "manifest.parquet")
    return root / "manifest.parquet"


@pytest.fixture
def scorer_loads(monkeypatch):
    loads = []
    real = filtering.stage.make_scorer

    def counting(config):
        loads.append(config)
        return real(config)

    monkeypatch.setattr(filtering.stage, "make_scorer", counting)
    monkeypatch.setattr(filtering.stage, "_cached", {})
    return loads


def test_filter_keeps_the_steady_videos_and_reruns_score_nothing(synthesized, tmp_path, scorer_loads):
    out = tmp_path / "filtered"
    config = FILTER.config("tiny", {"batch_size": 3, "top": {"keep": 3, "keep_fraction": 1.0}})
    summary = run_filter_flow(str(synthesized), str(out), config)
    rows = {r["prompt_id"]: r for r in read_manifest(out / "manifest.parquet").to_pylist()}
    assert (summary["in"], summary["ok"], summary["dropped"], summary["failed"]) == (7, 3, 2, 2)
    assert {k for k, r in rows.items() if r["status"] == "ok"} == {"steady-0", "steady-1", "steady-2"}
    assert rows["noise-0"]["reason"] == "below_top_k" and rows["broken"]["status"] == "failed"
    assert rows["empty"]["reason"] == "empty_prompt"
    assert rows["steady-0"]["vbench_temporal_flickering"] == pytest.approx(1.0)
    assert rows["noise-0"]["vbench_temporal_flickering"] < 0.9
    for r in rows.values():  # paths now resolve from the output folder
        assert r["video_path"] is None or (out / r["video_path"]).resolve().is_file() or r["prompt_id"] == "broken"
    figures = json.loads((out / "summary.json").read_text())["filtering"]
    assert figures["scored"] == 5 and figures["kept"] == 3 and figures["cut_score"] is not None
    assert (out / "quality_scores.png").read_bytes()[:4] == b"\x89PNG"
    assert len(scorer_loads) == 1

    parts = sorted((out / "_work").glob("score-*/part-*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in parts]
    scorer_loads.clear()
    wider = FILTER.config("tiny", {"batch_size": 3, "top": {"keep": 4, "keep_fraction": 1.0}})
    summary = run_filter_flow(str(synthesized), str(out), wider)
    assert summary["ok"] == 4 and scorer_loads == []  # a new cut, no new scoring
    assert [p.stat().st_mtime_ns for p in parts] == mtimes


def test_filter_refuses_to_overwrite_its_input(synthesized):
    with pytest.raises(InputError, match="another folder"):
        run_filter_flow(str(synthesized), str(synthesized.parent), FILTER.config("tiny"))


def test_filter_and_review_from_the_command_line(synthesized, tmp_path):
    runner = CliRunner()
    out = tmp_path / "filtered"
    result = runner.invoke(main, ["filter", "--manifest", str(synthesized), "-o", str(out), "--preset", "tiny",
                                  "--keep", "4", "--keep-fraction", "1", "--dimension", "temporal_flickering"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = read_manifest(out / "manifest.parquet")
    assert [c for c in table.column_names if c.startswith("vbench_")] == ["vbench_temporal_flickering"]

    pages = tmp_path / "review"
    result = runner.invoke(main, ["review", "make", "--manifest", str(out / "manifest.parquet"), "-o", str(pages)])
    assert result.exit_code == 0, result.output
    assert (pages / "index.html").is_file()
    decisions = tmp_path / "decisions.csv"
    kept = [r["prompt_id"] for r in table.to_pylist() if r["status"] == "ok"]
    decisions.write_text("key,decision,note\n" + f"{kept[0]},keep,\n{kept[1]},reject,blurry hands\n")
    screened = tmp_path / "screened"
    result = runner.invoke(main, ["review", "apply", "--manifest", str(out / "manifest.parquet"), "--decisions",
                                  str(decisions), "-o", str(screened)])
    assert result.exit_code == 0, result.output
    rows = {r["prompt_id"]: r for r in read_manifest(screened / "manifest.parquet").to_pylist()}
    assert [k for k, r in rows.items() if r["status"] == "ok"] == [kept[0]]
    assert rows[kept[1]]["reason"] == "rejected_in_review" and "blurry hands" in rows[kept[1]]["error"]
    assert os.path.isfile(screened / rows[kept[0]]["video_path"])

    decisions.write_text("key,decision\nnobody,keep\n")
    result = runner.invoke(main, ["review", "apply", "--manifest", str(out / "manifest.parquet"), "--decisions",
                                  str(decisions), "-o", str(tmp_path / "again")])
    assert result.exit_code == 2 and "nobody" in result.output and str(decisions) in result.output


def test_cli_errors_are_one_clear_line(synthesized, tmp_path):
    """Bad settings end the command like bad input files: one line, exit status 2."""
    result = CliRunner().invoke(main, ["filter", "--manifest", str(synthesized), "-o", str(tmp_path / "x"),
                                       "--preset", "native", "--device", "cpu"])
    assert result.exit_code == 2 and "aesthetic" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["filter", "--manifest", str(synthesized), "-o", str(tmp_path / "y"),
                                       "--preset", "nonesuch"])
    assert result.exit_code == 2 and "tiny" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_vbench_that_crashes_on_the_first_batch_stops_the_run(synthesized, tmp_path, monkeypatch):
    """VBench (here its fake, crashing) fails the first batch's three videos alike: with fail_fast 3 the run ends
    with that error in one line (exit 2) instead of marking them failed and starting VBench again for every other
    batch."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent / "fake_vbench"))
    monkeypatch.setenv("FAKE_VBENCH_FAIL", "crash")
    settings = tmp_path / "filter.yaml"
    settings.write_text("score: {fail_fast: 3}\n")
    result = CliRunner().invoke(main, ["filter", "--manifest", str(synthesized), "-o", str(tmp_path / "o"),
                                       "--backend", "vbench", "--vbench-python", sys.executable, "--batch-size", "3",
                                       "--dimension", "temporal_flickering", "--config", str(settings)])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "first 3 videos scored all failed with vbench_failed (VBench failed (exit code 1)" in line
    assert "RuntimeError: CUDA out of memory (fake VBench crash))" in line and "score.fail_fast: 0" in line
    assert "Traceback" not in result.output and not (tmp_path / "o" / "manifest.parquet").exists()


def test_cli_dimension_choices_are_the_stage_s():
    assert DIMENSIONS == QUALITY_DIMENSIONS
    assert Path(filtering.stage.__file__).parent.joinpath("presets", "yume15.yaml").is_file()


def test_a_filtered_manifest_can_be_filtered_again(synthesized, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_filter_flow(str(synthesized), str(first), FILTER.config("tiny", {"top": {"keep": 4, "keep_fraction": 1.0}}))
    summary = run_filter_flow(str(first / "manifest.parquet"), str(second),
                              FILTER.config("tiny", {"top": {"keep": 2, "keep_fraction": 1.0}}))
    table = read_manifest(second / "manifest.parquet")
    assert len(table.column_names) == len(set(table.column_names))  # scores and ranks replaced, not doubled
    assert summary["ok"] == 2 and table["quality_rank"].null_count == 3  # the 2 failed + the one cut the first time
