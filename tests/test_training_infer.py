"""Inference check: the verdict on constructed timings, on real rollouts, and the CLI from shards to a report."""

import json

import pyarrow as pa
import pytest
import torch
import yaml
from click.testing import CliRunner

from training_stub.config import ModelConfig, TSCMConfig
from training_stub.infer_check import ChunkStats, judge, rollout, run_check
from training_stub.model import WorldDiT


def _series(tokens, first_steps, last_steps, first=8, last=32, chunks=32):
    """Stats of `chunks` chunks: history tokens `tokens(chunk)`, and the paired step timings of chunks `first` and
    `last`."""
    paired = {first: first_steps, last: last_steps}
    return [ChunkStats(chunk=k, history_latents=k, history_tokens=tokens(k), channel_tokens=0, seconds=0.01,
                       robust_seconds=0.01, paired_step_seconds=paired.get(k, [])) for k in range(1, chunks + 1)]


def BOUNDED(k):  # saturates at chunk 9, as the cpu preset's TSCM does
    return min(84, 75 + k)


def GROWING(k):
    return 64 * k


STEADY = [0.010 * (1 + 0.03 * ((i % 5) - 2)) for i in range(15)]  # +-6% around 10 ms


def test_verdict_on_constructed_timings():
    # TSCM: tokens saturate, last/first step time 1.02 in every pair; full context: 3x
    ok = judge({"tscm": _series(BOUNDED, STEADY, [1.02 * t for t in STEADY]),
                "full": _series(GROWING, STEADY, [3 * t for t in STEADY]),
                "sliding": _series(BOUNDED, STEADY, STEADY)})
    assert ok["passed"] and ok["reasons"] == []
    assert ok["ratio"]["tscm"] == pytest.approx(1.02) and ok["ratio"]["full"] == pytest.approx(3.0)
    assert ok["tokens"] == {"tscm": [83, 84], "full": [512, 2048], "sliding": [83, 84]}
    assert ok["pairs"] == {"tscm": 15, "full": 15, "sliding": 15}
    # a burst of load splitting a minority of pairs (one step slow, the other not) leaves the median alone
    split = [t * (3 if i in (1, 4, 9, 12) else 1) for i, t in enumerate(STEADY)]
    assert judge({"tscm": _series(BOUNDED, STEADY, split), "full": _series(GROWING, STEADY, [3 * t for t in STEADY])})[
        "passed"]
    # load that changes over the run scales both steps of a pair alike: the ratios stay 1
    drifting = [t * (1 + i / 5) for i, t in enumerate(STEADY)]
    assert judge({"tscm": _series(BOUNDED, drifting, drifting),
                  "full": _series(GROWING, drifting, [3 * t for t in drifting])})["passed"]
    # TSCM's step 20% slower at the end of the window fails, though its tokens are bounded
    slow = judge({"tscm": _series(BOUNDED, STEADY, [1.2 * t for t in STEADY]),
                  "full": _series(GROWING, STEADY, [3 * t for t in STEADY])})
    assert not slow["passed"]
    assert slow["reasons"] == ["TSCM's step time changed by +20.0% from chunk 8 to 32 (median of 15 paired timings; "
                               "allowed +-15%): its history cost is not bounded"]
    # TSCM's history growing fails on its tokens alone, however its timings came out
    unbounded = judge({"tscm": _series(GROWING, STEADY, STEADY), "full": _series(GROWING, STEADY, [3 * t for t in STEADY])})
    assert unbounded["reasons"] == ["TSCM's self-attended history grew from 512 to 2048 tokens from chunk 8 to 32 "
                                    "(allowed +15%): its history is not bounded"]
    # faster with more history: noise, not a pass
    faster = judge({"tscm": _series(BOUNDED, STEADY, [0.8 * t for t in STEADY]),
                    "full": _series(GROWING, STEADY, [3 * t for t in STEADY])})
    assert not faster["passed"] and "timings are noise" in faster["reasons"][0]
    # full context not growing: the comparison shows nothing
    flat_full = judge({"tscm": _series(BOUNDED, STEADY, STEADY), "full": _series(GROWING, STEADY, STEADY)})
    assert not flat_full["passed"] and flat_full["reasons"][0].startswith("full context's step time grew only 1.00x")
    # missing mode, too few chunks, no paired timings
    assert "mode full was not run" in judge({"tscm": _series(BOUNDED, STEADY, STEADY)})["reasons"][0]
    short = {m: _series(BOUNDED, STEADY, STEADY, last=20, chunks=20) for m in ("tscm", "full")}
    assert "only 20 chunks" in judge(short)["reasons"][0]
    unpaired = {m: _series(BOUNDED, [], [], chunks=32) for m in ("tscm", "full")}
    assert "were not timed in pairs" in judge(unpaired)["reasons"][0]


