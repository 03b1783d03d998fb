"""Object storage through a real S3-compatible server on loopback (moto's server mode): mirrored outputs, shard
completion markers checked on resume, inputs read from the bucket, and the readers (`shards verify`, the trainer's
mixture) on `s3://` folders."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest

import shards
from yume_core import remote
from yume_core.manifest import OK


def _fs():
    return fsspec.filesystem("s3")


def _sekai(tmp_path, clips=6):
    from yume_core.sample_data import make_sekai_sample

    return make_sekai_sample(tmp_path / "sekai", n_clips=clips, n_frames=40, size=(64, 36))


def _clips(sample, **kw):
    import quantize_actions
    from yume_core.sekai import check_frame_counts, probe_clips, read_sekai_csv

    table = read_sekai_csv(*sample, **kw)
    table = probe_clips(table)
    table = quantize_actions.quantize_table(table, quantize_actions.QuantizeConfig())
    return check_frame_counts(table)


def _in_bucket(sample, url):
    """The sample's CSV, videos and cameras folders, uploaded under `url`, as the three URLs."""
    _upload_tree(sample.out_dir, url)
    return tuple(f"{url}/{p.relative_to(sample.out_dir).as_posix()}"
                 for p in (sample.csv_path, sample.videos_dir, sample.cameras_dir))


def _upload_tree(local, url):
    _fs().put(str(local) + "/", url.rstrip("/") + "/", recursive=True)


def test_urls_and_staging_dirs_are_stable():
    assert remote.is_url("s3://b/x") and remote.is_url("gs://b") and not remote.is_url("/data/x")
    assert not remote.is_url("file:///data/x") and not remote.is_url("relative/x")
    assert remote.join("s3://b/p/", "shards", "a.tar") == "s3://b/p/shards/a.tar"
    assert remote.staging_dir("s3://b/out") == remote.staging_dir("s3://b/out/")
    assert remote.staging_dir("s3://b/out") != remote.staging_dir("s3://b/out2")


def test_storage_options_must_be_a_json_object(monkeypatch):
    monkeypatch.setenv(remote.OPTIONS_ENV, "")  # restored after the test: the options reach every later URL
    with pytest.raises(ValueError, match="not JSON"):
        remote.set_storage_options("{endpoint_url: x")
    with pytest.raises(ValueError, match="JSON object"):
        remote.set_storage_options("[1]")
    remote.set_storage_options({"anon": True})
    assert remote.storage_options() == {"anon": True}


def test_mirrored_shards_reach_the_bucket_with_markers_and_verify_there(s3_bucket, tmp_path):
    sample = _sekai(tmp_path)
    table = _clips((sample.csv_path, sample.videos_dir, sample.cameras_dir))
    local = remote.open_output(f"{s3_bucket}/out")
    cfg = shards.ShardConfig(max_count=2)
    shards.write_shards(table, f"{local}/shards", cfg)
    names = sorted(p.rsplit("/", 1)[-1] for p in _fs().find(f"{s3_bucket}/out/shards"))
    tars = [n for n in names if n.endswith(".tar")]
    assert len(tars) == 3 and "index.parquet" in names
    for tar in tars:
        marker = json.loads(_fs().cat(f"{s3_bucket}/out/shards/_index/{tar[:-4]}.done.json"))
        assert marker["bytes"] == _fs().size(f"{s3_bucket}/out/shards/{tar}")
        assert marker["sha256"] == remote.sha256_of(f"{s3_bucket}/out/shards/{tar}") and marker["samples"] == 2
    report = shards.verify_shards(f"{s3_bucket}/out/shards")
    assert report.ok, report.errors
    assert (report.shards, report.samples) == (3, 6)

    # in the bucket as on a disk: a missing marker, or one whose sha256 is not the tar's, fails
    _fs().rm(f"{s3_bucket}/out/shards/_index/shard-000000.done.json")
    marker = f"{s3_bucket}/out/shards/_index/shard-000002.done.json"
    _fs().pipe(marker, json.dumps({**json.loads(_fs().cat(marker)), "sha256": "0" * 64}).encode())
    report = shards.verify_shards(f"{s3_bucket}/out/shards")
    assert [(s, m.split(" (")[0].split(",")[0]) for s, _, m in report.errors] == [
        ("shard-000000.tar", "no completion marker"),
        ("shard-000002.tar", f"tar's sha256 is {remote.sha256_of(f'{s3_bucket}/out/shards/shard-000002.tar')}"),
    ], shards.format_report(report)


