"""Frame preparation for captioning: which frames, how big, how they are decoded, what fails, and the bounded pool.

Test videos encode each frame's index in its content (a flat grey of level index * STEP), so a decoded JPEG's mean
says which source frame it is. They use each encoder's defaults (B-frames; for x265 open GOPs, i.e. CRA keyframes
with leading pictures) and short GOPs, so sparse sampling has to seek across several keyframes.

`seek="exact"` must return exactly the uniform targets; `seek="keyframe"` (the default) must return, per bin, the
keyframe nearest the target where the bin holds one (read independently here from the packet flags) and the target
itself where it does not, and in both cases the pixels of the index it reports.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from captioning.frames import (
    FrameConfig,
    PreparedFrames,
    frame_indices,
    iter_prepared,
    prepare_frames,
)
from yume_core.errors import RowError
from yume_core.media import write_video
from yume_core.sample_data import make_sekai_sample

STEP = 6  # grey level per frame index; 40 frames -> levels 0..234
N = 40


def _index_frames(n: int = N, size: tuple[int, int] = (128, 72)) -> list[np.ndarray]:
    return [np.full((size[1], size[0], 3), i * STEP, np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    frames = _index_frames()
    out = {
        "h264": d / "h264.mp4",
        "hevc": d / "hevc.mp4",  # x265 defaults: open GOP
        "hevc_closed": d / "hevc_closed.mp4",
        "raw": d / "raw.h264",  # no container timestamps
    }
    write_video(out["h264"], frames, 30, codec="libx264", gop=8)
    write_video(out["hevc"], frames, 30, codec="libx265", gop=8)
    write_video(out["hevc_closed"], frames, 30, codec="libx265", gop=8, options={"x265-params": "open-gop=0"})
    write_video(out["raw"], frames, 30, codec="libx264", gop=8)
    # for seek="keyframe": a keyframe every 10 frames (short GOP), and one at frame 0 only (long GOP)
    for kind, codec in (("h264", "libx264"), ("hevc", "libx265")):
        for gop in (10, N):
            out[f"{kind}_gop{gop}"] = d / f"{kind}_gop{gop}.mp4"
            write_video(out[f"{kind}_gop{gop}"], frames, 30, codec=codec, gop=gop)
    return out


def _keyframes(path) -> list[int]:
    """Presentation indices of the keyframes, read from the packet flags with PyAV (not through captioning.frames)."""
    import av

    with av.open(str(path)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size > 0]
    shown = sorted(pts for pts, _ in packets)
    return sorted(shown.index(pts) for pts, key in packets if key)


def _expected_keyframe_picks(path, num: int, start: int, end: int) -> list[int]:
    """Per bin (frames i with (i - start) * num // (end - start) == k): the keyframe strictly inside the range
    nearest the uniform target, the earlier on a tie; else a keyframe on the range's first or last frame in that
    bin; else the target. Ranges under 2 frames per bin: the targets."""
    if end - start < 2 * num:  # bins under 2 frames wide are sampled exactly
        return frame_indices(end, num, start, end).tolist()
    keys = [i for i in _keyframes(path) if start <= i < end]
    picks = []
    for k, target in enumerate(frame_indices(end, num, start, end).tolist()):
        in_bin = [i for i in keys if (i - start) * num // (end - start) == k]
        inner = [i for i in in_bin if start < i < end - 1]
        candidates = inner or in_bin  # in_bin minus inner: the range's edges
        picks.append(min(candidates, key=lambda i: (abs(i - target), i)) if candidates else target)
    return picks


def _levels(prepared: PreparedFrames) -> np.ndarray:
    """The source frame index each JPEG shows, from its grey level."""
    means = [np.asarray(Image.open(io.BytesIO(j)).convert("RGB"), np.float64).mean() for j in prepared.jpegs]
    return np.array(means) / STEP


# ----------------------------------------------------------------------------------------------------------------
# frame_indices


def test_indices_are_bin_centres_like_internvl():
    got = frame_indices(300, 8)
    # InternVL's get_index: int(start + seg/2 + round(seg * k)) with seg = 300/8 = 37.5
    assert got.tolist() == [18, 56, 93, 131, 168, 206, 243, 281]
    assert got.dtype == np.int64


@pytest.mark.parametrize("n, num, start, stop", [(300, 8, 0, None), (1800, 8, 100, 170), (37, 7, 3, 36), (9, 9, 0, 9)])
def test_indices_are_uniform_within_the_range(n, num, start, stop):
    got = frame_indices(n, num, start, stop)
    end = n if stop is None else stop
    assert len(got) == num
    assert got[0] >= start and got[-1] < end
    assert np.all(np.diff(got) > 0)
    bins = (got - start) * num // (end - start)  # one index in each of the num equal bins
    assert bins.tolist() == list(range(num))


def test_one_frame_is_the_middle():
    assert frame_indices(100, 1).tolist() == [50]
    assert frame_indices(100, 1, 10, 20).tolist() == [15]


def test_short_range_gives_every_frame_once():
    assert frame_indices(100, 8, 10, 15).tolist() == [10, 11, 12, 13, 14]
    assert frame_indices(3, 8).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "n, num, start, stop", [(10, 8, 5, 5), (10, 8, 0, 11), (10, 8, -1, 5), (10, 0, 0, 10), (0, 8, 0, None)]
)
def test_bad_ranges_raise(n, num, start, stop):
    with pytest.raises(ValueError):
        frame_indices(n, num, start, stop)


# ----------------------------------------------------------------------------------------------------------------
# prepare_frames


@pytest.mark.parametrize("kind", ["h264", "hevc", "hevc_closed", "raw"])
def test_exact_seek_returns_exactly_the_sampled_frames(clips, kind):
    prepared = prepare_frames(clips[kind], FrameConfig(size=64, seek="exact"))
    assert prepared.indices.tolist() == frame_indices(N, 8).tolist()
    assert len(prepared.jpegs) == 8
    np.testing.assert_allclose(_levels(prepared), prepared.indices, atol=0.5)


@pytest.mark.parametrize("kind", ["h264", "hevc"])
@pytest.mark.parametrize("start, stop", [(9, 33), (30, 40), (0, 5), (17, 18)])
def test_exact_segments_sample_inside_their_range(clips, kind, start, stop):
    prepared = prepare_frames(clips[kind], FrameConfig(size=32, seek="exact"), start, stop)
    assert prepared.indices.tolist() == frame_indices(N, 8, start, stop).tolist()
    np.testing.assert_allclose(_levels(prepared), prepared.indices, atol=0.5)


# seek="keyframe"


def _check_keyframe_picks(prepared: PreparedFrames, path, num: int, start: int, end: int) -> None:
    """The picks are the expected ones, one per bin in order, at most half a bin from their targets, and each JPEG
    shows the frame its index names."""
    got = prepared.indices.tolist()
    assert got == _expected_keyframe_picks(path, num, start, end)
    if end - start >= 2 * num and (got[0] == start or got[-1] == end - 1):  # an edge: only as a last resort
        assert {got[0], got[-1]} & set(_keyframes(path))
    length = end - start
    targets = frame_indices(end, num, start, end)
    if length >= 2 * num:
        assert [(i - start) * num // length for i in got] == list(range(num))  # each in its own bin
        assert np.abs(prepared.indices - targets).max() <= -(-length // (2 * num))  # ceil(L / 2 num)
    np.testing.assert_allclose(_levels(prepared), prepared.indices, atol=0.5)


@pytest.mark.parametrize("kind", ["h264", "hevc"])
@pytest.mark.parametrize(
    "num, start, stop", [(3, 0, None), (3, 1, None), (3, 5, 37), (2, 12, 33), (1, 3, None), (1, 0, 30)]
)
def test_keyframe_seek_with_short_gops_returns_keyframes_in_their_bins(clips, kind, num, start, stop):
    """A keyframe every 10 frames and bins of 13 or more: every bin holds a keyframe besides frame 0, so only
    keyframes come back (for x265: CRAs of open GOPs, ranked where they are shown, after their leading pictures).
    One bin over [3, 40) holds 10, 20 and 30: the pick is the nearest to the target 21; over [0, 30), 10 and 20 are
    as near to 15: the earlier."""
    path = clips[f"{kind}_gop10"]
    end = N if stop is None else stop
    prepared = prepare_frames(path, FrameConfig(num_frames=num, size=32), start, stop)
    assert set(prepared.indices.tolist()) <= set(_keyframes(path)) == {0, 10, 20, 30}
    assert prepared.indices.tolist() != frame_indices(N, num, start, end).tolist()  # the picks do move
    _check_keyframe_picks(prepared, path, num, start, end)


@pytest.mark.parametrize("kind", ["h264", "hevc"])
def test_keyframe_seek_decodes_only_the_keyframes_it_picks(clips, kind):
    """No reference chain: the packets sent to the decoder are the picked keyframes' and nothing else."""
    from captioning.frames import _needed_packets, _pick, _scan

    pts, keyframe = _scan(str(clips[f"{kind}_gop10"]))
    picked, target_pos = _pick(pts, keyframe, frame_indices(N, 3), "keyframe", 0, N)
    assert picked.tolist() == [10, 20, 30]
    assert np.flatnonzero(_needed_packets(pts, keyframe, target_pos)).tolist() == sorted(target_pos.tolist())
    assert keyframe[target_pos].all()
    exact, exact_pos = _pick(pts, keyframe, frame_indices(N, 3), "exact", 0, N)
    assert exact.tolist() == [6, 20, 33] and _needed_packets(pts, keyframe, exact_pos).sum() > 3


@pytest.mark.parametrize("kind", ["h264", "hevc"])
@pytest.mark.parametrize("num, start, stop", [(8, 0, None), (6, 3, 38)])
def test_keyframe_seek_falls_back_to_exact_where_a_bin_has_no_keyframe(clips, kind, num, start, stop):
    """Bins of 5 or 6 frames with a keyframe every 10: about half the bins hold one; the others get their uniform
    target, decoded exactly."""
    path = clips[f"{kind}_gop10"]
    end = N if stop is None else stop
    prepared = prepare_frames(path, FrameConfig(num_frames=num, size=32), start, stop)
    targets = frame_indices(N, num, start, end).tolist()
    keys = set(_keyframes(path))
    fell_back = [k for k, i in enumerate(prepared.indices.tolist()) if i not in keys]
    assert 0 < len(fell_back) < num
    assert all(prepared.indices[k] == targets[k] for k in fell_back)  # the uniform target itself
    inner = [i for i in keys if start < i < end - 1]
    assert all(not any((i - start) * num // (end - start) == k for i in inner) for k in fell_back)
    _check_keyframe_picks(prepared, path, num, start, end)


@pytest.mark.parametrize("kind", ["h264", "hevc"])
@pytest.mark.parametrize("num, start, stop", [(8, 0, None), (4, 9, 33), (3, 0, 40)])
def test_keyframe_seek_with_a_long_gop_falls_back_and_stays_exact(clips, kind, num, start, stop):
    """One keyframe in the whole clip, frame 0: bin 0 of a range starting there takes it (no chain at all), every
    other frame is its uniform target, with the right pixels."""
    path = clips[f"{kind}_gop{N}"]
    end = N if stop is None else stop
    assert _keyframes(path) == [0]
    prepared = prepare_frames(path, FrameConfig(num_frames=num, size=32), start, stop)
    expected = frame_indices(N, num, start, end).tolist()
    if start == 0:
        expected[0] = 0
    assert prepared.indices.tolist() == expected
    _check_keyframe_picks(prepared, path, num, start, end)


def test_a_failed_seek_decodes_from_a_fresh_open_reading_through(clips, monkeypatch):
    """Index and decoding share one open, the decoding seeking to each run of packets; if a seek does not land on
    the index's packets, the file is opened again and read through from its first packet."""
    from captioning import frames

    real, calls = frames._decode_sparse, []

    def first_fails(path, container, *args, seek):
        calls.append((container, seek))
        if len(calls) == 1:
            raise frames._Misplaced("packet 0")
        return real(path, container, *args, seek=seek)

    monkeypatch.setattr(frames, "_decode_sparse", first_fails)
    prepared = prepare_frames(clips["hevc"], FrameConfig(size=32, seek="exact"))
    assert [seek for _, seek in calls] == [True, False] and calls[0][0] is not calls[1][0]
    assert prepared.indices.tolist() == frame_indices(N, 8).tolist()
    np.testing.assert_allclose(_levels(prepared), prepared.indices, atol=0.5)


def test_a_seek_that_lands_past_a_runs_keyframe_is_caught(clips):
    """A demuxer that seeks too far (here: always to the last keyframe) must not hand back wrong frames."""
    import av

    from captioning import frames

    path = str(clips["h264_gop10"])
    pts, keyframe = frames._scan(path)
    _, target_pos = frames._pick(pts, keyframe, frame_indices(N, 3), "keyframe", 0, N)
    last_key = int(pts[np.flatnonzero(keyframe)].max())

    class TooFar:
        def __init__(self, container):
            self.container, self.streams = container, container.streams

        def seek(self, offset, **kwargs):
            self.container.seek(last_key, **kwargs)

        def demux(self, stream):
            return self.container.demux(stream)

    with av.open(path) as container, pytest.raises(frames._Misplaced):
        frames._decode_sparse(path, TooFar(container), pts, keyframe, target_pos, FrameConfig(size=32), seek=True)


@pytest.mark.parametrize("kind", ["h264", "hevc", "hevc_closed", "h264_gop10", "hevc_gop10"])
@pytest.mark.parametrize("seek_mode", ["exact", "keyframe"])
def test_seeking_to_each_run_decodes_what_reading_through_does(clips, kind, seek_mode):
    """The two ways through the packets (the fallback reads every packet from the first) give the same pixels."""
    import av

    from captioning.frames import _decode_sparse, _pick, _scan

    path = str(clips[kind])
    pts, keyframe = _scan(path)
    _, target_pos = _pick(pts, keyframe, frame_indices(N, 5, 3, 37), seek_mode, 3, 37)
    config = FrameConfig(size=32)
    decoded = []
    for seek in (True, False):
        with av.open(path) as container:
            decoded.append(_decode_sparse(path, container, pts, keyframe, target_pos, config, seek=seek))
    for a, b in zip(*decoded):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["h264", "hevc"])
def test_keyframe_seek_takes_the_first_frame_of_the_range_when_its_bin_has_no_other_keyframe(clips, kind):
    """Frame 0 (always a keyframe) and a segment starting on a keyframe: a keyframe decoded alone beats the chain
    to the bin's centre (on x265's default 250-frame GOP that chain was most of a 60 s clip's decoding)."""
    path = clips[f"{kind}_gop10"]
    assert prepare_frames(path, FrameConfig(num_frames=4, size=32)).indices.tolist() == [0, 10, 20, 30]
    assert prepare_frames(path, FrameConfig(num_frames=3, size=32), 10, 40).indices.tolist() == [10, 20, 30]


def test_keyframe_seek_prefers_a_keyframe_inside_the_range_to_its_edges():
    """Edges are a last resort: on a tie with a keyframe inside the range, the inside one (a clip's first and last
    frames are where cuts and fades sit); alone in its bin, the edge."""
    from captioning.frames import _pick

    pts = np.arange(101)
    for keys, want in (([0, 50], [50, 75]), ([0, 60], [0, 60]), ([0, 50, 100], [50, 100])):
        keyframe = np.isin(pts, keys)
        assert _pick(pts, keyframe, frame_indices(101, 2), "keyframe", 0, 101)[0].tolist() == want


@pytest.mark.parametrize("kind", ["h264", "hevc", "hevc_closed", "raw"])
@pytest.mark.parametrize("start, stop", [(0, None), (9, 33), (30, 40), (0, 5), (17, 18)])
def test_keyframe_seek_is_the_default_and_keeps_its_guarantees(clips, kind, start, stop):
    """The default config on the GOP-8 clips, whole and in segments; short segments give every frame (nothing to
    choose), and a raw stream without timestamps is decoded linearly, so it samples exactly."""
    assert FrameConfig().seek == "keyframe"
    end = N if stop is None else stop
    prepared = prepare_frames(clips[kind], FrameConfig(size=32), start, stop)
    if kind == "raw":
        assert prepared.indices.tolist() == frame_indices(N, 8, start, end).tolist()
        np.testing.assert_allclose(_levels(prepared), prepared.indices, atol=0.5)
    else:
        _check_keyframe_picks(prepared, clips[kind], 8, start, end)


def test_frames_are_square_jpegs_of_the_configured_size(clips):
    prepared = prepare_frames(clips["h264"], FrameConfig(num_frames=3))
    assert (prepared.width, prepared.height) == (448, 448)
    for jpeg in prepared.jpegs:
        img = Image.open(io.BytesIO(jpeg))
        assert img.format == "JPEG" and img.size == (448, 448) and img.mode == "RGB"


def test_quality_changes_the_bytes(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (72, 128, 3), dtype=np.uint8)
    path = tmp_path / "noise.mp4"
    write_video(path, [noise] * 4, 30, crf=10)
    low = prepare_frames(path, FrameConfig(num_frames=1, size=128, jpeg_quality=20))
    high = prepare_frames(path, FrameConfig(num_frames=1, size=128, jpeg_quality=95))
    assert len(low.jpegs[0]) < len(high.jpegs[0]) / 2


def test_real_sample_clip_keeps_its_picture(tmp_path):
    """A generated Sekai clip (ray-cast town, HEVC like Sekai): the prepared frame is the source frame resized."""
    sample = make_sekai_sample(tmp_path, n_clips=1, n_frames=24, size=(128, 72), codec="libx265")
    path = sample.video_path(sample.clip_ids[0])
    prepared = prepare_frames(path, FrameConfig(num_frames=4, size=96, jpeg_quality=95))
    from yume_core.media import read_frames

    source = read_frames(path, size=(96, 96))
    for jpeg, i in zip(prepared.jpegs, prepared.indices):
        got = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float64)
        errors = [np.abs(got - f).mean() for f in source]
        assert errors[i] < 3.0 and errors[i] <= min(errors) + 0.5  # still segments repeat a frame exactly


@pytest.mark.parametrize("seek", ["exact", "keyframe"])
@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_sparse_decoding_is_bit_identical_to_decoding_everything(tmp_path, codec, seek):
    """Skipping packets and non-reference frames, or decoding a keyframe alone, must not change a single pixel of
    the sampled frames."""
    from captioning.frames import _decode_linear, _read_pyav
    from yume_core.media import read_frames

    sample = make_sekai_sample(tmp_path / "s", n_clips=1, n_frames=48, size=(128, 72))
    path = tmp_path / "walk.mp4"
    write_video(path, read_frames(sample.video_path(sample.clip_ids[0])), 30, codec=codec, gop=12)
    config = FrameConfig(num_frames=6, size=64, seek=seek, fast_decode=False)
    indices, sparse = _read_pyav(str(path), config, 5, 47)
    if seek == "keyframe":  # bins of 7 frames, keyframes at 12, 24, 36: some of each
        assert 0 < len(set(indices.tolist()) & {12, 24, 36}) < 6
    linear = _decode_linear(str(path), indices, config)
    assert len(sparse) == 6
    for a, b in zip(sparse, linear):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("gop", [12, 4])  # gop 4 on 48 frames: every pick a keyframe decoded alone
@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_fast_decode_stays_close_to_the_exact_frames(tmp_path, codec, gop):
    """Skipping deblocking where nothing is predicted from the frame changes pixels a little, never the picture:
    no drift, so every frame stays within a few levels of the full decode."""
    from captioning.frames import _decode_linear, _read_pyav
    from yume_core.media import read_frames

    sample = make_sekai_sample(tmp_path / "s", n_clips=1, n_frames=48, size=(128, 72))
    path = tmp_path / "walk.mp4"
    write_video(path, read_frames(sample.video_path(sample.clip_ids[0])), 30, codec=codec, gop=gop)
    exact = FrameConfig(num_frames=6, size=64, fast_decode=False)
    indices, fast = _read_pyav(str(path), FrameConfig(num_frames=6, size=64), 5, 47)
    assert _read_pyav(str(path), exact, 5, 47)[0].tolist() == indices.tolist()
    for a, b in zip(fast, _decode_linear(str(path), indices, exact)):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.mean() < 2.0 and np.percentile(diff, 99) < 16


@pytest.mark.parametrize("kind", ["h264", "hevc_closed"])
def test_decord_and_pyav_agree(clips, kind):
    pytest.importorskip("decord")
    a = prepare_frames(clips[kind], FrameConfig(size=64, decoder="pyav", seek="exact"), 3, 38)
    b = prepare_frames(clips[kind], FrameConfig(size=64, decoder="decord", seek="exact"), 3, 38)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_allclose(_levels(a), _levels(b), atol=0.5)
    np.testing.assert_allclose(_levels(b), b.indices, atol=0.5)


def test_decord_is_exact_only(clips):
    """decord ignores seek (documented): with the default seek="keyframe" it still returns the uniform targets."""
    pytest.importorskip("decord")
    b = prepare_frames(clips["h264_gop10"], FrameConfig(num_frames=3, size=32, decoder="decord"))
    assert b.indices.tolist() == frame_indices(N, 3).tolist() == [6, 20, 33]
    np.testing.assert_allclose(_levels(b), b.indices, atol=0.5)


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_missing_and_garbage_files(tmp_path, decoder):
    if decoder == "decord":
        pytest.importorskip("decord")
    config = FrameConfig(decoder=decoder)
    with pytest.raises(RowError) as e:
        prepare_frames(tmp_path / "nope.mp4", config)
    assert e.value.reason == "video_missing" and "nope.mp4" in e.value.message
    garbage = tmp_path / "page.mp4"
    garbage.write_bytes(b"<html><body>404 Not Found</body></html>" * 20)
    with pytest.raises(RowError) as e:
        prepare_frames(garbage, config)
    assert e.value.reason == "video_unreadable" and "page.mp4" in e.value.message


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
@pytest.mark.parametrize("start, stop", [(0, N + 1), (N, None), (35, 60)])
def test_range_past_the_end_is_too_short(clips, decoder, start, stop):
    if decoder == "decord":
        pytest.importorskip("decord")
    with pytest.raises(RowError) as e:
        prepare_frames(clips["h264"], FrameConfig(decoder=decoder), start, stop)
    assert e.value.reason == "video_too_short"
    assert f"has {N}" in e.value.message


def test_cut_file_is_truncated(clips, tmp_path):
    data = clips["h264"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # faststart: the index survives, the frames do not
    with pytest.raises(RowError) as e:
        prepare_frames(cut, FrameConfig(size=32))
    assert e.value.reason == "video_truncated"


@pytest.mark.parametrize("start, stop", [(-1, None), (5, 5), (6, 2)])
def test_bad_arguments_are_value_errors(clips, start, stop):
    with pytest.raises(ValueError):
        prepare_frames(clips["h264"], FrameConfig(), start, stop)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_frames": 0}, {"size": 8}, {"jpeg_quality": 100}, {"decoder": "auto"}, {"pool": "ray"}, {"workers": -1},
     {"seek": "nearest"}],
)
def test_config_is_checked(kwargs):
    with pytest.raises(ValueError):
        FrameConfig(**kwargs)