def _model(tiers, seed=0):
    cfg = ModelConfig(width=64, depth=2, heads=2, tscm=TSCMConfig(tiers=tiers, channel_dim=16))
    torch.manual_seed(seed)
    return WorldDiT(cfg, 12, text_dim=8).eval()


def _rollouts(model):
    """tscm and full rollouts of 18 chunks of 2 latents, chunks 6 and 18 timed in pairs."""
    return {mode: rollout(model, torch.randn(12, 8, 8), [torch.randn(5, 8)], 18, 2, 4, mode, repeats=1,
                          pair=(6, 18))
            for mode in ("tscm", "full")}


# timing tests run on one torch thread: a second adds only synchronisation noise to a model this small. They judge
# with the check's own tolerance: the paired timings hold it on 2 loaded cores
def test_real_rollout_passes_when_history_is_bounded(one_torch_thread):
    model = _model(((2, 1, 2, 2), (8, 1, 4, 4)))  # saturates at 8 history latents: from chunk 5 on (2 per chunk)
    runs = _rollouts(model)
    for latents, _ in runs.values():
        assert latents.shape == (1 + 18 * 2, 12, 8, 8)
    series = {mode: stats for mode, (_, stats) in runs.items()}
    assert [s.history_latents for s in series["tscm"]] == [1 + 2 * k for k in range(18)]
    assert {s.history_tokens for s in series["tscm"][5:]} == {16 + 2 * 16 + 6 * 4}
    assert [s.history_tokens for s in series["full"]] == [16 * (1 + 2 * k) for k in range(18)]
    assert [len(s.paired_step_seconds) for s in series["tscm"]] == [15 if k in (6, 18) else 0 for k in range(1, 19)]
    verdict = judge(series, first=6, last=18)
    assert verdict["passed"], verdict


def test_real_rollout_fails_when_history_is_not_bounded(one_torch_thread):
    """A TSCM whose tiers keep every latent at the finest patch is full context under another name: the check fails
    it on its tokens and, measured, on its step time too."""
    model = _model(((64, 1, 2, 2),))
    series = {mode: stats for mode, (_, stats) in _rollouts(model).items()}
    verdict = judge(series, first=6, last=18)
    assert not verdict["passed"]
    assert verdict["reasons"][0].startswith("TSCM's self-attended history grew from 176 to 560 tokens")
    assert verdict["reasons"][1].startswith("TSCM's step time changed by +"), verdict


def test_run_check_writes_report_plot_and_video_per_task(tmp_path, one_torch_thread):
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
    paired = [len(c["paired_step_seconds"]) for c in saved["tasks"]["i2v"]["modes"]["tscm"]]
    assert paired == [15, 0, 0, 0, 0, 15]  # the window's first and last chunk, timed in pairs
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
    # with full context: one line per task and mode, and the exit code is the verdict's
    res = runner.invoke(main, ["infer-check", "--checkpoint", str(run), "--chunks", "6", "--flat-from", "2",
                               "--flat-to", "6", "--modes", "tscm,full", "--tasks", "i2v", "--steps", "1",
                               "--pairs", "3", "-o", str(tmp_path / "check-full")])
    report = json.loads((tmp_path / "check-full" / "infer_check.json").read_text())
    assert res.exit_code == (0 if report["verdict"]["passed"] else 1), res.output
    assert "i2v     tscm: step time chunk 6 / chunk 2" in res.output and "(median of 3 pairs)" in res.output
    assert "i2v     full: step time chunk 6 / chunk 2" in res.output
    res = runner.invoke(main, ["infer-check", "--checkpoint", str(run), "--actions", "Q"])
    assert res.exit_code == 2 and "unknown keys label" in res.output
