"""Training windows: the latent space, window cutting, action alignment and the streaming loader over real shards."""

import dataclasses
import functools
import http.server
import itertools
import json
import os
import shutil
import threading

import numpy as np
import pyarrow as pa
import pytest
import torch
import webdataset as wds

import quantize_actions
import shards
from training_stub.data import (
    DataConfig,
    WindowLoader,
    decode_clip,
    resolve_shards,
    shard_order,
)
from training_stub.latents import LatentSpace
from training_stub.windows import (
    cut_windows,
    timeline_scale,
    window_actions,
    sample_tasks,
)
from yume_core.actions import phrase_table
from yume_core.config import from_dict, to_dict
from yume_core.media import read_frames
from yume_core.sample_data import make_sekai_sample
from yume_core.sekai import check_frame_counts, probe_clips, read_sekai_csv

SPACE = LatentSpace()
EVENT = "A cyclist rings her bell and overtakes two people carrying a ladder."


def _manifest(sample):
    table = read_sekai_csv(sample.csv_path, sample.videos_dir, sample.cameras_dir)
    table = quantize_actions.quantize_table(probe_clips(table), quantize_actions.QuantizeConfig())
    return check_frame_counts(table)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real shards from the pipeline's own stages: three 70-frame landscape clips (two windows each), one 40-frame
    portrait clip (one window) and one 20-frame clip (too short for a window); the first clip has an event
    caption. `plain` stores the mp4s as they are (2 clips per shard); `resampled` re-encodes them at 15 fps."""
    root = tmp_path_factory.mktemp("training-data")
    parts = [
        make_sekai_sample(root / "a", n_clips=3, n_frames=70, size=(64, 36)),
        make_sekai_sample(root / "b", n_clips=1, n_frames=40, size=(36, 64), seed=1),
        make_sekai_sample(root / "c", n_clips=1, n_frames=20, size=(48, 32), seed=2),
    ]
    table = pa.concat_tables([_manifest(p) for p in parts])
    assert table["status"].to_pylist() == ["ok"] * 5
    events = [EVENT] + [None] * (table.num_rows - 1)
    table = table.append_column("caption_event", pa.array(events, pa.string()))
    provenance = {"actions": to_dict(quantize_actions.QuantizeConfig())}
    shards.write_shards(table, root / "plain", shards.ShardConfig(max_count=2), provenance)
    shards.write_shards(table.slice(0, 3), root / "resampled", shards.ShardConfig(fps=15, max_count=8), provenance)
    return {"root": root, "table": table, "plain": root / "plain", "resampled": root / "resampled"}


def _samples(directory):
    return {s["__key__"]: s for s in wds.WebDataset(resolve_shards(directory), shardshuffle=False)}


def _keys(loader):
    return [w["key"] for w in loader]


# ------------------------------------------------------------------------------------------------ latent space


def test_latent_space_shapes_and_time_axis():
    space = LatentSpace()
    assert space.channels == 12 and space.latent_size == (16, 16)
    assert [space.num_latents(n) for n in (0, 1, 4, 5, 8, 9, 33)] == [0, 1, 1, 2, 2, 3, 9]
    assert space.num_frames(9) == 33 and space.frame_range(0, 1) == (0, 0) and space.frame_range(1, 9) == (1, 32)
    # each frame one flat grey level: latent 0 is frame 0, latent j the mean of frames 4j-3..4j; frame 9 is dropped
    levels = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 250], np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (10, 32, 32, 3)).copy()
    z = space.encode(frames)
    assert z.shape == (3, 12, 16, 16) and z.dtype == torch.float32
    back = space.decode(z)
    assert back.shape == (9, 32, 32, 3) and back.dtype == np.uint8
    expected = np.array([0, 25, 25, 25, 25, 65, 65, 65, 65])
    assert np.abs(back[:, 0, 0, 0].astype(int) - expected).max() <= 1


def test_latent_space_round_trips_static_frames_and_resizes_any_size():
    rng = np.random.default_rng(0)
    space = LatentSpace(height=16, width=24, patch=4, temporal=2)
    still = np.repeat(rng.integers(0, 256, (1, 16, 24, 3), dtype=np.uint8), 5, axis=0)
    z = space.encode(torch.from_numpy(still))
    assert z.shape == (3, 48, 4, 6)
    assert np.abs(space.decode(z).astype(int) - still.astype(int)).max() <= 1
    odd = rng.integers(0, 256, (3, 23, 37, 3), dtype=np.uint8)  # odd, portrait-ish size: cover + centre crop
    assert space.encode(odd).shape == (2, 48, 4, 6)
    with pytest.raises(ValueError, match="multiples of patch"):
        LatentSpace(height=30, patch=4)
    with pytest.raises(ValueError, match="uint8"):
        space.encode(still.astype(np.float32))


# ------------------------------------------------------------------------------------------------ windows


def test_cut_windows_keeps_the_first_latent_and_a_bounded_history():
    assert cut_windows(8, 8, 8, SPACE) == []  # 29 frames: less than first frame + one chunk
    ws = cut_windows(1 + 8 * 5 + 3, chunk_latents=8, max_history_chunks=2, space=SPACE)
    assert [w.chunk_index for w in ws] == [0, 1, 2, 3, 4]  # the trailing 3 latents are no window
    assert [(w.chunk_start, w.chunk_stop, w.frame_start, w.frame_end) for w in ws[:2]] == [(1, 9, 1, 32), (9, 17, 33, 64)]
    assert ws[0].history.tolist() == [0]
    assert ws[2].history.tolist() == list(range(17))  # 16 latents back reach latent 1: nothing to leave out
    assert ws[3].history.tolist() == [0, *range(9, 25)]
    assert ws[4].history.tolist() == [0, *range(17, 33)]
    assert [w.history.tolist() for w in cut_windows(25, 8, 0, SPACE)] == [[0], [0], [0]]


def test_a_share_of_windows_carries_a_long_history_drawn_per_clip_and_chunk():
    """`long_history` of the windows keep more than `max_history_chunks`: from one chunk more up to
    `long_history_chunks`, never more than the clip has; the draw is a function of the key, so cutting the same clip
    again gives the same windows, and another key (seed, epoch) other ones."""
    def cut(key, share=0.25):
        return cut_windows(1 + 4 * 400, 4, 8, SPACE, long_history=share, long_history_chunks=32, key=key)

    windows = cut("0:0:clip")
    lengths = np.array([len(w.history) - 1 for w in windows])  # latents before the chunk, the first one aside
    capped = np.minimum(np.arange(len(windows)) * 4, 32)
    long = lengths > capped
    assert 0.20 < long.mean() < 0.30, long.mean()  # 400 windows: +-0.05 is 2.3 standard deviations
    assert np.all(lengths[~long] == capped[~long])
    assert set(lengths[long] // 4) <= set(range(9, 33)) and len(set(lengths[long] // 4)) > 15
    assert all(w.history[0] == 0 and np.all(np.diff(w.history[1:]) == 1) and w.history[-1] == w.chunk_start - 1
               for w in windows[1:])
    assert [w.history.tolist() for w in cut("0:0:clip")] == [w.history.tolist() for w in windows]
    assert [len(w.history) for w in cut("0:1:clip")] != [len(w.history) for w in windows]
    # early windows have less history than a long draw asks for: they keep what there is
    early = cut_windows(1 + 4 * 10, 4, 1, SPACE, long_history=1.0, long_history_chunks=32, key="k")
    assert [len(w.history) for w in early] == [1 + 4 * k for k in range(10)]
    assert [len(w.history) for w in cut("0:0:clip", share=0.0)] == [1 + c for c in capped]
    with pytest.raises(ValueError, match="long_history is a share"):
        DataConfig(long_history=1.5)
    with pytest.raises(ValueError, match="long_history_chunks must be a non-negative integer"):
        DataConfig(long_history_chunks=-1)


def test_window_actions_hand_checked():
    chunks = [{"start_frame": 32 * i, "end_frame": 32 * i + 31, "phrase": p} for i, p in enumerate("ABBC")]
    ws = cut_windows(33, 8, 8, SPACE)  # 129 frames: windows at frames 1-32, 33-64, 65-96, 97-128
    assert window_actions(ws, chunks, 1.0) == [["A"], ["B"], ["B"], ["C"]]  # 31 of 32 frames each
    # mp4 at 15 fps, poses at 30: window 0 spans pose frames 2..65 -> A (30/32 inside) and B (all)
    assert window_actions(ws[:2], chunks, 2.0) == [["A", "B"], ["B", "C"]]  # B, B merged
    short = cut_windows(9, 4, 8, SPACE)  # 16-frame windows: 1-16 holds half of A; 17-32 holds less of A, 1 frame of B
    assert window_actions(short, chunks, 1.0) == [["A"], ["A"]]
    assert window_actions(ws, [], 1.0) == [[], [], [], []]
    assert window_actions(ws[3:], chunks[:2], 1.0) == [[]]  # past the last action chunk


def test_timeline_scale_and_text_choice():
    assert timeline_scale({"fps": 15.0, "frames": 35, "actions": {"fps": 30.0, "frames": 70}}) == 2.0
    assert timeline_scale({"fps": None, "frames": 35, "actions": {"frames": 70}}) == 2.0
    assert timeline_scale({}) == 1.0
    kept = {"fps": 29.97, "frames": 1800, "actions": {"fps": 30.0, "frames": 1800}, "provenance": {"shards": {"fps": None}}}
    assert timeline_scale(kept) == 1.0  # the source mp4 as it is: pose i is frame i
    # schema v1: the sample's own tasks and texts (a listed task without text is not trained)
    v1 = {"set": "event", "tasks": ["t2v", "i2v"], "event_text": {"t2v": " A storm. ", "i2v": None}}
    assert sample_tasks(v1) == ("event", ("t2v",), {"t2v": "A storm.", "i2v": None})
    # written before schema v1: T2V on the scene caption, I2V on the event caption when there is one
    old = {"captions": {"scene": "A street.", "caption_event": " A parade passes. "}}
    assert sample_tasks(old) == ("real_world", ("t2v", "i2v"), {"t2v": "A street.", "i2v": "A parade passes."})
    assert sample_tasks({"captions": {"scene": "A street.", "caption_event": None}})[1] == ("t2v",)
    assert sample_tasks({})[1] == ()


# ------------------------------------------------------------------------------------------------ loader


def test_loader_yields_the_contracted_windows(data):
    samples = _samples(data["plain"])
    loader = WindowLoader(data["plain"], DataConfig(shuffle_buffer=0), epochs=1)
    windows = list(loader)
    assert loader.stats == {"windows": 7, "too_short": 1}
    # 70 frames: 18 latents, two chunks; 40 frames: 10 latents, one; 20 frames: 5 latents, none
    frames = {k: json.loads(s["json"])["frames"] for k, s in samples.items()}
    expected = [f"{k}#{i}" for k, n in frames.items() for i in range({70: 2, 40: 1, 20: 0}[n])]
    assert sorted(w["key"] for w in windows) == sorted(expected)
    phrases = set(phrase_table("yume15"))
    for w in windows:
        meta = json.loads(samples[w["key"].split("#")[0]]["json"])
        assert w["clip_id"] == meta["clip_id"]
        assert w["chunk"].shape == (8, 12, 16, 16) and w["chunk"].dtype == torch.float32
        assert w["history"].shape == (1 + 8 * w["chunk_index"], 12, 16, 16)
        assert w["chunk_start"] == 1 + 8 * w["chunk_index"]
        # frames 1+32k..32(k+1) hold 31 frames of action chunk k: its phrase, as the shard wrote it
        assert w["actions"] == [meta["actions"]["chunks"][w["chunk_index"]]["phrase"]]
        assert set(w["actions"]) <= phrases
        expected_text = EVENT if meta["captions"].get("caption_event") else meta["captions"]["scene"]
        assert w["text"] == expected_text and expected_text
    assert sum(w["text"] == EVENT for w in windows) == 2
    # the next window's history holds this chunk, from the same decode
    by_key = {w["key"]: w for w in windows}
    for w in windows:
        if w["chunk_index"] == 1:
            first = by_key[w["key"][:-1] + "0"]
            assert torch.equal(w["history"][1:9], first["chunk"]) and torch.equal(w["history"][:1], first["history"])


def test_decode_matches_the_project_reader_for_any_frame_size(data):
    space = LatentSpace()
    table = data["table"]
    for row in table.to_pylist()[2:4]:  # a landscape and the portrait clip
        with open(row["video_path"], "rb") as f:
            frames = decode_clip(f.read(), space)
        size = space.resize_size(row["width"], row["height"])
        reference = space.crop_frames(read_frames(row["video_path"], size=size))
        assert frames.shape == (row["video_frames"], 32, 32, 3)
        assert np.array_equal(frames, reference)


def test_resampled_shards_map_actions_by_time(data):
    samples = _samples(data["resampled"])
    windows = list(WindowLoader(data["resampled"], DataConfig(shuffle_buffer=0), epochs=1))
    assert len(windows) == 3  # 35 frames at 15 fps: one window each
    for w in windows:
        meta = json.loads(samples[w["key"].split("#")[0]]["json"])
        assert meta["fps"] == 15.0 and meta["actions"]["fps"] == 30.0
        # frames 1..32 at 15 fps are pose frames 2..65: all of action chunk 1 and 30 of chunk 0's 32
        p0, p1 = (c["phrase"] for c in meta["actions"]["chunks"][:2])
        assert w["actions"] == ([p0] if p0 == p1 else [p0, p1])


def test_same_seed_same_order_with_and_without_workers(data):
    def order(**kw):
        return _keys(WindowLoader(data["plain"], DataConfig(shuffle_buffer=4, **kw), epochs=2))

    serial = order(seed=3)
    assert serial == order(seed=3) and len(serial) == 14
    assert serial != order(seed=4)
    unbuffered = _keys(WindowLoader(data["plain"], DataConfig(shuffle_buffer=0, seed=3), epochs=2))
    assert serial != unbuffered and sorted(serial) == sorted(unbuffered)
    parallel = order(seed=3, workers=2)
    assert parallel == order(seed=3, workers=2)
    assert sorted(parallel) == sorted(serial)


def test_workers_survive_the_parents_thread_exit_hooks(data):
    """A process that ran a Prefect flow holds thread exit hooks that fail in a forked child: workers must not run
    them (they did, and every worker then ended with exit code 1 and the loader with a RuntimeError)."""
    parent = os.getpid()

    def hook():
        assert os.getpid() == parent, "the parent's thread exit hook ran in a loader worker"

    threading._register_atexit(hook)
    try:
        assert len(_keys(WindowLoader(data["plain"], DataConfig(workers=2), epochs=1))) == 7
    finally:
        threading._threading_atexits[:] = [h for h in threading._threading_atexits if getattr(h, "func", h) is not hook]


def test_sources_resolve_alike_and_epochs_repeat(data):
    urls = resolve_shards(data["plain"])
    assert len(urls) == 3 and urls == sorted(urls)
    pattern = str(data["plain"] / "shard-{000000..000002}.tar")
    cfg = DataConfig(seed=1)
    one = _keys(WindowLoader(data["plain"], cfg, epochs=1))
    assert _keys(WindowLoader(pattern, cfg, epochs=1)) == one == _keys(WindowLoader(urls, cfg, epochs=1))
    forever = list(itertools.islice(iter(WindowLoader(urls, DataConfig(shuffle_buffer=0))), 21))
    assert sorted(w["key"] for w in forever) == sorted(one * 3)
    with pytest.raises(ValueError, match=r"no \*\.tar"):
        WindowLoader(data["root"], cfg)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_shards_stream_over_http_from_a_server_on_loopback(data):
    """http:// shards go through webdataset's opener (curl): the same windows in the same order as from disk."""
    if shutil.which("curl") is None:
        pytest.skip("webdataset reads http:// shards through curl, which is not installed here")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(data["plain"]))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        pattern = f"http://127.0.0.1:{server.server_address[1]}/shard-{{000000..000002}}.tar"
        cfg = DataConfig(seed=1)
        assert _keys(WindowLoader(pattern, cfg, epochs=1)) == _keys(WindowLoader(data["plain"], cfg, epochs=1))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_ranks_of_a_distributed_job_split_the_shards(data, monkeypatch):
    """Each rank reads its own shards (position mod world size in the epoch's order): together all, none twice."""
    from training_stub import data as data_module

    cfg = DataConfig(seed=2, shuffle_buffer=0)
    everything = _keys(WindowLoader(data["plain"], cfg, epochs=1))
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(data_module, "_distributed", lambda rank=rank: (rank, 2))
        per_rank.append(_keys(WindowLoader(data["plain"], cfg, epochs=1)))
    assert all(per_rank) and not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(everything)


