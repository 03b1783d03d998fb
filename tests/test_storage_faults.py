"""Object storage that keeps failing (moto's S3 server behind a proxy that answers chosen requests with 503
SlowDown or drops the connection): a failure that outlasts the retries ends the command with one line naming the
object, the store's error code and the attempts made, and a rerun against a healthy store finishes the job."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from faulty_proxy import FaultyProxy
from object_store import env_for_subprocess
from yume_core import remote

FEW_RETRIES = {"config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 2}}}  # x s3fs's 5 tries


def _through(proxy: FaultyProxy, monkeypatch) -> None:
    """This process's S3 requests go through `proxy`, with FEW_RETRIES (no filesystem cached for another
    endpoint)."""
    import fsspec

    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv(remote.OPTIONS_ENV, json.dumps(FEW_RETRIES))
    remote._filesystem.cache_clear()
    fsspec.filesystem("s3").clear_instance_cache()


def test_an_upload_throttled_past_the_retries_names_the_object_the_code_and_every_attempt(s3_endpoint, s3_bucket,
                                                                                           tmp_path, monkeypatch):
    local = Path(remote.open_output(f"{s3_bucket}/out"))
    (local / "a.done.json").write_text("{}")
    with FaultyProxy(s3_endpoint, r"^PUT .*\.done\.json", slow_down=1.0) as proxy:
        _through(proxy, monkeypatch)
        with pytest.raises(remote.StorageError) as caught:
            remote.mirror_for(local / "a.done.json").push(local / "a.done.json")
        error = caught.value
        [(request, served)] = proxy.faults.items()
        assert request.endswith("/out/a.done.json") and served == 10  # 2 botocore attempts x 5 s3fs tries
        assert (error.url, error.code, error.attempts) == (f"{s3_bucket}/out/a.done.json", "SlowDown", served)
        assert str(error).startswith(f"{s3_bucket}/out/a.done.json: object storage answered SlowDown (HTTP 503; "
                                     "Please reduce your request rate.) to 10 attempts; ")
        import pickle

        assert str(pickle.loads(pickle.dumps(error))) == str(error)  # it crosses process pools and Ray

        proxy.healthy()
        remote.mirror_for(local / "a.done.json").push(local / "a.done.json")
        assert remote.read_bytes(f"{s3_bucket}/out/a.done.json") == b"{}"


def test_a_dropped_connection_past_the_retries_is_one_error_too(s3_endpoint, s3_bucket, tmp_path, monkeypatch):
    local = Path(remote.open_output(f"{s3_bucket}/out"))
    with FaultyProxy(s3_endpoint, r"^GET .*/state\.json", reset=1.0) as proxy:
        _through(proxy, monkeypatch)
        with pytest.raises(remote.StorageError) as caught:
            remote.Mirror(local, f"{s3_bucket}/out").pull(local / "state.json")
    assert caught.value.url == f"{s3_bucket}/out/state.json"
    assert caught.value.code == "ConnectionClosedError" and proxy.faults
    assert "check the endpoint (AWS_ENDPOINT_URL / --storage-options) and the network" in str(caught.value)


def test_a_ranged_read_that_keeps_failing_is_one_error_whoever_reads(s3_endpoint, s3_bucket, monkeypatch):
    """The object opens (its HEAD is answered), then every GET of its bytes is throttled: pyarrow reading a parquet
    and tarfile reading a member get StorageError naming the object, not the store's OSError."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    table, member = io.BytesIO(), io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2, 3]}), table)
    with tarfile.open(fileobj=member, mode="w") as tar:
        info = tarfile.TarInfo("x.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    for name, data in (("t.parquet", table.getvalue()), ("t.tar", member.getvalue())):
        remote.filesystem(f"{s3_bucket}/in/{name}")[0].pipe(f"{s3_bucket[5:]}/in/{name}", data)
    with FaultyProxy(s3_endpoint, r"^GET .*/in/t\.", slow_down=1.0) as proxy:
        _through(proxy, monkeypatch)
        for name, read in (("t.parquet", pq.read_table), ("t.tar", lambda f: tarfile.open(fileobj=f).getnames())):
            url = f"{s3_bucket}/in/{name}"
            with remote.open_input(url) as f, pytest.raises(remote.StorageError) as caught:
                read(f)
            assert (caught.value.url, caught.value.code) == (url, "SlowDown"), caught.value
        assert proxy.faults
        proxy.healthy()
        with remote.open_input(f"{s3_bucket}/in/t.parquet") as f:
            assert pq.read_table(f)["a"].to_pylist() == [1, 2, 3]


def test_s3_requests_are_retried_in_botocores_adaptive_mode_unless_the_user_chose(monkeypatch):
    for name in remote.AWS_RETRY_ENV:
        monkeypatch.delenv(name, raising=False)
    assert remote._with_retries("s3", {"anon": True}) == {"anon": True, "config_kwargs": {"retries": remote.S3_RETRIES}}
    mine = {"config_kwargs": {"retries": {"mode": "legacy"}, "connect_timeout": 5}}
    assert remote._with_retries("s3", mine) == mine
    assert remote._with_retries("gs", {}) == {}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "9")  # botocore reads it when the config does not say
    assert remote._with_retries("s3", {}) == {}