def test_resume_checks_markers_against_the_bucket(s3_bucket, tmp_path):
    """A rerun on a fresh machine (empty staging) fetches the small state and skips finished shards without
    fetching them; a tar altered in the bucket (same size) or whose marker is missing is written again."""
    sample = _sekai(tmp_path)
    table = _clips((sample.csv_path, sample.videos_dir, sample.cameras_dir))
    cfg = shards.ShardConfig(max_count=2)
    url = f"{s3_bucket}/out"
    shards.write_shards(table, f"{remote.open_output(url)}/shards", cfg)
    before = {p: _fs().cat(p) for p in _fs().find(f"{url}/shards") if p.endswith(".tar")}

    shutil.rmtree(remote.staging_dir(url))  # another machine
    local = remote.open_output(url)
    assert not list((remote.staging_dir(url) / "shards").glob("*.tar"))  # payloads are not fetched
    assert (remote.staging_dir(url) / "shards" / "_index" / "shard-000001.done.json").is_file()

    first, second, third = sorted(before)
    data = bytearray(before[first])
    data[-2000] ^= 0xFF  # a flipped byte inside the last sample: same size, other bytes
    _fs().pipe(first, bytes(data))
    _fs().rm(second.replace("shard-000001.tar", "_index/shard-000001.done.json"))
    stamps = {p: _fs().info(p)["LastModified"] for p in before}
    time.sleep(1.1)  # the bucket's modification times have whole seconds
    shards.write_shards(table, f"{local}/shards", cfg)
    _fs().invalidate_cache()
    rewritten = [p for p in before if _fs().info(p)["LastModified"] != stamps[p]]
    assert rewritten == [first, second]  # shard 2 was checked in the bucket and kept
    assert not list((remote.staging_dir(url) / "shards").glob("*.tar"))  # uploaded, then dropped from staging
    after = {p: _fs().cat(p) for p in before}
    assert after == before  # rewritten to the same bytes
    assert shards.verify_shards(f"{url}/shards").ok


def test_a_smaller_plan_removes_stale_shards_from_the_bucket(s3_bucket, tmp_path):
    sample = _sekai(tmp_path)
    table = _clips((sample.csv_path, sample.videos_dir, sample.cameras_dir))
    url = f"{s3_bucket}/out"
    shards.write_shards(table, f"{remote.open_output(url)}/shards", shards.ShardConfig(max_count=2))
    shutil.rmtree(remote.staging_dir(url))
    shards.write_shards(table, f"{remote.open_output(url)}/shards", shards.ShardConfig(max_count=4))
    left = sorted(p.rsplit("/", 1)[-1] for p in _fs().find(f"{url}/shards"))
    assert [n for n in left if n.endswith(".tar")] == ["shard-000000.tar", "shard-000001.tar"]
    assert "shard-000002.done.json" not in left and "shard-000002.parquet" not in left
    assert shards.verify_shards(f"{url}/shards").ok


def test_inputs_read_from_the_bucket_give_the_same_clips(s3_bucket, tmp_path):
    sample = _sekai(tmp_path)
    remote_table = _clips(_in_bucket(sample, f"{s3_bucket}/sekai"))
    local_table = _clips((sample.csv_path, sample.videos_dir, sample.cameras_dir))
    assert remote_table["video_path"][0].as_py().startswith(f"{s3_bucket}/sekai/")
    same = ["clip_id", "status", "reason", "video_sha256", "video_frames", "keys", "mouse"]
    assert remote_table.select(same).equals(local_table.select(same))
    out_remote, out_local = tmp_path / "from_s3", tmp_path / "from_disk"
    a = shards.write_shards(remote_table, out_remote, shards.ShardConfig(max_count=3))
    b = shards.write_shards(local_table, out_local, shards.ShardConfig(max_count=3))
    assert a["status"].to_pylist() == b["status"].to_pylist() == [OK] * 6
    mp4 = lambda index: [[m for m in ms if m["ext"] == "mp4"] for ms in index["members"].to_pylist()]  # noqa: E731
    assert mp4(a) == mp4(b)  # the same video bytes (the json differs: it records where the sources were)


