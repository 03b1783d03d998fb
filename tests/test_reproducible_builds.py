"""Same inputs and settings, same bytes: the real-world flow with tiny-random captions run twice, and a run killed
with SIGKILL while probing, captioning or writing shards and then resumed, against a clean run."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.real_world import RealWorldConfig, run_flow
from yume_core.config import from_dict
from yume_core.manifest import read_manifest
from yume_core.sample_data import make_sekai_sample

CAPTIONS = {"backend": "transformers", "model": "tiny-random"}


def _digests(out: Path) -> dict[str, str]:
    """sha256 of what a run promises to reproduce: the tars, the shard index and the manifest."""
    files = [*sorted((out / "shards").glob("*.tar")), out / "shards" / "index.parquet", out / "manifest.parquet"]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sekai_sample(tmp_path_factory.mktemp("sekai"), n_clips=6, n_frames=60, size=(96, 54),
                             faults=("video_missing", "duplicate"))


def test_two_runs_with_tiny_captions_write_the_same_bytes(sample, tmp_path):
    """Two batch tasks at a time on threads share one captioner: each clip's caption is drawn from its own seed,
    so neither the batch it lands in nor what the other thread does changes it. The second output folder holds a
    half-written tar of a killed earlier run: it is removed, so `shards/*.tar` are the shards alone."""
    cfg = from_dict(RealWorldConfig, {"batch_size": 2, "runner": {"workers": 2}, "shards": {"max_count": 2},
                                      "caption": CAPTIONS})
    outs = [tmp_path / "a", tmp_path / "b"]
    (outs[1] / "shards").mkdir(parents=True)
    (outs[1] / "shards" / ".tmp-0badc0de-shard-000000.tar").write_bytes(b"cut short")
    for out in outs:
        run_flow(str(sample.csv_path), str(sample.videos_dir), str(sample.cameras_dir), str(out), cfg)
    captions = [[r["caption_event"] for r in read_manifest(out / "manifest.parquet").to_pylist()] for out in outs]
    assert captions[0] == captions[1] and sum(c is not None for c in captions[0]) >= 3
    assert _digests(outs[0]) == _digests(outs[1])
    assert len(_digests(outs[0])) >= 4  # 2 tars or more, the index and the manifest


def _command(sample, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "real-world", "--csv", str(sample.csv_path),
            "--videos", str(sample.videos_dir), "--trajectories", str(sample.cameras_dir), "--output", str(out),
            "--batch-size", "2", "--shard-max-count", "2", "--captioner", "transformers",
            "--caption-model", "tiny-random"]


def _env(home: Path) -> dict:
    return dict(os.environ, PREFECT_HOME=str(home), HF_HUB_OFFLINE="1", SOURCE_DATE_EPOCH="1767225600")


def _run(sample, out: Path, home: Path) -> None:
    done = subprocess.run(_command(sample, out), env=_env(home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _kill_when(sample, out: Path, home: Path, pattern: str) -> None:
    """Start the command and SIGKILL it (with the Prefect server it started) once `out/pattern` matches a file."""
    proc = subprocess.Popen(_command(sample, out), env=_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(out.glob(pattern)):
            assert proc.poll() is None, f"the run ended before {pattern} appeared"
            assert time.monotonic() < deadline, f"{pattern} did not appear in 300 s"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "summary.json").exists()


@pytest.mark.slow
def test_a_run_killed_while_probing_captioning_or_sharding_resumes_to_the_same_bytes(sample, tmp_path):
    home = tmp_path / "prefect-home"
    _run(sample, tmp_path / "clean", home)
    clean = _digests(tmp_path / "clean")
    for name, pattern in (("probing", "_work/clips-*/part-*.parquet"),
                          ("captioning", "_work/captions-*/part-*.parquet"),
                          ("sharding", "shards/shard-*.tar")):
        out = tmp_path / name
        _kill_when(sample, out, home, pattern)
        _run(sample, out, home)
        assert _digests(out) == clean, name
        assert not list((out / "shards").glob(".tmp-*")), name  # a tar cut short by the kill is not left behind