@pytest.mark.slow
def test_a_bucket_that_throttles_some_requests_and_resets_some_uploads_still_gets_the_bytes_of_a_clean_run(
        s3_endpoint, s3_bucket, tmp_path):
    """15% of every request answered 503 SlowDown and 5% of uploads reset, with the default retries: the run
    finishes, and the bucket holds what a run against a healthy store wrote, byte for byte."""
    import hashlib
    import subprocess

    import fsspec

    from yume_core.sample_data import make_sekai_sample

    sample = make_sekai_sample(tmp_path / "sekai", n_clips=6, n_frames=40, size=(64, 36))

    def run(endpoint: str, out: str, staging: str) -> dict[str, str]:
        env = env_for_subprocess(endpoint, tmp_path / staging)
        env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), SOURCE_DATE_EPOCH="1767225600")
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "real-world", "--csv", str(sample.csv_path),
                               "--videos", str(sample.videos_dir), "--trajectories", str(sample.cameras_dir),
                               "--output", out, "--batch-size", "2", "--shard-max-count", "2", "--workers", "2"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        fs = fsspec.filesystem("s3", skip_instance_cache=True, endpoint_url=s3_endpoint)
        return {p[len(out) - 5:]: hashlib.sha256(fs.cat(p)).hexdigest() for p in sorted(fs.find(out))
                if "/shards/" in p or p.endswith("manifest.parquet")}

    clean = run(s3_endpoint, f"{s3_bucket}/clean", "a")
    with FaultyProxy(s3_endpoint, ".", slow_down=0.15, reset=0.05, reset_pattern=r"^(PUT|POST) ", seed=3) as proxy:
        faulty = run(proxy.endpoint, f"{s3_bucket}/faulty", "b")
    served = sum(proxy.faults.values())
    assert served >= 3 and any(k.startswith(("PUT ", "POST ")) for k in proxy.faults), proxy.faults
    assert faulty == clean and sum(k.endswith(".tar") for k in clean) == 3
    print(f"{served} faults served: {dict(proxy.faults)}")


@pytest.mark.slow
def test_a_bucket_that_throttles_every_marker_ends_the_command_in_one_line_and_a_rerun_finishes(
        s3_endpoint, s3_bucket, tmp_path):
    from yume_core.sample_data import make_sekai_sample

    sample = make_sekai_sample(tmp_path / "sekai", n_clips=2, n_frames=40, size=(64, 36))
    out = f"{s3_bucket}/out"
    command = [sys.executable, "-m", "pipelines.cli", "real-world", "--csv", str(sample.csv_path),
               "--videos", str(sample.videos_dir), "--trajectories", str(sample.cameras_dir), "--output", out,
               "--storage-options", json.dumps(FEW_RETRIES), "--workers", "1"]
    import subprocess

    with FaultyProxy(s3_endpoint, r"^PUT .*\.done\.json", slow_down=1.0) as proxy:
        env = env_for_subprocess(proxy.endpoint, tmp_path / "staging")
        env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
        started = time.monotonic()
        failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert failed.returncode == 2, failed.stderr[-3000:]
        assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
        lines = [line for line in failed.stderr.splitlines() if line.strip() and "batch/s]" not in line]
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}/shards/_index/shard-000000.done.json: object "
                                                       "storage answered SlowDown (HTTP 503"), failed.stderr[-3000:]
        assert f"to {proxy.faults[f'PUT /{out[5:]}/shards/_index/shard-000000.done.json']} attempts;" in lines[0]
        print(f"throttled run failed in {time.monotonic() - started:.0f} s")

        proxy.healthy()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    import shards

    report = shards.verify_shards(f"{out}/shards")
    assert report.ok and report.samples == 2, shards.format_report(report)
    assert remote.exists(f"{out}/shards/_index/shard-000000.done.json")
