"""The caption flow over a real clip manifest: a loopback OpenAI-compatible server with faults, resume, prompts."""

import json
import os
import subprocess
import sys

import pyarrow.compute as pc
import pytest
import webdataset as wds
from click.testing import CliRunner

from captioning.backends import fake_server
from captioning.stage import caption_seed
from pipelines.captioning import CaptionFlowConfig, run_caption_flow
from pipelines.cli import main
from pipelines.real_world import RealWorldConfig, run_flow
from yume_core.config import from_dict, to_dict
from yume_core.manifest import read_manifest
from yume_core.sample_data import make_sekai_sample

GOOD = "A cyclist rides past a bakery while two children chase pigeons across the wet square near a fountain."


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A real-world manifest: 5 good clips, one missing video, one duplicate."""
    root = tmp_path_factory.mktemp("caption-input")
    sample = make_sekai_sample(root / "in", n_clips=5, n_frames=60, size=(96, 54), faults=("video_missing", "duplicate"))
    cfg = from_dict(RealWorldConfig, {"batch_size": 4, "runner": {"workers": 2}})
    run_flow(str(sample.csv_path), str(sample.videos_dir), str(sample.cameras_dir), str(root / "rw"), cfg)
    return root / "rw" / "manifest.parquet"


def _config(url, **caption) -> CaptionFlowConfig:
    return from_dict(CaptionFlowConfig, {
        "batch_size": 2,
        "caption": {"backend": "openai", "endpoints": [url], "model": "fake-vlm", "timeout": 5.0, "concurrency": 4,
                    "frames": {"num_frames": 4}, **caption},
    })


def test_captions_prompts_and_failures_over_a_real_server(clips, tmp_path):
    manifest = read_manifest(clips)
    ok_ids = manifest.filter(pc.equal(manifest["status"], "ok"))["clip_id"].to_pylist()
    refused = ok_ids[1]

    def plan(key, attempt):
        if key == ok_ids[0] and attempt == 1:
            return fake_server.status(500)  # recovered on retry
        if key == refused:
            return fake_server.refusal()  # every time: fails after the bounded answer retries
        if key == ok_ids[2]:
            return fake_server.ok(f'  Caption: "{GOOD}"')  # accepted, stored cleaned
        return fake_server.ok(GOOD)

    with fake_server.FakeServer(plan=plan) as server:
        summary = run_caption_flow(str(clips), str(tmp_path), _config(server.url))
        received = server.received
    out = read_manifest(tmp_path / "manifest.parquet")
    assert out.num_rows == manifest.num_rows and summary["in"] == manifest.num_rows
    rows = {r["clip_id"]: r for r in out.to_pylist() if r["csv_row"] is not None and r["status"] != "dropped"}
    assert rows[refused]["status"] == "failed" and rows[refused]["reason"] == "caption_refusal"
    assert len([r for r in received if r.key == refused]) == 3  # the ask and two answer retries
    for cid in ok_ids:
        if cid == refused:
            continue
        row = rows[cid]
        assert row["status"] == "ok" and row["caption_event"] == GOOD
        assert row["caption_model"] == "fake-vlm" and row["caption_prompt_version"] == "event-v1"
        assert len(row["caption_frames"]) == 4 and row["caption_output_tokens"] > 0
        assert len(row["prompt_i2v"]) == len(row["segments"]) == len(row["prompt_t2v"])
        for seg, i2v, t2v in zip(row["segments"], row["prompt_i2v"], row["prompt_t2v"]):
            assert i2v == f"{GOOD} {seg['phrase']}" and t2v == f"{row['caption']} {seg['phrase']}"
    # the missing video failed in the real-world flow and cost no request; the duplicate was never sent
    assert {r.key for r in received} == set(ok_ids)
    assert summary["captions"]["captioned"] == len(ok_ids) - 1
    assert summary["captions"]["sekai_real_hq_gpu_hours"] > 0


def test_a_rerun_sends_no_request_for_captioned_clips(clips, tmp_path):
    with fake_server.FakeServer(plan=lambda key, attempt: fake_server.ok(GOOD)) as server:
        run_caption_flow(str(clips), str(tmp_path), _config(server.url))
        first = len(server.received)
        run_caption_flow(str(clips), str(tmp_path), _config(server.url))  # same output: every part is done
        assert len(server.received) == first
        # captioning the finished manifest again: rows that hold a caption are not sent
        run_caption_flow(str(tmp_path / "manifest.parquet"), str(tmp_path / "again"), _config(server.url))
        assert len(server.received) == first


def test_every_request_carries_its_clips_own_seed(clips, tmp_path):
    """The seed sent is a function of the clip, the prompt version and the ask, not of the batch: other batch
    sizes send the same seed for each clip, and a re-asked answer gets the next seed."""
    ok_ids = [r["clip_id"] for r in read_manifest(clips).to_pylist() if r["status"] == "ok"]

    def plan(key, attempt):
        return fake_server.refusal() if key == ok_ids[0] and attempt == 1 else fake_server.ok(GOOD)

    sent = []
    for batch_size in (2, 4):
        with fake_server.FakeServer(plan=plan) as server:
            config = _config(server.url)
            run_caption_flow(str(clips), str(tmp_path / f"b{batch_size}"),
                             from_dict(CaptionFlowConfig, {**to_dict(config), "batch_size": batch_size}))
            sent.append({(r.key, r.client_attempt): r.seed for r in server.received})
    assert sent[0] == sent[1]
    first = {key: seed for (key, attempt), seed in sent[0].items() if attempt == 1}
    assert first == {cid: caption_seed(0, cid, "event-v1") for cid in ok_ids}
    assert len(set(first.values())) == len(ok_ids)
    assert sent[0][(ok_ids[0], 2)] == first[ok_ids[0]] + 1


def test_a_run_whose_first_clips_all_fail_alike_stops_with_one_line(clips, tmp_path):
    """A wrong request shape (HTTP 400 for every clip): with fail_fast 3 the run stops after the third failure,
    the last batch is never sent, no manifest is written, and the command says why in one line (exit 2)."""
    settings = tmp_path / "caption.yaml"
    settings.write_text("batch_size: 2\ncaption: {fail_fast: 3, frames: {num_frames: 4}}\n")
    with fake_server.FakeServer(plan=lambda key, attempt: fake_server.status(400)) as server:
        result = CliRunner().invoke(main, ["caption", "--manifest", str(clips), "--output", str(tmp_path / "o"),
                                           "--backend", "openai", "--endpoint", server.url, "--model", "fake-vlm",
                                           "--config", str(settings)])
        sent = {r.key for r in server.received}
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "first 3 clips sent to the captioner all failed with caption_bad_request (" in line
    assert "caption.fail_fast: 0" in line and "Traceback" not in result.output
    ok = [r["clip_id"] for r in read_manifest(clips).to_pylist() if r["status"] == "ok"]
    assert 3 <= len(sent) < len(ok)
    assert not (tmp_path / "o" / "manifest.parquet").exists()


def test_a_video_gone_since_ingest_fails_without_a_request(clips, tmp_path):
    manifest = read_manifest(clips)
    victim = manifest.filter(pc.equal(manifest["status"], "ok")).to_pylist()[0]
    moved = victim["video_path"] + ".moved"
    os.rename(victim["video_path"], moved)
    try:
        with fake_server.FakeServer(plan=lambda key, attempt: fake_server.ok(GOOD)) as server:
            run_caption_flow(str(clips), str(tmp_path), _config(server.url))
            assert victim["clip_id"] not in {r.key for r in server.received}
    finally:
        os.rename(moved, victim["video_path"])
    row = [r for r in read_manifest(tmp_path / "manifest.parquet").to_pylist() if r["clip_id"] == victim["clip_id"]][0]
    assert row["status"] == "failed" and row["reason"] == "video_missing"


@pytest.mark.slow
def test_real_world_with_the_tiny_captioner_puts_captions_in_the_shards(tmp_path):
    """The same command a user runs, with the tiny random InternVL on CPU."""
    sample = make_sekai_sample(tmp_path / "in", n_clips=3, n_frames=60, size=(96, 54))
    out = tmp_path / "out"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "real-world", "--csv", str(sample.csv_path), "--videos",
         str(sample.videos_dir), "--trajectories", str(sample.cameras_dir), "--output", str(out),
         "--captioner", "transformers", "--caption-model", "tiny-random"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["in"] == 3
    samples = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False).decode())
    manifest = read_manifest(out / "manifest.parquet")
    captioned = {r["clip_id"]: r for r in manifest.to_pylist() if r["caption_event"]}
    assert len(samples) == len(captioned) == summary["ok"]
    for s in samples:
        caps = s["json"]["captions"]
        assert caps["caption_event"] == captioned[s["__key__"]]["caption_event"]
        assert caps["prompt_i2v"] == captioned[s["__key__"]]["prompt_i2v"]


def test_no_live_endpoint_stops_the_run_at_once(clips, tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="no captioning endpoint answers"):
        run_caption_flow(str(clips), str(tmp_path), _config(dead))
    assert time.monotonic() - started < 30
    assert not (tmp_path / "manifest.parquet").exists()
