"""Inference check: the verdict on constructed timings, on real rollouts, and the CLI from shards to a report."""

import json

import pyarrow as pa
import pytest
import torch
import yaml
from click.testing import CliRunner

from training_stub.config import ModelConfig, TSCMConfig
from training_stub.infer_check import ChunkStats, judge, rollout, run_check, theil_sen
from training_stub.model import WorldDiT


def _series(times):
    return [ChunkStats(chunk=i + 1, history_latents=i, history_tokens=0, channel_tokens=0, seconds=t, robust_seconds=t)
            for i, t in enumerate(times)]


FLAT = [0.010 + 0.0002 * (i % 3) for i in range(32)]
GROWING = [0.010 * (1 + 0.1 * i) for i in range(32)]  # chunk k takes 1 + 0.1 (k - 1) centiseconds


def test_verdict_on_constructed_timings():
    ok = judge({"tscm": _series(FLAT), "full": _series(GROWING), "sliding": _series(FLAT)})
    assert ok["passed"] and ok["reasons"] == []
    # medians of chunks 30-32 over chunks 8-10: 4.0 / 1.8
    assert abs(ok["change"]["tscm"]) < 0.05 and ok["growth"]["full"] == pytest.approx(4.0 / 1.8)
    # a few slow chunks (another process took the core) do not tilt the fit
    spiky = list(FLAT)
    for i in (9, 20, 30):
        spiky[i] *= 3
    assert judge({"tscm": _series(spiky), "full": _series(GROWING)})["passed"]
    # TSCM growing from 1.0 to 1.2 over the window fails: +0.2 over its median 1.1 is +18.2%
    creeping = [0.010 * (1 + 0.2 * max(0, i - 7) / 24) for i in range(32)]
    bad = judge({"tscm": _series(creeping), "full": _series(GROWING)})
    assert not bad["passed"] and "TSCM's per-chunk time changed by +18.2%" in bad["reasons"][0]
    # full context not growing: the comparison shows nothing
    flat_full = judge({"tscm": _series(FLAT), "full": _series(FLAT)})
    assert not flat_full["passed"] and "full context" in flat_full["reasons"][0]
    # missing mode, too few chunks
    assert "mode full was not run" in judge({"tscm": _series(FLAT)})["reasons"][0]
    assert "only 20 chunks" in judge({"tscm": _series(FLAT[:20]), "full": _series(GROWING[:20])})["reasons"][0]


def test_theil_sen_ignores_outliers():
    x = list(range(10))
    y = [2 * v + 1 for v in x]
    y[3] = 100
    slope, intercept = theil_sen(x, y)
    assert slope == pytest.approx(2) and intercept == pytest.approx(1)


def _model(tiers, seed=0):
    cfg = ModelConfig(width=64, depth=2, heads=2, tscm=TSCMConfig(tiers=tiers, channel_dim=16))
    torch.manual_seed(seed)
    return WorldDiT(cfg, 12, text_dim=8).eval()


# timing tests run on one torch thread: a second adds only synchronisation noise to a model this small. The judge's
# own bound (+-15%) is for a quiet machine; on 2 shared CI cores a tiny model's bounded rollout has drifted +18% from
# chunk 6 to 18 under load, while an unbounded history grows ~2x over the same window
NOISY_TOLERANCE = 0.35
def test_real_rollout_passes_when_history_is_bounded(one_torch_thread):
    model = _model(((2, 1, 2, 2), (8, 1, 4, 4)))  # saturates at 8 history latents: from chunk 5 on (2 per chunk)
    series = {}
    for mode in ("tscm", "full"):
        # repeats=3: the fastest of three timings per chunk, so a burst of load from another process is ignored
        latents, stats = rollout(model, torch.randn(12, 8, 8), [torch.randn(5, 8)], 18, 2, 4, mode, repeats=3)
        assert latents.shape == (1 + 18 * 2, 12, 8, 8)
        series[mode] = stats
    assert [s.history_latents for s in series["tscm"]] == [1 + 2 * k for k in range(18)]
    assert {s.history_tokens for s in series["tscm"][5:]} == {16 + 2 * 16 + 6 * 4}
    assert [s.history_tokens for s in series["full"]] == [16 * (1 + 2 * k) for k in range(18)]
    verdict = judge(series, first=6, last=18, tolerance=NOISY_TOLERANCE)
    assert verdict["passed"], verdict


def test_real_rollout_fails_when_history_is_not_bounded(one_torch_thread):
    model = _model(((64, 1, 2, 2),))  # every latent at the finest patch: TSCM degenerates to full context
    series = {m: rollout(model, torch.randn(12, 8, 8), [torch.randn(5, 8)], 18, 2, 4, m, repeats=2)[1]
              for m in ("tscm", "full")}
    verdict = judge(series, first=6, last=18, tolerance=NOISY_TOLERANCE)
    assert not verdict["passed"]
    assert verdict["reasons"][0].startswith("TSCM's per-chunk time changed by +")


