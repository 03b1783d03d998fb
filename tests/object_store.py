"""An S3-compatible server on loopback for the object-storage tests: moto's server mode, in its own process, with
the standard AWS environment pointing at it (what a user sets for MinIO, Ceph or S3 itself)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from prefect_processes import free_port, stop


def s3_env(endpoint: str) -> dict:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@contextmanager
def moto_server(log: Path):
    """Start `moto_server` on a free loopback port; yields its endpoint URL; stops it (and its children) after."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def new_bucket() -> str:
    """A fresh bucket on the server the environment points at; returns its name."""
    import fsspec

    name = f"yume-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
    return name


def apply_env(monkeypatch, endpoint: str, staging: Path) -> None:
    """This test's process: the S3 environment, a staging folder of its own, no cached filesystem of another
    test's server."""
    from yume_core import remote

    for k, v in s3_env(endpoint).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(remote.STAGING_ENV, str(staging))
    monkeypatch.delenv(remote.OPTIONS_ENV, raising=False)
    remote._filesystem.cache_clear()
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()


def env_for_subprocess(endpoint: str, staging: Path) -> dict:
    from yume_core import remote

    env = dict(os.environ)
    env.update(s3_env(endpoint))
    env[remote.STAGING_ENV] = str(staging)
    return env
