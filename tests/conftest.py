"""Every test runs offline, with Prefect state in a throwaway home and no analytics."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="yume-data-tests-prefect-")
os.environ.setdefault("PREFECT_HOME", _home)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Prefect's temporary server gets 20 s to start by default; on two busy cores it sometimes needs more
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# A small demo build (4 Sekai clips, 16 OpenVid captions, tiny models): made once per test session and shared by
# the tests that read a finished build (sets, mixture, card, readers). Tests that change a build copy it first.
SMALL_BUILD = {"generate": {"clips": 4, "openvid_captions": 16}}
BUILD_TIME = "1767225600"  # 2026-01-01: every build of the suite has the same build time


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> Path:
    from pipelines.build import build_config, run_build_flow

    out = tmp_path_factory.mktemp("demo-build") / "out"
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = BUILD_TIME
    try:
        run_build_flow(out, build_config("demo", SMALL_BUILD), "demo")
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old
    return out


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test, then the caller's count again."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """An S3-compatible server on loopback (moto's server mode) for the session; its endpoint URL."""
    from object_store import moto_server

    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture
def s3_bucket(s3_endpoint, tmp_path, monkeypatch):
    """A fresh bucket on that server, the AWS environment pointing at it and a staging folder of this test's;
    returns the bucket's URL."""
    from object_store import apply_env, new_bucket

    apply_env(monkeypatch, s3_endpoint, tmp_path / "staging")
    return f"s3://{new_bucket()}"