@pytest.mark.parametrize(("workers", "cuts"), [(0, (1, 6, 9)), (2, (5,))])
def test_resume_is_exact(data, workers, cuts):
    """A loader resumed from a saved position hands out exactly what an uninterrupted one would have, in order:
    mid-shard with windows in the shuffle buffer, while the buffer drains at the end of an epoch, in the next epoch,
    and with workers, whose turn comes next."""
    # 2-latent chunks and no history but the first latent, except for the long half of the windows, so windows
    # differ in their drawn history and a resume must draw the same
    cfg = DataConfig(chunk_latents=2, max_history_chunks=0, long_history=0.5, long_history_chunks=8, shuffle_buffer=3,
                     workers=workers, seed=5)
    uninterrupted = WindowLoader(data["plain"], cfg, epochs=2)
    straight = list(uninterrupted)
    everything = [w["key"] for w in straight]
    assert sorted(everything) == sorted(_keys(WindowLoader(data["plain"], cfg, epochs=1)) * 2)
    assert {len(w["history"]) == 1 for w in straight if w["chunk_index"]} == {True, False}
    for cut in cuts:
        first = WindowLoader(data["plain"], cfg, epochs=2)
        it = iter(first)
        seen = [next(it)["key"] for _ in range(cut)]
        state = json.loads(json.dumps(first.state_dict()))
        del it
        resumed = WindowLoader(data["plain"], cfg, epochs=2)
        resumed.load_state_dict(state)
        rest = list(resumed)
        assert seen + [w["key"] for w in rest] == everything, cut
        assert torch.equal(rest[0]["chunk"], straight[cut]["chunk"])
        assert all(torch.equal(a["history"], b["history"]) for a, b in zip(rest, straight[cut:]))
        assert resumed.stats == uninterrupted.stats and resumed.stats["windows"] == len(everything)
    with pytest.raises(ValueError, match="shard order differs"):
        WindowLoader(data["plain"], DataConfig(seed=6)).load_state_dict(state)
    with pytest.raises(ValueError, match="shuffle buffer"):
        WindowLoader(data["plain"], dataclasses.replace(cfg, shuffle_buffer=5)).load_state_dict(state)


