"""Video IO: exact probing, frame ranges, truncation and garbage detection, cutting/resampling, atomic writes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from yume_core.errors import RowError
from yume_core.media import VideoInfo, _resample, iter_frames, probe_video, read_frames, transcode, write_video
from yume_core.storage import is_temp

W, H, N, FPS = 96, 64, 45, 30


def make_frames(n: int = N, w: int = W, h: int = H, noise: bool = False):
    """Smooth, distinct frames: frame i has a bright bar at column 2*i and a per-frame brightness ramp.
    `noise` adds grain, so that the coded pictures (not the headers) make up most of a small file."""
    xx = np.arange(w)[None, :]
    yy = np.arange(h)[:, None]
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = (xx * 2 + i * 4) % 256
        img[..., 1] = (yy * 3) % 256
        img[..., 2] = 40 + 4 * i
        img[:, (2 * i) % w] = 255
        if noise:
            img[..., 1] = rng.integers(0, 256, (h, w), dtype=np.uint8)
        yield img


def write_moov_at_end(path: Path, codec: str, n: int = N, noise: bool = False) -> None:
    """An mp4 as most muxers write it by default: index (moov) after the data (no faststart)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        if codec == "libx265":
            s.options = {"x265-params": "log-level=error"}
        for i, img in enumerate(make_frames(n, noise=noise)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


@pytest.fixture(scope="module", params=["libx264", "libx265"])
def clip(request, tmp_path_factory) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("media") / f"clip_{request.param}.mp4"
    info = write_video(path, make_frames(), FPS, codec=request.param, gop=8)
    assert isinstance(info, VideoInfo)
    return request.param, path


def test_probe_is_exact(clip):
    codec, path = clip
    for count in (True, False):
        info = probe_video(path, count_frames=count)
        assert info.frames == N
        assert info.fps == 30.0
        assert (info.width, info.height) == (W, H)
        assert info.codec == {"libx264": "h264", "libx265": "hevc"}[codec]
        assert info.duration_s == pytest.approx(N / FPS)
        assert info.bytes == path.stat().st_size
    # write_video reports what probe finds
    again = write_video(path.with_name(f"again_{codec}.mp4"), make_frames(), FPS, codec=codec)
    assert again == probe_video(again.path)


def test_hevc_tag_and_faststart(clip):
    codec, path = clip
    with av.open(str(path)) as c:
        tag = c.streams.video[0].codec_tag
    assert tag == {"libx264": "avc1", "libx265": "hvc1"}[codec]
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "movflags=+faststart puts the index first"


def test_read_frames_ranges_and_resize(clip):
    _, path = clip
    full = read_frames(path)
    assert full.shape == (N, H, W, 3) and full.dtype == np.uint8
    src = np.stack(list(make_frames())).astype(np.int16)
    assert np.abs(full.astype(np.int16) - src).mean() < 4  # lossy, but the same pictures
    # every start, including ones that need a seek into a later GOP (gop=8), gives exactly the slice
    for start in range(0, N, 3):
        np.testing.assert_array_equal(read_frames(path, start, start + 4), full[start : start + 4])
    assert read_frames(path, N - 2, N + 10).shape[0] == 2  # slice semantics past the end
    assert read_frames(path, N + 5, N + 9).shape == (0, H, W, 3)
    assert read_frames(path, 3, 3).shape == (0, H, W, 3)
    small = read_frames(path, 5, 9, size=(48, 32))
    assert small.shape == (4, 32, 48, 3)
    assert [f.shape for f in iter_frames(path, 0, 2)] == [(H, W, 3)] * 2
    with pytest.raises(ValueError):
        read_frames(path, 5, 2)


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
@pytest.mark.parametrize("frac", [0.5, 0.9])
def test_truncated_faststart_is_video_truncated(tmp_path, codec, frac):
    path = tmp_path / "cut.mp4"
    write_video(path, make_frames(noise=True), FPS, codec=codec)
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat") < 0.4 * len(data)  # the cut falls in the coded frames
    path.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(RowError) as e:
        probe_video(path)
    assert e.value.reason == "video_truncated"
    assert str(path) in e.value.message and "re-download" in e.value.message.lower()
    assert f"of the {N} its index promises" in e.value.message
    # the header alone cannot tell: that is what count_frames is for
    assert probe_video(path, count_frames=False).frames == N


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
@pytest.mark.parametrize("frac", [0.5, 0.9])
def test_truncated_moov_at_end_is_unreadable(tmp_path, codec, frac):
    path = tmp_path / "cut.mp4"
    write_moov_at_end(path, codec, noise=True)
    data = path.read_bytes()
    assert data.index(b"mdat") < data.index(b"moov")
    assert probe_video(path).frames == N  # intact file is fine
    path.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(RowError) as e:
        probe_video(path)
    assert e.value.reason == "video_unreadable"
    assert "moov" in e.value.message and "re-download" in e.value.message.lower()


def test_truncated_by_one_frame_is_caught(tmp_path):
    """Cutting only the last frame's tail: FFmpeg returns a short packet and flags it corrupt."""
    path = tmp_path / "cut.mp4"
    write_video(path, make_frames(), FPS)
    data = path.read_bytes()
    path.write_bytes(data[:-50])
    with pytest.raises(RowError) as e:
        probe_video(path)
    assert e.value.reason == "video_truncated"


def test_garbage_missing_empty_and_audio_only(tmp_path):
    html = tmp_path / "page.mp4"
    html.write_bytes(b"<html><body>404 Not Found</body></html>\n" * 100)
    rand = tmp_path / "rand.mp4"
    rand.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = tmp_path / "audio.m4a"
    with av.open(str(audio), "w") as out:
        s = out.add_stream("aac", rate=44100)
        for i in range(5):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 44100, i * 1024
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    cases = {
        html: "video_unreadable",
        rand: "video_unreadable",
        empty: "video_unreadable",
        audio: "video_unreadable",
        tmp_path / "nope.mp4": "video_missing",
    }
    for path, reason in cases.items():
        for call in (probe_video, lambda p: probe_video(p, count_frames=False), read_frames):
            with pytest.raises(RowError) as e:
                call(path)
            assert e.value.reason == reason, (path, e.value.message)
            assert str(path) in e.value.message


def test_transcode_cut_resample_resize(clip, tmp_path):
    codec, path = clip
    full = read_frames(path)
    info = transcode(path, tmp_path / "cut.mp4", start_frame=10, end_frame=29)
    assert info.frames == 20 and probe_video(tmp_path / "cut.mp4").frames == 20
    cut = read_frames(tmp_path / "cut.mp4")
    assert np.abs(cut.astype(np.int16) - full[10:30]).mean() < 4  # re-encoded, same pictures
    # bar position identifies the source frame: the first output frame is source frame 10
    assert np.argmax(cut[0].astype(int).sum((0, 2))) == 20

    assert transcode(path, tmp_path / "half.mp4", 0, 29, fps=15).frames == 15
    assert probe_video(tmp_path / "half.mp4").fps == 15.0
    assert transcode(path, tmp_path / "wan.mp4", fps=16).frames == 24  # ceil(45 * 16 / 30)
    assert transcode(path, tmp_path / "up.mp4", 0, 9, fps=60).frames == 20
    r = transcode(path, tmp_path / "small.mp4", 5, 14, size=(64, 48), codec="libx265")
    assert (r.width, r.height, r.frames, r.codec) == (64, 48, 10, "hevc")
    assert probe_video(tmp_path / "small.mp4").frames == 10
    assert transcode(path, tmp_path / "tail.mp4", start_frame=40).frames == 5


def test_transcode_out_of_range_leaves_nothing(clip, tmp_path):
    _, path = clip
    dst = tmp_path / "too_far.mp4"
    with pytest.raises(RowError) as e:
        transcode(path, dst, 40, 60)
    assert e.value.reason == "video_too_short"
    assert not dst.exists() and list(tmp_path.iterdir()) == []


def test_resample_picks_nearest_frames():
    src = [np.full((2, 2, 3), i, np.uint8) for i in range(10)]
    pick = lambda fps_in, fps_out: [int(f[0, 0, 0]) for f in _resample(iter(src), fps_in, fps_out)]  # noqa: E731
    assert pick(30, 15) == [0, 2, 4, 6, 8]
    assert pick(30, 60) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 9]  # ties go to the later frame
    assert pick(30, 30) == list(range(10))
    assert pick(30, 16) == [0, 2, 4, 6, 8, 9]  # ceil(10 * 16 / 30) = 6; t = 5/16 s -> frame 9.375 -> 9


