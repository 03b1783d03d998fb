"""The synthesis stage with real tiny-random Wan pipelines on the CPU: T2V and both I2V styles, seeds, bad rows,
out-of-memory handling, resume after a kill, cache hooks, GPU claims and worker reuse."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline
from PIL import Image

from synthesis import gpu_pool
from synthesis.generate import (
    SYNTH_FIELDS,
    WanWorker,
    check_against_model,
    generate_table,
    synthesis_watch,
    video_relpath,
    video_seconds,
    video_seed,
)
from synthesis.gpu_pool import DeviceClaim, WorkerPool
from synthesis.models import parse_wan_spec
from synthesis.presets import synth_config
from yume_core.config import ConfigError
from yume_core.failfast import SystematicFailure
from yume_core.media import probe_video, read_frames


@pytest.fixture(autouse=True, scope="module")
def restore_torch_threads():
    """The tiny preset sets one torch thread process-wide (SynthConfig.cpu_threads): give later modules theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def prompts(rows) -> pa.Table:
    """rows: (prompt_id, caption, image_path) tuples, all ok on arrival."""
    ids, captions, images = zip(*rows)
    return pa.table({"prompt_id": list(ids), "caption": list(captions), "image_path": pa.array(images, pa.string())})


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 64x48 image (wider than the 32x32 video: the stage centre-crops it)."""
    path = tmp_path_factory.mktemp("images") / "street.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture
def calls(monkeypatch):
    """Count pipeline calls by prompt, for both pipeline classes (the real call still runs)."""
    seen: list[str] = []
    for cls in (WanPipeline, WanImageToVideoPipeline):
        original = cls.__call__

        def counted(self, *args, _original=original, **kwargs):
            seen.append(kwargs["prompt"])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", counted)
    return seen


@pytest.mark.parametrize("model", ["tiny-random", "tiny-random-i2v-2.1", "tiny-random-i2v-2.2"])
def test_each_pipeline_writes_videos_that_decode_to_the_requested_frames_and_size(model, image, tmp_path):
    config = synth_config("tiny", {"model": model, "width": 48, "height": 32, "num_frames": 5})
    needs_image = model != "tiny-random"
    table = prompts([("walk-1", "a crowded street at dusk", image if needs_image else None),
                     ("walk-2", "rain over a night market", image if needs_image else None)])
    out = generate_table(table, config, tmp_path)
    assert out["status"].to_pylist() == ["ok", "ok"], out["error"].to_pylist()
    for row in out.to_pylist():
        info = probe_video(tmp_path / row["video_path"])
        assert (info.frames, info.width, info.height, info.codec, info.fps) == (5, 48, 32, "h264", 8.0)
        assert read_frames(tmp_path / row["video_path"]).shape == (5, 32, 48, 3)
        assert row["synth_pipeline"] == ("i2v" if needs_image else "t2v")
        assert row["synth_seed"] == video_seed(row["prompt_id"], 0)
        assert row["synth_dtype"] == "float32" and row["synth_device"] == "cpu"
        assert (row["synth_width"], row["synth_height"], row["synth_frames"], row["synth_steps"]) == (48, 32, 5, 2)
        assert row["synth_model"] == model and row["synth_preset"] == "tiny" and row["synth_attempts"] == 1
    assert {name for name, _ in SYNTH_FIELDS} <= set(out.column_names)
    assert all(t > 0 for t in video_seconds(tmp_path, out["video_path"].to_pylist()))  # in the records, not here
    assert torch.get_num_threads() == 1  # the tiny preset's cpu_threads


def test_wan22_style_runs_both_experts_across_the_boundary(image):
    """High-noise steps go to `transformer`, low-noise ones to `transformer_2` (boundary 0.9 of 1000 timesteps)."""
    config = synth_config("tiny", {"model": "tiny-random-i2v-2.2", "steps": 3})
    worker = WanWorker(config)
    used = {"transformer": 0, "transformer_2": 0}
    for name in used:
        getattr(worker.pipe, name).register_forward_hook(lambda *_, n=name: used.__setitem__(n, used[n] + 1))
    frames, attempts, _ = worker.generate(config, "a tram passes", Image.open(image).resize((32, 32)), seed=3)
    worker.close()
    assert frames.shape == (9, 32, 32, 3) and frames.dtype == np.uint8 and attempts == 1
    # 3 steps with CFG: 2 passes per step; timesteps ~[999, 857, 600] -> one step high-noise, two low-noise
    assert used == {"transformer": 2, "transformer_2": 4}
    assert worker.pipe is None


def test_same_seed_gives_the_same_frames_and_another_seed_does_not(tmp_path):
    table = prompts([("same", "a bridge over a river in fog", None)])
    config = synth_config("tiny")
    first = generate_table(table, config, tmp_path / "a")
    again = generate_table(table, config, tmp_path / "b")
    other = generate_table(table, synth_config("tiny", {"seed": 1}), tmp_path / "c")
    frames = [read_frames(d / t["video_path"][0].as_py()) for d, t in
              ((tmp_path / "a", first), (tmp_path / "b", again), (tmp_path / "c", other))]
    assert frames[0].shape == (9, 32, 32, 3)  # the worker loaded by an earlier test (other sizes) follows this config
    assert np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frames[2])
    assert first["synth_seed"].to_pylist() == again["synth_seed"].to_pylist() != other["synth_seed"].to_pylist()
    assert video_seed("same") == video_seed("same") != video_seed("same", 1)


def test_rows_that_cannot_be_generated_fail_with_reasons_before_any_model_loads(image, tmp_path, monkeypatch):
    def no_load(*_):
        raise AssertionError("no model may load when no row can be generated")

    monkeypatch.setattr("synthesis.generate.WanWorker", no_load)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    t2v = generate_table(
        pa.table({"prompt_id": ["empty", "blank", "dup", "dup", None, "came-failed"],
                  "caption": [None, "   ", "a cat", "a cat", "a bird", "a fish"],
                  "image_path": [None, None, image, None, None, None],
                  "status": ["ok"] * 5 + ["failed"], "reason": [None] * 5 + ["caption_refusal"],
                  "error": [None] * 5 + ["refused"]}),
        synth_config("tiny"), tmp_path)
    assert list(zip(t2v["status"].to_pylist(), t2v["reason"].to_pylist())) == [
        ("failed", "empty_prompt"), ("failed", "empty_prompt"), ("failed", "image_not_supported"),
        ("dropped", "duplicate_prompt"), ("failed", "prompt_id_missing"), ("failed", "caption_refusal")]
    assert t2v["error"][5].as_py() == "refused"  # a row failed upstream keeps its verdict
    assert t2v["video_path"].null_count == t2v.num_rows

    i2v = generate_table(prompts([("no-image", "a park", None), ("missing", "a park", str(tmp_path / "nope.png")),
                                  ("broken", "a park", str(broken))]),
                         synth_config("tiny", {"model": "tiny-random-i2v-2.2"}), tmp_path)
    assert i2v["reason"].to_pylist() == ["image_required", "image_missing", "image_unreadable"]
    assert all("image" in e for e in i2v["error"].to_pylist())


def test_gpu_oom_retries_once_then_fails_only_that_row(tmp_path, monkeypatch):
    attempts: dict[str, int] = {}
    original = WanPipeline.__call__

    def flaky(self, *args, **kwargs):
        prompt = kwargs["prompt"]
        attempts[prompt] = attempts.get(prompt, 0) + 1
        if prompt == "always oom" or (prompt == "oom once" and attempts[prompt] == 1):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if prompt == "bug":
            raise RuntimeError("shape mismatch in attention")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WanPipeline, "__call__", flaky)
    out = generate_table(prompts([("a", "always oom", None), ("b", "a quiet lane", None), ("c", "oom once", None),
                                  ("d", "bug", None)]), synth_config("tiny"), tmp_path)
    rows = {r["prompt_id"]: r for r in out.to_pylist()}
    assert (rows["a"]["status"], rows["a"]["reason"]) == ("failed", "gpu_oom") and attempts["always oom"] == 2
    assert "out of GPU memory" in rows["a"]["error"] and rows["a"]["video_path"] is None
    assert (rows["b"]["status"], rows["b"]["synth_attempts"]) == ("ok", 1)
    assert (rows["c"]["status"], rows["c"]["synth_attempts"]) == ("ok", 2) and attempts["oom once"] == 2
    assert rows["d"]["reason"] == "generation_error"
    assert rows["d"]["error"] == "RuntimeError: shape mismatch in attention"
    assert attempts["bug"] == 1
    assert not (tmp_path / video_relpath("a")).exists()


def test_a_run_whose_first_videos_all_fail_alike_stops_with_the_error(tmp_path, monkeypatch):
    """Four rows, fail_fast 3: the first three fail with the same class, so the fourth is never attempted; the
    same watch stops the next batch at once. One success among the first three, or another error class, and the
    run goes on row by row."""
    seen: list[str] = []

    def broken(self, *args, **kwargs):
        seen.append(kwargs["prompt"])
        if kwargs["prompt"].startswith("ok"):
            return original(self, *args, **kwargs)
        raise (ValueError if kwargs["prompt"].startswith("other") else RuntimeError)("shape '[1, 45, 1, -1]' is bad")

    original = WanPipeline.__call__
    monkeypatch.setattr(WanPipeline, "__call__", broken)
    config = synth_config("tiny", {"fail_fast": 3})
    watch = synthesis_watch(config)
    with pytest.raises(SystematicFailure, match=r"first 3 videos all failed with RuntimeError \(shape .*--preset"):
        generate_table(prompts([(f"p{i}", f"bad {i}", None) for i in range(4)]), config, tmp_path, watch)
    assert seen == ["bad 0", "bad 1", "bad 2"]
    with pytest.raises(SystematicFailure):
        generate_table(prompts([("q", "ok q", None)]), config, tmp_path, watch)
    assert len(seen) == 3

    for first in ("ok 0", "other 0"):
        out = generate_table(prompts([("a", first, None)] + [(f"b{i}", f"bad {i}", None) for i in range(4)]),
                             config, tmp_path / first)
        assert out["reason"].to_pylist()[1:] == ["generation_error"] * 4
    assert synth_config("tiny").fail_fast == 8


def test_settings_the_model_cannot_render_are_refused_naming_presets_that_fit():
    check_against_model(synth_config("tiny"))
    check_against_model(synth_config("tiny", {"width": 512, "height": 512, "num_frames": 125}))
    with pytest.raises(ConfigError, match=r"cannot render 1280x720, 81 frames.*at most 512.*\(tiny: --preset"):
        check_against_model(synth_config("wan21-t2v-720p", {"model": "tiny-random"}))
    with pytest.raises(ConfigError, match="frames must be at most 125"):
        check_against_model(synth_config("tiny", {"model": "tiny-random-i2v-2.2", "num_frames": 129}))


def test_a_killed_batch_resumes_without_regenerating_finished_videos(tmp_path, monkeypatch, calls):
    table = prompts([("k1", "first video", None), ("k2", "second video", None), ("k3", "third video", None)])
    config = synth_config("tiny")
    original = WanPipeline.__call__

    def killed_at_second(self, *args, **kwargs):
        if kwargs["prompt"] == "second video":
            raise KeyboardInterrupt  # what SIGINT does mid-video; SIGKILL leaves even less behind
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WanPipeline, "__call__", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        generate_table(table, config, tmp_path)
    first = tmp_path / video_relpath("k1")
    assert first.is_file() and first.with_suffix(".json").is_file()
    assert not (tmp_path / video_relpath("k2")).exists()
    mtime = first.stat().st_mtime_ns
    # a video written just before the kill, without its record, does not count as finished
    third = tmp_path / video_relpath("k3")
    third.parent.mkdir(parents=True, exist_ok=True)
    third.write_bytes(b"half an mp4")

    monkeypatch.setattr(WanPipeline, "__call__", original)
    calls.clear()
    out = generate_table(table, config, tmp_path)
    assert out["status"].to_pylist() == ["ok"] * 3
    assert sorted(calls) == ["second video", "third video"]
    assert first.stat().st_mtime_ns == mtime and probe_video(third).frames == 9

    calls.clear()
    again = generate_table(table, config, tmp_path)
    assert calls == [] and again.to_pylist() == out.to_pylist()
    calls.clear()
    generate_table(table, synth_config("tiny", {"steps": 3}), tmp_path)  # other settings: other pixels
    assert len(calls) == 3


@pytest.mark.parametrize("kind", ["first_block", "pab", "taylorseer"])
def test_cache_hooks_generate_with_every_expert_hooked(kind, image):
    config = synth_config("tiny", {"model": "tiny-random-i2v-2.2", "steps": 4, "cache": {"kind": kind}})
    worker = WanWorker(config)
    assert worker.pipe.transformer.is_cache_enabled and worker.pipe.transformer_2.is_cache_enabled
    frames, _, _ = worker.generate(config, "snow falls on a square", Image.open(image).resize((32, 32)), seed=1)
    second, _, _ = worker.generate(config, "snow falls on a square", Image.open(image).resize((32, 32)), seed=1)
    worker.close()
    assert frames.shape == (9, 32, 32, 3)
    assert np.array_equal(frames, second)  # hook state is reset between videos


def test_video_paths_are_safe_unique_and_bucketed():
    assert video_relpath("clip_001").endswith("/clip_001.mp4")
    odd = [video_relpath(p) for p in ("a/b", "a_b", "a b", "../x", "ü" * 200)]
    assert len(set(odd)) == len(odd)
    for rel in odd:
        parts = rel.split("/")
        assert parts[0] == "videos" and len(parts[1]) == 2 and len(parts) == 3 and ".." not in rel
        assert len(parts[2]) < 120


def test_model_specs():
    assert parse_wan_spec("tiny-random").tiny_kind == "t2v"
    spec = parse_wan_spec("tiny-random-i2v-2.2:7")
    assert (spec.tiny_kind, spec.seed) == ("i2v-2.2", 7)
    assert parse_wan_spec("Wan-AI/Wan2.1-T2V-14B-Diffusers").source == "Wan-AI/Wan2.1-T2V-14B-Diffusers"
    for bad in ("tiny-random-i2v-3", "tiny-random-t2v:x", ""):
        with pytest.raises(ValueError):
            parse_wan_spec(bad)


def test_gpus_are_claimed_one_worker_each(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_pool, "lock_dir", lambda: tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for var in ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(var, raising=False)
    a, b = DeviceClaim(), DeviceClaim()
    assert (a.device, b.device) == ("cuda:0", "cuda:1")
    with pytest.raises(RuntimeError, match="no free GPU"):
        DeviceClaim()
    a.release()
    c = DeviceClaim()
    assert c.device == "cuda:0"
    c.release()
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError):  # rank 1's GPU is still held by b
        DeviceClaim()
    b.release()
    assert DeviceClaim().device == "cuda:1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # locks are named by physical id
    d = DeviceClaim()
    assert d.device == "cuda:1" and (tmp_path / "gpu-7.lock").exists()
    assert DeviceClaim("cpu").device == "cpu"


def test_worker_pool_reuses_a_loaded_worker_and_closes_stale_ones():
    built, closed = [], []

    class Fake:
        def __init__(self, key):
            self.key = key
            built.append(key)

        def close(self):
            closed.append(self.key)

    pool = WorkerPool()
    for _ in range(3):
        with pool.lease("a", lambda: Fake("a")) as w:
            assert w.key == "a"
    with pool.lease("a", lambda: Fake("a")) as w1, pool.lease("a", lambda: Fake("a")) as w2:
        assert w1 is not w2  # two concurrent tasks never share a pipeline
    assert built == ["a", "a"]
    with pool.lease("b", lambda: Fake("b")):
        pass
    assert closed == ["a", "a"] and built == ["a", "a", "b"]
    pool.clear()
    assert closed == ["a", "a", "b"]


def test_rank_split_covers_every_batch_exactly_once():
    for batches in (0, 1, 5, 64, 101):
        for world in (1, 2, 3, 8):
            shares = [gpu_pool.rank_batches(batches, r, world) for r in range(world)]
            flat = sorted(b for s in shares for b in s)
            assert flat == list(range(batches))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert gpu_pool.resolve_rank(2, 4) == (2, 4)
    with pytest.raises(ValueError):
        gpu_pool.resolve_rank(4, 4)


def test_rank_comes_from_torchrun_or_slurm(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert gpu_pool.resolve_rank() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert gpu_pool.resolve_rank() == (3, 8)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert gpu_pool.resolve_rank() == (1, 2)  # torchrun's variables win