def test_a_position_saved_at_a_shard_boundary_still_loads(data):
    """Positions saved before they were exact ({epoch, shards_done}) resume at that shard boundary."""
    urls = resolve_shards(data["plain"])
    cfg = DataConfig(shuffle_buffer=0, seed=2)
    order = [urls[i] for i in shard_order(len(urls), cfg.seed, 0)]
    loader = WindowLoader(data["plain"], cfg, epochs=1)
    loader.load_state_dict({"epoch": 0, "shards_done": 1, "num_shards": 3, "seed": 2})
    assert _keys(loader) == _keys(WindowLoader(order[1:], DataConfig(shuffle_buffer=0), epochs=1))


def test_task_streams_hold_the_windows_that_train_the_task(data):
    """Only the first clip has an event caption: it alone trains I2V; every clip trains T2V on its scene caption."""
    i2v = WindowLoader(data["plain"], DataConfig(shuffle_buffer=0), epochs=1, task="i2v")
    windows = list(i2v)
    assert len(windows) == 2 and {w["texts"]["i2v"] for w in windows} == {EVENT}
    assert all(w["tasks"] == ["t2v", "i2v"] and w["set"] == "real_world" for w in windows)
    assert i2v.stats == {"windows": 2, "task_not_trained": 4}  # the too-short clip is passed over before decoding
    t2v = list(WindowLoader(data["plain"], DataConfig(shuffle_buffer=0), epochs=1, task="t2v"))
    assert len(t2v) == 7 and all(w["texts"]["t2v"] and "t2v" in w["tasks"] for w in t2v)
    # a stream with nothing to give ends instead of spinning, even without an epoch limit
    urls = resolve_shards(data["plain"])
    lonely = [u for u in urls if not _keys(WindowLoader([u], DataConfig(), epochs=1, task="i2v"))]
    assert _keys(WindowLoader(lonely, DataConfig(), task="i2v")) == []