def test_write_is_atomic_when_frames_fail(tmp_path):
    dst = tmp_path / "out.mp4"

    def frames():
        yield from make_frames(20)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_video(dst, frames(), FPS)
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []  # the temp file is gone too

    # an existing good file is not clobbered by a failed rewrite
    write_video(dst, make_frames(5), FPS)
    before = dst.read_bytes()
    with pytest.raises(RuntimeError):
        write_video(dst, frames(), FPS)
    assert dst.read_bytes() == before
    assert not any(is_temp(p) for p in tmp_path.iterdir())


def test_write_rejects_bad_frames(tmp_path):
    dst = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="even"):
        write_video(dst, make_frames(3, w=95), FPS)
    with pytest.raises(ValueError, match="no frames"):
        write_video(dst, [], FPS)
    with pytest.raises(ValueError, match="uint8"):
        write_video(dst, [np.zeros((H, W, 3), np.float32)], FPS)
    with pytest.raises(ValueError, match="at least 64"):  # x265 corrupts memory on some narrow frames
        write_video(dst, make_frames(3, w=48, h=32), FPS, codec="libx265")
    with pytest.raises(ValueError, match="differs"):
        write_video(dst, [np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 2, 3), np.uint8)], FPS)
    assert list(tmp_path.iterdir()) == []
    # odd sizes are fine for a 4:4:4 format
    info = write_video(dst, make_frames(3, w=95, h=63), FPS, pix_fmt="yuv444p")
    assert (info.width, info.height) == (95, 63)


def test_encoder_options_reach_the_encoder(tmp_path):
    """x264 writes its settings into the stream (an SEI message): the options must show up there."""
    plain = write_video(tmp_path / "a.mp4", make_frames(10), FPS).path
    tuned = write_video(tmp_path / "b.mp4", make_frames(10), FPS, gop=5, options={"x264-params": "mbtree=0"}).path
    assert b"mbtree=1" in Path(plain).read_bytes()
    data = Path(tuned).read_bytes()
    assert b"mbtree=0" in data and b"keyint=5" in data


def test_fractional_fps(tmp_path):
    info = write_video(tmp_path / "ntsc.mp4", make_frames(10), 30000 / 1001)
    probed = probe_video(tmp_path / "ntsc.mp4")
    assert probed.frames == 10 and probed.fps == pytest.approx(29.97, abs=1e-2)
    assert info.fps == pytest.approx(probed.fps)
