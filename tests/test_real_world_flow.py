"""The real-world flow end to end on generated Sekai data, in Prefect's embedded mode."""

import hashlib
import json

import pyarrow.compute as pc
import pytest
import webdataset as wds

import shards
from pipelines.real_world import RealWorldConfig, run_flow
from pipelines.runners import RunnerConfig
from yume_core.config import from_dict
from yume_core.manifest import read_manifest
from yume_core.sample_data import make_sekai_sample

ALL_FAULTS = (
    "video_missing",
    "camera_missing",
    "video_truncated",
    "video_unreadable",
    "poses_nonfinite",
    "camera_unreadable",
    "frame_mismatch",
    "duplicate",
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sekai_sample(
        tmp_path_factory.mktemp("sekai"), n_clips=5, n_frames=80, size=(64, 36), faults=ALL_FAULTS
    )


def _config(**shard_kw) -> RealWorldConfig:
    return from_dict(
        RealWorldConfig,
        {"batch_size": 3, "runner": {"kind": "threads", "workers": 2}, "shards": {"max_count": 2, **shard_kw}},
    )


def _run(sample, out, cfg=None):
    return run_flow(str(sample.csv_path), str(sample.videos_dir), str(sample.cameras_dir), str(out), cfg or _config())


@pytest.fixture(scope="module")
def first_run(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, _run(sample, out)


def test_every_csv_row_ends_with_the_expected_status_and_reason(sample, first_run):
    out, summary = first_run
    manifest = read_manifest(out / "manifest.parquet")
    csv_rows = sample.csv_path.read_text().strip().count("\n")
    assert manifest.num_rows == csv_rows == summary["in"]
    assert manifest["csv_row"].to_pylist() == list(range(csv_rows))
    got = list(zip(manifest["status"].to_pylist(), manifest["reason"].to_pylist()))
    want = [(e.status, e.reason) if e else ("ok", None) for e in sample.expected]
    assert got == want
    assert summary["ok"] == 5 and summary["failed"] + summary["dropped"] == len(ALL_FAULTS)
    for row in manifest.filter(pc.not_equal(manifest["status"], "ok")).to_pylist():
        assert row["error"] and len(row["error"]) > 20, row  # a sentence a person can act on
        assert row["shard"] is None


def test_good_rows_carry_actions_and_land_in_shards(first_run):
    out, _ = first_run
    manifest = read_manifest(out / "manifest.parquet")
    ok = manifest.filter(pc.equal(manifest["status"], "ok")).to_pylist()
    for row in ok:
        assert len(row["keys"]) == len(row["mouse"]) == row["num_poses"] - 1
        assert abs(row["video_frames"] - row["num_poses"]) <= 1
        assert row["shard"] and (out / "shards" / row["shard"]).exists()
        assert row["video_sha256"] == hashlib.sha256(open(row["video_path"], "rb").read()).hexdigest()
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    assert len(tars) == 3  # 5 clips, 2 per shard
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    assert sorted(s["__key__"] for s in samples) == sorted(r["clip_id"] for r in ok)
    by_key = {s["__key__"]: s for s in samples}
    for row in ok:
        meta = by_key[row["clip_id"]]["json"]
        assert meta["actions"]["keys"] == row["keys"] and meta["actions"]["mouse"] == row["mouse"]
        # published labels, nothing dropped by flags: the sample is what it was before modes and checks existed
        assert not {"mode", "heading", "checks", "trajectory_flags"} & set(meta["actions"])
        assert by_key[row["clip_id"]]["npy"].shape == (row["num_poses"], 4, 4)
    assert shards.verify_shards(out / "shards", decode=True).ok


def test_summary_histogram_and_artifacts_are_written(sample, first_run):
    out, summary = first_run
    saved = json.loads((out / "summary.json").read_text())
    assert saved["in"] == summary["in"] and saved["by_reason"] == summary["by_reason"]
    assert {r["reason"] for r in saved["by_reason"]} >= {"video_truncated", "duplicate_video", "frame_count_mismatch"}
    manifest = read_manifest(out / "manifest.parquet")
    ok_keys = manifest.filter(pc.equal(manifest["status"], "ok"))["keys"].to_pylist()
    assert sum(saved["actions"]["keys"].values()) == sum(len(k) for k in ok_keys) > 0
    assert (out / "actions_histogram.png").stat().st_size > 1000
    # the generated walker stands perfectly still (no estimation noise): its stands are poses that do not change
    # while the clip moves elsewhere, which is what `frozen` means; nothing else is flagged
    checked = [r for r in manifest.to_pylist() if r["trajectory_flags"] is not None]
    for row in checked:
        stands = any(seg.action == "stand_still" for seg in sample.segments[row["clip_id"]])
        assert row["trajectory_flags"] == (["frozen"] if stands else []), row["clip_id"]
    frozen = sum(bool(r["trajectory_flags"]) for r in checked)
    assert saved["trajectory_flags"] == {"jitter": 0, "jump": 0, "frozen": frozen, "flagged": frozen, "checked": 6}


def test_a_rerun_skips_finished_batches_and_shards(sample, first_run):
    out, summary = first_run
    done = sorted((out / "_work").rglob("part-*.parquet")) + sorted((out / "shards").glob("*.tar"))
    before = {p: p.stat().st_mtime_ns for p in done}
    again = _run(sample, out)
    assert {p: p.stat().st_mtime_ns for p in done} == before
    assert again["in"] == summary["in"] and again["ok"] == summary["ok"]


def test_other_settings_do_not_reuse_stale_parts(sample, first_run, tmp_path):
    out, _ = first_run
    cfg = from_dict(
        RealWorldConfig,
        {"batch_size": 3, "actions": {"stride": 2}, "runner": {"kind": "threads", "workers": 2}, "shards": {"max_count": 2}},
    )
    _run(sample, out, cfg)
    manifest = read_manifest(out / "manifest.parquet")
    ok = manifest.filter(pc.equal(manifest["status"], "ok")).to_pylist()
    assert all(len(r["keys"]) == (r["num_poses"] - 1) // 2 for r in ok)
    assert len(list((out / "_work").glob("clips-*"))) == 2
    assert shards.verify_shards(out / "shards").ok
    samples = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False).decode())
    assert all(s["json"]["actions"]["stride"] == 2 for s in samples)


def test_runner_config_rejects_unknown_kinds():
    from pipelines.runners import make_task_runner

    with pytest.raises(ValueError, match="threads, processes or ray"):
        make_task_runner(RunnerConfig(kind="slurm"))


def test_a_clip_that_fails_while_its_shard_is_written_fails_in_the_manifest():
    import pyarrow as pa

    from shards import attach_shards
    from yume_core.manifest import CLIP_SCHEMA, conform

    manifest = conform(
        pa.table({"clip_id": ["a", "b", "c"], "status": ["ok", "ok", "dropped"], "reason": [None, None, "duplicate_video"],
                  "error": [None, None, "same videoFile as CSV row 0"]}),
        CLIP_SCHEMA,
    )
    index = pa.table({"clip_id": ["a", "b"], "shard": ["shard-000000.tar", None], "status": ["ok", "failed"],
                      "reason": [None, "video_missing"], "error": [None, "video b.mp4 vanished after probing"]})
    out = attach_shards(manifest, index)
    assert out["shard"].to_pylist() == ["shard-000000.tar", None, None]
    assert out["status"].to_pylist() == ["ok", "failed", "dropped"]
    assert out["reason"].to_pylist() == [None, "video_missing", "duplicate_video"]
    assert out["error"][1].as_py() == "video b.mp4 vanished after probing"


def test_fingerprint_follows_values_and_settings_not_chunking():
    import pyarrow as pa

    from pipelines.batching import fingerprint

    t = pa.table({"a": ["x", "y", "z"], "b": [1, 2, 3]})
    chunked = pa.concat_tables([t.slice(0, 1), t.slice(1)])
    assert fingerprint(t, {"s": 1}, ("a", "b")) == fingerprint(chunked, {"s": 1}, ("a", "b"))
    assert fingerprint(t, {"s": 1}, ("a", "b")) != fingerprint(t, {"s": 2}, ("a", "b"))
    assert fingerprint(t, {"s": 1}, ("a",)) != fingerprint(t.slice(1), {"s": 1}, ("a",))


def test_shards_write_and_verify_commands_on_a_finished_manifest(first_run, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import main

    out, summary = first_run
    runner = CliRunner()
    done = runner.invoke(main, ["shards", "write", "--manifest", str(out / "manifest.parquet"), "--output",
                                str(tmp_path / "s"), "--shard-max-count", "1", "--no-poses"])
    assert done.exit_code == 0, done.output
    tars = sorted((tmp_path / "s").glob("*.tar"))
    assert len(tars) == summary["ok"]
    assert not any(s.get("npy") is not None for s in wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    assert runner.invoke(main, ["shards", "verify", str(tmp_path / "s")]).exit_code == 0
    with open(tars[0], "r+b") as f:  # flip a byte inside the first member's payload
        f.seek(600)
        byte = f.read(1)
        f.seek(600)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert runner.invoke(main, ["shards", "verify", str(tmp_path / "s")]).exit_code == 1


@pytest.mark.slow
def test_heading_mode_and_a_dropped_jump_in_the_flow(sample, tmp_path):
    """`actions: {mode: heading, drop_flags: [jump]}`: labels from the heading mode, recorded in every sample; the
    clip whose poses jump is dropped with the flag's reason, and the summary counts it."""
    import shutil

    import numpy as np

    import quantize_actions

    root = tmp_path / "sekai"
    shutil.copytree(sample.out_dir, root)
    moved = {p: root / p.relative_to(sample.out_dir) for p in (sample.csv_path, sample.videos_dir, sample.cameras_dir)}
    def walked(cid):  # steps that translate (pans and stands do not)
        with np.load(sample.camera_path(cid)) as z:
            return np.linalg.norm(np.diff(z["extrinsic"][:, :3, 3], axis=0), axis=1)

    jumpy = max((sample.clip_ids[i] for i in sample.good_rows), key=lambda cid: (walked(cid) > 0).sum())
    camera = moved[sample.cameras_dir] / f"{jumpy}.npz"
    with np.load(camera) as z:
        arrays = dict(z)
    steps = walked(jumpy)
    arrays["extrinsic"][40:, 0, 3] += 12 * np.median(steps[steps > 0])
    np.savez(camera, **arrays)
    cfg = from_dict(RealWorldConfig, {"batch_size": 3, "runner": {"kind": "threads", "workers": 2},
                                      "actions": {"mode": "heading", "drop_flags": ["jump"]}})
    summary = run_flow(str(moved[sample.csv_path]), str(moved[sample.videos_dir]), str(moved[sample.cameras_dir]),
                       str(tmp_path / "out"), cfg)
    manifest = read_manifest(tmp_path / "out" / "manifest.parquet")
    rows = {r["clip_id"]: r for r in manifest.to_pylist() if r["reason"] != "duplicate_video"}
    assert (rows[jumpy]["status"], rows[jumpy]["reason"]) == ("dropped", "trajectory_jump")
    assert summary["trajectory_flags"]["jump"] == 1 and summary["ok"] == 4
    heading = quantize_actions.QuantizeConfig(mode="heading")
    for row in rows.values():
        if row["status"] == "ok":
            keys, _ = quantize_actions.label(quantize_actions.load_trajectory(row["camera_path"]), heading)
            assert row["keys"] == [quantize_actions.KEY_LABELS[k] for k in keys]
    tars = sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    assert len(samples) == 4 and all(s["json"]["actions"]["mode"] == "heading" for s in samples)
    assert all(s["json"]["actions"]["trajectory_flags"] == rows[s["__key__"]]["trajectory_flags"] for s in samples)
    assert all(s["json"]["actions"]["drop_flags"] == ["jump"] for s in samples)