def test_inflight_defaults_to_twice_the_workers():
    assert FrameConfig(workers=3).resolved_inflight == 6
    assert FrameConfig(workers=3, max_inflight=1).resolved_inflight == 1
    assert FrameConfig().resolved_workers >= 1


# ----------------------------------------------------------------------------------------------------------------
# iter_prepared


def test_pool_prepares_every_item_and_reports_bad_ones(clips, tmp_path):
    items = [("a", clips["h264"], 0, None), ("b", tmp_path / "missing.mp4", 0, None), ("c", clips["hevc"], 10, 20),
             ("d", clips["h264"], 30, 99)]
    got = dict(iter_prepared(items, FrameConfig(size=32, workers=2, seek="exact")))
    assert set(got) == {"a", "b", "c", "d"}
    assert isinstance(got["a"], PreparedFrames) and got["a"].indices.tolist() == frame_indices(N, 8).tolist()
    np.testing.assert_allclose(_levels(got["c"]), frame_indices(N, 8, 10, 20), atol=0.5)
    assert isinstance(got["b"], RowError) and got["b"].reason == "video_missing"
    assert isinstance(got["d"], RowError) and got["d"].reason == "video_too_short"


def test_pool_never_pulls_more_than_max_inflight_ahead(tmp_path):
    path = tmp_path / "tiny.mp4"
    write_video(path, _index_frames(4, (64, 64)), 30)
    pulled = 0
    lock = threading.Lock()

    def items():
        nonlocal pulled
        for i in range(1000):
            with lock:
                pulled += 1
            yield i, path, 0, None

    config = FrameConfig(num_frames=1, size=16, workers=2, max_inflight=3)
    consumed, ahead, keys = 0, [], set()
    for key, prepared in iter_prepared(items(), config):
        consumed += 1
        keys.add(key)
        ahead.append(pulled - consumed)
        assert isinstance(prepared, PreparedFrames)
    assert consumed == 1000 and keys == set(range(1000))
    assert max(ahead) <= 3 - 1  # at each yield: at most max_inflight items taken, one of them just handed over
    assert max(ahead) >= 1  # and it did run ahead