def _tar(path, samples):
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            sink.write(s)


def test_damaged_samples_are_skipped_and_unlabelled_ones_trained(data, tmp_path):
    good = next(iter(_samples(data["plain"]).values()))
    meta = json.loads(good["json"])
    _tar_samples = [
        {"__key__": "garbage_video", "json": good["json"], "mp4": b"<html>not found</html>"},
        {"__key__": "bad_json", "json": b"{oops", "mp4": good["mp4"]},
        {"__key__": "no_chunks", "json": json.dumps({**meta, "actions": {**meta["actions"], "chunks": []}}).encode(),
         "mp4": good["mp4"]},
        {"__key__": "fine", "json": good["json"], "mp4": good["mp4"]},
    ]
    _tar(tmp_path / "shard-000000.tar", _tar_samples)
    loader = WindowLoader(tmp_path, DataConfig(), epochs=1)
    windows = list(loader)
    n = len(cut_windows(SPACE.num_latents(meta["frames"]), 8, 8, SPACE))
    # a clip without action labels trains with an empty action description; damaged ones are skipped
    expected = [f"{key}#{i}" for key in ("fine", "no_chunks") for i in range(n)]
    assert sorted(w["key"] for w in windows) == sorted(expected)
    assert all(bool(w["actions"]) == w["key"].startswith("fine") for w in windows)
    assert loader.stats == {"windows": 2 * n, "video_undecodable": 1, "json_invalid": 1, "no_actions": n}


def test_config_builds_from_yaml_dicts_and_rejects_nonsense():
    cfg = from_dict(DataConfig, {"latents": {"height": 64, "width": 48}, "workers": 2})
    assert cfg.latents == LatentSpace(height=64, width=48) and cfg.workers == 2
    with pytest.raises(ValueError, match="chunk_latents"):
        DataConfig(chunk_latents=0)
    with pytest.raises(ValueError, match="workers"):
        DataConfig(workers=-1)
