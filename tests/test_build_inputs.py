"""Where a build's inputs are read from and how samples record them: a relative path under `inputs:` is relative to
the config file's folder, and is recorded relative to it, so one project (config and data) built from anywhere, or
copied elsewhere, gives the same shards."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from pipelines.build_config import build_config
from shards.sample import recorded_path
from yume_core.sample_data import make_sekai_sample

from conftest import BUILD_TIME


def test_a_path_is_recorded_relative_to_the_first_root_that_holds_it(tmp_path):
    out, base = tmp_path / "proj" / "out", tmp_path / "proj"
    roots = (str(out), str(base))
    assert recorded_path(str(out / "input" / "a.mp4"), roots) == "input/a.mp4"
    assert recorded_path(str(base / "data" / ".." / "data" / "b.mp4"), roots) == "data/b.mp4"
    assert recorded_path("/elsewhere/c.mp4", roots) == "/elsewhere/c.mp4"
    assert recorded_path(str(tmp_path / "projects" / "d.mp4"), roots) == str(tmp_path / "projects" / "d.mp4")
    assert recorded_path("s3://bucket/e.mp4", roots) == "s3://bucket/e.mp4"
    assert recorded_path(None, roots) is None and recorded_path("f.mp4", ()) == "f.mp4"


def test_relative_inputs_are_read_from_the_config_folder(tmp_path):
    sets = {"walk": {"recipe": "sekai", "inputs": {"csv": "data/sekai.csv", "videos": "./data/videos",
                                                  "trajectories": "/abs/cameras"}},
            "old": {"recipe": "shards", "inputs": {"path": "s3://bucket/old"}}}
    cfg = build_config(None, {"sets": sets}, base=str(tmp_path / "proj"))
    walk = cfg.set("walk").inputs
    assert (walk.csv, walk.videos, walk.trajectories) == (str(tmp_path / "proj/data/sekai.csv"),
                                                         str(tmp_path / "proj/data/videos"), "/abs/cameras")
    assert cfg.set("old").inputs.path == "s3://bucket/old"
    assert cfg.given == {"sets": sets}  # the flow's parameters stay as the user wrote them
    here = build_config(None, {"sets": sets})
    assert here.set("walk").inputs.csv == os.path.join(os.getcwd(), "data", "sekai.csv")


def _project(root: Path) -> Path:
    """A project folder: a build config beside the Sekai-format data it names by relative paths."""
    sample = make_sekai_sample(root / "data", n_clips=3, n_frames=40, size=(64, 36), seed=3)
    rel = {k: os.path.relpath(p, root) for k, p in (("csv", sample.csv_path), ("videos", sample.videos_dir),
                                                      ("trajectories", sample.cameras_dir))}
    config = root / "build.yaml"
    config.write_text(yaml.safe_dump({"build_time": BUILD_TIME, "sets": {"walk": {
        "recipe": "sekai", "inputs": rel, "real_world": {"preset": "demo", "batch_size": 2}}}}))
    return config


def _digests(set_dir: Path) -> dict[str, str]:
    files = [p for p in sorted(set_dir.rglob("*")) if p.is_file() and p.suffix in (".tar", ".parquet", ".yaml", ".json")
             and "_work" not in p.parts]
    return {p.relative_to(set_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_a_project_built_from_elsewhere_and_its_copy_give_the_same_shards(tmp_path):
    """The command from an unrelated working directory (the config's relative inputs resolve against its folder),
    then a copy of the project built from inside it: identical tars, index, markers and `.nv-meta/`; samples
    record the inputs relative to the project."""
    first = _project(tmp_path / "proj")
    copy = tmp_path / "moved" / "proj"
    shutil.copytree(first.parent, copy)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), HF_HUB_OFFLINE="1")
    env.pop("SOURCE_DATE_EPOCH", None)
    outs = []
    for config, cwd in ((first, elsewhere), (copy / "build.yaml", copy)):
        out = tmp_path / f"out-{len(outs)}"
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "build", "--config", str(config),
                               "--output", str(out)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        outs.append(out / "walk")
    assert _digests(outs[0]) == _digests(outs[1]) and any(k.endswith(".tar") for k in _digests(outs[0]))
    assert any(k.startswith(".nv-meta/") for k in _digests(outs[0]))
    with tarfile.open(sorted(outs[0].glob("*.tar"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        sample = json.load(io.TextIOWrapper(tar.extractfile(member)))
    sources = sample["provenance"]["sources"]
    assert sources["video"].startswith("data/") and sources["camera"].startswith("data/"), sources
    import pyarrow.parquet as pq

    flow = json.loads(pq.read_schema(outs[0].parent / "work" / "walk" / "manifest.parquet").metadata[b"yume_data"])
    assert flow["csv"] == yaml.safe_load(first.read_text())["sets"]["walk"]["inputs"]["csv"]