def test_closing_early_stops_pulling(clips):
    pulled = []

    def items():
        for i in range(100):
            pulled.append(i)
            yield i, clips["h264"], 0, None

    gen = iter_prepared(items(), FrameConfig(size=16, num_frames=1, workers=2, max_inflight=4))
    next(gen)
    gen.close()
    assert len(pulled) <= 5


def test_process_pool_gives_the_same_frames(clips):
    items = [(k, clips[k], 0, None) for k in ("h264", "hevc")]
    threads = dict(iter_prepared(items, FrameConfig(size=32, workers=2)))
    procs = dict(iter_prepared(items, FrameConfig(size=32, workers=2, pool="processes")))
    for k in ("h264", "hevc"):
        assert procs[k].indices.tolist() == threads[k].indices.tolist()
        assert procs[k].jpegs == threads[k].jpegs


def test_bugs_propagate_from_the_pool(clips):
    with pytest.raises(ValueError):
        list(iter_prepared([("x", clips["h264"], 5, 2)], FrameConfig(workers=1)))


# ----------------------------------------------------------------------------------------------------------------
# NVDEC (decoder="nvdec"): a setting checked before any clip; the decoding itself is tested where a GPU decodes


def _nvdec_works() -> bool:
    from captioning.frames import nvdec_problem

    return nvdec_problem() is None


