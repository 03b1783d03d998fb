"""Frame preparation for captioning: which frames, how big, how they are decoded, what fails, and the bounded pool.

Test videos encode each frame's index in its content (a flat grey of level index * STEP), so a decoded JPEG's mean
says which source frame it is. They use each encoder's defaults (B-frames; for x265 open GOPs, i.e. CRA keyframes
with leading pictures) and short GOPs, so sparse sampling has to seek across several keyframes.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from captioning.frames import FrameConfig, PreparedFrames, frame_indices, iter_prepared, prepare_frames
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
    return out


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
def test_pyav_returns_exactly_the_sampled_frames(clips, kind):
    prepared = prepare_frames(clips[kind], FrameConfig(size=64))
    assert prepared.indices.tolist() == frame_indices(N, 8).tolist()
    assert len(prepared.jpegs) == 8
    np.testing.assert_allclose(_levels(prepared), prepared.indices, atol=0.5)


@pytest.mark.parametrize("kind", ["h264", "hevc"])
@pytest.mark.parametrize("start, stop", [(9, 33), (30, 40), (0, 5), (17, 18)])
def test_segments_sample_inside_their_range(clips, kind, start, stop):
    prepared = prepare_frames(clips[kind], FrameConfig(size=32), start, stop)
    assert prepared.indices.tolist() == frame_indices(N, 8, start, stop).tolist()
    np.testing.assert_allclose(_levels(prepared), prepared.indices, atol=0.5)


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


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_sparse_decoding_is_bit_identical_to_decoding_everything(tmp_path, codec):
    """Skipping packets and non-reference frames must not change a single pixel of the sampled frames."""
    from captioning.frames import _decode_linear, _read_pyav
    from yume_core.media import read_frames

    sample = make_sekai_sample(tmp_path / "s", n_clips=1, n_frames=48, size=(128, 72))
    path = tmp_path / "walk.mp4"
    write_video(path, read_frames(sample.video_path(sample.clip_ids[0])), 30, codec=codec, gop=12)
    config = FrameConfig(num_frames=6, size=64)
    indices, sparse = _read_pyav(str(path), config, 5, 47)
    linear = _decode_linear(str(path), indices, 64)
    assert len(sparse) == 6
    for a, b in zip(sparse, linear):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["h264", "hevc_closed"])
def test_decord_and_pyav_agree(clips, kind):
    pytest.importorskip("decord")
    a = prepare_frames(clips[kind], FrameConfig(size=64, decoder="pyav"), 3, 38)
    b = prepare_frames(clips[kind], FrameConfig(size=64, decoder="decord"), 3, 38)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_allclose(_levels(a), _levels(b), atol=0.5)
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
    [{"num_frames": 0}, {"size": 8}, {"jpeg_quality": 100}, {"decoder": "auto"}, {"pool": "ray"}, {"workers": -1}],
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
    got = dict(iter_prepared(items, FrameConfig(size=32, workers=2)))
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