def test_a_missing_input_object_fails_its_row_only(s3_bucket, tmp_path):
    sample = _sekai(tmp_path, clips=3)
    urls = _in_bucket(sample, f"{s3_bucket}/sekai")
    gone = sorted(_fs().find(urls[1]))[0]
    _fs().rm(gone)
    table = _clips(urls)
    assert table["status"].to_pylist().count(OK) == 2
    failed = [r for r in table.to_pylist() if r["status"] != OK]
    assert failed[0]["reason"] == "video_missing" and gone.rsplit("/", 1)[-1] in failed[0]["error"]


def test_the_trainer_reads_a_mixture_in_the_bucket(s3_bucket, tmp_path):
    from pipelines.sample_mixture import make_sample_mixture
    from training_stub.data import DataConfig
    from training_stub.mixture import MixtureWindows

    mixture = make_sample_mixture(tmp_path / "mix", clips=4, videos=2)
    _upload_tree(mixture.parent, f"{s3_bucket}/build")
    data = DataConfig(shuffle_buffer=4)
    here = MixtureWindows.open(mixture, data, log=lambda _: None)
    there = MixtureWindows.open(f"{s3_bucket}/build/mixture.yaml", data, log=lambda _: None)
    assert [s.path for s in there.sources][0].startswith(f"{s3_bucket}/build/")
    assert [(s.name, s.weight, s.tasks) for s in there.sources] == [(s.name, s.weight, s.tasks) for s in here.sources]
    for step in range(4):
        a, b = here.step(step, 2), there.step(step, 2)
        assert a.task == b.task and a.sets == b.sets
        assert [w["key"] for w in a.windows] == [w["key"] for w in b.windows]
        for wa, wb in zip(a.windows, b.windows):
            np.testing.assert_array_equal(wa["chunk"].numpy(), wb["chunk"].numpy())
            assert (wa["chunk_start"], wa["actions"], wa["text"]) == (wb["chunk_start"], wb["actions"], wb["text"])


def test_a_fresh_machine_fetches_a_generated_input_folder_whole(s3_bucket, tmp_path):
    """What a build resumed elsewhere needs of the inputs it generated into its own output: every file, videos too."""
    from yume_core.storage import atomic_write_bytes

    url = f"{s3_bucket}/build"
    local = Path(remote.open_output(url))
    for name in ("input/sekai/videos/a.mp4", "input/sekai/videos/b.mp4", "input/openvid.csv"):
        atomic_write_bytes(local / name, name.encode() * 100)
    shutil.rmtree(local)
    local = Path(remote.open_output(url))
    assert not (local / "input/sekai/videos/a.mp4").exists()  # payloads are not part of the state
    assert remote.ensure_local_tree(local / "input/sekai/videos") == local / "input/sekai/videos"
    assert sorted(p.name for p in (local / "input/sekai/videos").iterdir()) == ["a.mp4", "b.mp4"]
    assert (local / "input/sekai/videos/b.mp4").read_bytes() == b"input/sekai/videos/b.mp4" * 100
    assert remote.ensure_local_tree(local / "input/openvid.csv").read_bytes() == b"input/openvid.csv" * 100


def test_an_output_in_a_missing_bucket_is_one_clear_error_and_the_mirror_marker_stays_local(s3_bucket, tmp_path):
    from yume_core.errors import InputError

    with pytest.raises(InputError, match="bucket 'no-such-bucket' does not exist"):
        remote.open_output("s3://no-such-bucket/out")
    local = Path(remote.open_output(f"{s3_bucket}/out"))
    (local / "a.txt").write_text("x")
    remote.finish_output(local)
    assert sorted(p.rsplit("/", 1)[-1] for p in _fs().find(f"{s3_bucket}/out")) == ["a.txt"]