def test_nvdec_is_a_setting_that_builds_anywhere():
    from captioning.stage import CaptionConfig
    from yume_core.config import from_dict

    config = from_dict(CaptionConfig, {"frames": {"decoder": "nvdec"}})  # the YAML `frames: {decoder: nvdec}`
    assert config.frames.decoder == "nvdec"
    assert FrameConfig().decoder == "pyav"  # the CPU reader stays the default


@pytest.mark.skipif(_nvdec_works(), reason="NVDEC decodes here: no error to check")
def test_nvdec_without_a_gpu_stops_before_any_clip_with_one_line(tmp_path):
    from pipelines.cli_common import one_line_error
    from yume_core.config import ConfigError

    pulled = []

    def items():
        for i in range(3):
            pulled.append(i)
            yield i, tmp_path / "never-opened.mp4", 0, None

    with pytest.raises(ConfigError) as e:
        iter_prepared(items(), FrameConfig(decoder="nvdec"))
    assert pulled == []  # raised at the call, before the first item was read
    message = str(e.value)
    assert "\n" not in message and one_line_error(e.value) == message
    assert message.startswith("frames.decoder is 'nvdec' but ")
    assert "frames: {decoder: pyav}" in message and "NVIDIA GPU" in message
    with pytest.raises(ConfigError):  # a single clip too: the setting, not the (missing) file, is the problem
        prepare_frames(tmp_path / "never-opened.mp4", FrameConfig(decoder="nvdec"))