def test_run_check_writes_report_plot_and_video_per_task(tmp_path):
    model = _model(((2, 1, 2, 2), (8, 1, 4, 4)))
    frames = []

    def decode(latents):
        frames.append(latents.shape)
        return torch.zeros(latents.shape[0], 16, 16, 3, dtype=torch.uint8).numpy()

    report = run_check(model, torch.randn(12, 8, 8), [torch.randn(3, 8)], tmp_path, chunks=6, chunk_latents=2,
                       steps=2, modes=("tscm", "sliding"), first=1, last=6, decode=decode, log=lambda m: None)
    verdict = report["verdict"]
    assert not verdict["passed"] and verdict["tasks"] == {"t2v": False, "i2v": False}
    assert verdict["reasons"] == [f"{t}: mode full was not run; the check compares tscm with full context"
                                  for t in ("t2v", "i2v")]
    saved = json.loads((tmp_path / "infer_check.json").read_text())
    assert saved["verdict"] == verdict and set(saved["tasks"]) == {"t2v", "i2v"}
    for task in ("t2v", "i2v"):
        part = saved["tasks"][task]
        assert set(part["modes"]) == {"tscm", "sliding"} and len(part["modes"]["tscm"]) == 6
        assert (tmp_path / f"rollout_{task}_tscm.mp4").stat().st_size > 0
    assert saved["tasks"]["t2v"]["modes"]["tscm"][0]["history_latents"] == 0  # from text alone
    assert saved["tasks"]["i2v"]["modes"]["tscm"][0]["history_latents"] == 1  # from the start frame
    assert saved["memory_method"] == "estimate" and (tmp_path / "infer_check.png").read_bytes()[:4] == b"\x89PNG"
    assert frames == [(13, 12, 8, 8)] * 2


def test_t2v_rollout_generates_the_first_frame_and_i2v_keeps_the_start(one_torch_thread):
    model = _model(((2, 1, 2, 2), (8, 1, 4, 4)))
    start = torch.randn(12, 8, 8)
    i2v, s_i2v = rollout(model, start, [torch.randn(3, 8)], 3, 2, 2, "tscm", repeats=0, task="i2v")
    t2v, s_t2v = rollout(model, start, [torch.randn(3, 8)], 3, 2, 2, "tscm", repeats=0, task="t2v")
    assert i2v.shape == t2v.shape == (7, 12, 8, 8)
    assert torch.equal(i2v[0], start) and not torch.equal(t2v[0], start)
    assert [s.history_latents for s in s_i2v] == [1, 3, 5] and [s.history_latents for s in s_t2v] == [0, 3, 5]
    with pytest.raises(ValueError, match="task"):
        rollout(model, start, [torch.randn(3, 8)], 1, 2, 2, "tscm", task="v2v")


def test_parse_actions():
    from pipelines.cli_training import parse_actions

    assert parse_actions("W, W+A,·→, →,↑←,S↓,·") == [
        ("W", "·"), ("W+A", "·"), ("None", "→"), ("None", "→"), ("None", "↑←"), ("S", "↓"), ("None", "·")]


# ------------------------------------------------------------------------------------------------ CLI end to end


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    import quantize_actions
    import shards
    from yume_core.config import to_dict
    from yume_core.sample_data import make_sekai_sample
    from yume_core.sekai import check_frame_counts, probe_clips, read_sekai_csv

    root = tmp_path_factory.mktemp("training-cli")
    sample = make_sekai_sample(root / "in", n_clips=2, n_frames=45, size=(64, 36))
    table = read_sekai_csv(sample.csv_path, sample.videos_dir, sample.cameras_dir)
    table = check_frame_counts(quantize_actions.quantize_table(probe_clips(table), quantize_actions.QuantizeConfig()))
    table = table.append_column("caption_event", pa.array(["A tram passes."] + [None] * (table.num_rows - 1)))
    provenance = {"actions": to_dict(quantize_actions.QuantizeConfig())}
    shards.write_shards(table, root / "shards", shards.ShardConfig(max_count=1), provenance)
    return root / "shards"


def test_cli_trains_on_shards_resumes_and_checks(tmp_path, demo_shards):
    from pipelines.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"latents": {"height": 16, "width": 32, "patch": 4}, "chunk_latents": 2, "max_history_chunks": 2,
                 "shuffle_buffer": 0},
        "model": {"width": 32, "depth": 1, "heads": 2, "tscm": {"tiers": [[2, 1, 2, 2], [6, 1, 4, 4]]}},
        "batch_size": 2, "log_every": 1, "checkpoint_every": 2,
    }))
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--shards", str(demo_shards), "--config", str(config), "-o", str(run),
                               "--steps", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "3 steps" in res.output and (run / "loss.png").is_file() and (run / "action_cache.safetensors").is_file()
    res = runner.invoke(main, ["train", "--shards", str(demo_shards), "--config", str(config), "-o", str(run),
                               "--steps", "4", "--device", "cpu"])
    assert res.exit_code == 0 and "resumed from" in res.output and "4 steps" in res.output, res.output
    # only tscm and sliding: the check cannot compare and says so, with exit code 1, after writing its report
    res = runner.invoke(main, ["infer-check", "--checkpoint", str(run), "--chunks", "6", "--flat-from", "1",
                               "--flat-to", "6", "--modes", "tscm,sliding", "--actions", "W,·→,W+A", "--steps", "2"])
    assert res.exit_code == 1, res.output
    assert "FAIL: i2v: mode full was not run" in res.output and "first frame of" in res.output
    assert "FAIL: t2v: mode full was not run" in res.output
    report = json.loads((run / "infer-check" / "infer_check.json").read_text())
    for task in ("t2v", "i2v"):
        assert len(report["tasks"][task]["modes"]["tscm"]) == 6
        assert report["tasks"][task]["videos"]["tscm"].endswith(f"rollout_{task}_tscm.mp4")
    res = runner.invoke(main, ["infer-check", "--checkpoint", str(run), "--actions", "Q"])
    assert res.exit_code == 2 and "unknown keys label" in res.output