def test_nvdec_problems_name_their_cause(monkeypatch):
    import av.codec.hwaccel

    from captioning import frames
    from yume_core.config import ConfigError

    monkeypatch.setattr(frames, "_nvdec", None)  # probe afresh
    monkeypatch.setattr(av.codec.hwaccel, "hwdevices_available", lambda: ["vaapi"])
    with pytest.raises(ConfigError, match=r"built without CUDA \(hardware devices: \['vaapi'\]\).*decoder: pyav"):
        frames.check_decoder(FrameConfig(decoder="nvdec"))
    monkeypatch.setattr(frames, "_nvdec", None)
    monkeypatch.setattr(av.codec.hwaccel, "hwdevices_available", lambda: ["cuda"])
    monkeypatch.setattr(frames, "_nvdec_hwaccel", lambda: _FailingHWAccel())
    with pytest.raises(ConfigError, match=r"no CUDA device could be opened for decoding \(.*no device here\)"):
        frames.check_decoder(FrameConfig(decoder="nvdec"))


class _FailingHWAccel:
    def create(self, codec):
        import av

        raise av.error.PermissionError(1, "no device here")


def test_the_cpu_decoders_never_probe_the_gpu(clips, monkeypatch):
    from captioning import frames

    def probe():
        raise AssertionError("probed NVDEC for a CPU decoder")

    monkeypatch.setattr(frames, "_nvdec", None)
    monkeypatch.setattr(frames, "_probe_nvdec", probe)
    frames.check_decoder(FrameConfig())
    assert len(prepare_frames(clips["h264"], FrameConfig(size=32)).jpegs) == 8
    assert len(dict(iter_prepared([("a", clips["hevc"], 0, None)], FrameConfig(size=32, workers=1)))) == 1


def test_the_nvdec_probe_stream_decodes():
    import av

    from captioning.frames import _probe_stream

    with av.open(io.BytesIO(_probe_stream())) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 1 and (frames[0].width, frames[0].height) == (256, 144)


@pytest.mark.gpu
@pytest.mark.skipif(not _nvdec_works(), reason="needs NVDEC (an NVIDIA GPU with its video driver)")
@pytest.mark.parametrize("kind", ["h264", "hevc", "h264_gop10", "hevc_gop10"])
@pytest.mark.parametrize("seek", ["exact", "keyframe"])
def test_nvdec_decodes_the_frames_the_cpu_decodes(clips, kind, seek):
    cpu = prepare_frames(clips[kind], FrameConfig(size=64, seek=seek, fast_decode=False))
    gpu = prepare_frames(clips[kind], FrameConfig(size=64, seek=seek, decoder="nvdec"))
    assert gpu.indices.tolist() == cpu.indices.tolist()
    np.testing.assert_allclose(_levels(gpu), gpu.indices, atol=0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not _nvdec_works(), reason="needs NVDEC (an NVIDIA GPU with its video driver)")
def test_nvdec_bad_files_fail_their_rows_as_on_the_cpu(clips, tmp_path):
    config = FrameConfig(decoder="nvdec")
    with pytest.raises(RowError) as e:
        prepare_frames(tmp_path / "nope.mp4", config)
    assert e.value.reason == "video_missing"
    garbage = tmp_path / "page.mp4"
    garbage.write_bytes(b"<html><body>404 Not Found</body></html>" * 20)
    with pytest.raises(RowError) as e:
        prepare_frames(garbage, config)
    assert e.value.reason == "video_unreadable"
    got = dict(iter_prepared([("a", clips["h264"], 0, None), ("b", tmp_path / "nope.mp4", 0, None)],
                             FrameConfig(decoder="nvdec", size=32, workers=2)))
    assert isinstance(got["a"], PreparedFrames) and got["b"].reason == "video_missing"
