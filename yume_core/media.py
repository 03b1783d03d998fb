"""Video IO with PyAV: probe, read, write, cut/resample. Small on purpose; every container detail is FFmpeg's.

Why PyAV: it wraps FFmpeg's demuxers, decoders and encoders (H.264 and HEVC in mp4, Sekai's format) without a
subprocess per call, streams packet by packet (so memory stays bounded on 60 s 720p clips), and exposes what a
data pipeline needs to tell a good file from a broken one: the index's frame count, per-packet sizes, positions
and FFmpeg's own `corrupt` flag.

Errors on input files are `RowError`s with a reason code a summary can count by:

- `video_missing`: there is no file at the path.
- `video_unreadable`: FFmpeg cannot open it as media, or it has no video stream. This includes an mp4 cut short
  whose index (`moov` atom) sits at the end of the file (the default of most muxers): the header is gone with the
  tail, so FFmpeg sees no index at all ("moov atom not found"); the message says so when the file starts with an
  mp4 signature. Re-download such files.
- `video_truncated`: the file opens but ends early: fewer packets than the index promises, a packet cut off by the
  end of the file (FFmpeg flags it corrupt), demuxing fails midway, or the last GOP does not decode. This is how
  a cut download of an mp4 with its index at the front (`movflags=faststart`, what `write_video` writes) looks.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from yume_core.errors import RowError
from yume_core.storage import atomic_path

__all__ = ["VideoInfo", "probe_video", "read_frames", "iter_frames", "write_video", "transcode"]

# Pixel formats whose chroma is subsampled 2x in both directions: width and height must be even.
_SUBSAMPLED_420 = {"yuv420p", "yuvj420p", "nv12", "yuv420p10le", "p010le"}
_MP4_LIKE = {".mp4", ".mov", ".m4v"}


@dataclass(frozen=True)
class VideoInfo:
    path: str
    bytes: int
    codec: str  # FFmpeg's decoder name: "h264", "hevc", ...
    fps: float
    frames: int
    width: int
    height: int
    duration_s: float


# ----------------------------------------------------------------------------------------------------------------
# opening and probing


def open_input(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open a file for reading and return it with its first video stream, or raise a RowError."""
    p = Path(path)
    if not p.exists():
        raise RowError("video_missing", f"{p}: video file not found; download it or fix the path in the CSV.")
    if p.is_file() and p.stat().st_size == 0:
        raise RowError("video_unreadable", f"{p}: video file is empty (0 bytes); re-download it.")
    try:
        container = av.open(str(p), "r")
    except (av.FFmpegError, OSError, ValueError) as e:
        hint = "it is not a video FFmpeg can open"
        if _looks_like_mp4(p):
            hint = (
                "it starts like an mp4 but its index (moov atom) is missing or damaged, which is what a download "
                "cut short looks like when the index is written at the end of the file"
            )
        raise RowError("video_unreadable", f"{p}: cannot open ({e}); {hint}. Re-download or re-encode it.") from None
    if not container.streams.video:
        container.close()
        raise RowError("video_unreadable", f"{p}: has no video stream; re-download or re-encode it.")
    return container, container.streams.video[0]


def _looks_like_mp4(p: Path) -> bool:
    """The ISO-BMFF signature (an `ftyp` box first). Used only to word an error message."""
    try:
        with open(p, "rb") as f:
            return f.read(8)[4:8] == b"ftyp"
    except OSError:
        return False


def _rate(stream) -> Fraction | None:
    return stream.average_rate or stream.guessed_rate or stream.base_rate or None


def probe_video(path: str | Path, count_frames: bool = True) -> VideoInfo:
    """Describe a video file; with `count_frames`, also prove it is complete and decodable.

    `count_frames=False` reads the header only (about a millisecond): frames come from the container's index (exact
    for mp4) or from duration x fps, and a truncated file is *not* detected.

    `count_frames=True` demuxes every packet of the video stream without decoding and counts those with data
    (cheap: a 60 s 720p HEVC clip is 1,800 packets; its whole probe took 0.1 s here, last-GOP decode included);
    `frames` is that count. It raises `video_truncated` when the count falls short of the index's promise (or, for
    containers without a frame count, of duration x fps by more than 10%), when a packet runs past the end of the
    file or FFmpeg flags it corrupt, or when demuxing fails midway.
    It then decodes the first GOP's first frame and the whole last GOP (one GOP, not the clip), which proves the
    stream decodes at both ends; a failure there is also `video_truncated`.
    `video_unreadable` and `video_missing` are described in the module docstring.
    """
    p = Path(path)
    container, stream = open_input(p)
    with container:
        size = p.stat().st_size
        rate = _rate(stream)
        fps = float(rate) if rate else 0.0
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        promised = int(stream.frames or 0)
        if stream.duration is not None and stream.time_base is not None:
            header_duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            header_duration = container.duration / av.time_base
        else:
            header_duration = 0.0
        if not count_frames:
            frames = promised or (round(header_duration * fps) if fps else 0)
            duration = frames / fps if fps and frames else header_duration
            return VideoInfo(str(p), size, codec, fps, frames, width, height, duration)

        frames = _count_and_verify(p, container, stream, size, promised, header_duration, fps)
        return VideoInfo(str(p), size, codec, fps, frames, width, height, frames / fps if fps else header_duration)


def _count_and_verify(p, container, stream, size, promised, header_duration, fps) -> int:
    def truncated(what: str) -> RowError:
        return RowError(
            "video_truncated",
            f"{p}: {what}; the file ends early (partial download or interrupted copy). Re-download it.",
        )

    count = 0  # complete packets with data
    cut = None  # why the stream stops early, if it visibly does
    first_gop: list = []  # packets of the first GOP (decoded until it yields a frame)
    last_gop: list = []  # packets from the latest keyframe on
    keyframes = 0
    try:
        for pkt in container.demux(stream):
            if pkt.size <= 0:
                continue  # the demuxer's end-of-stream flush packet
            if pkt.is_corrupt or (pkt.pos is not None and pkt.pos >= 0 and pkt.pos + pkt.size > size):
                cut = f"frame {count} is cut off by the end of the file"
                break
            if pkt.is_keyframe:
                keyframes += 1
                last_gop = []
            if keyframes <= 1 and len(first_gop) < 64:  # a first frame never needs more
                first_gop.append(pkt)
            last_gop.append(pkt)
            count += 1
    except av.FFmpegError as e:
        cut = f"demuxing failed after {count} frames ({e})"
    have = f"{count} complete frames" + (f" of the {promised} its index promises" if promised else "")
    if cut:
        raise truncated(f"{cut} ({have})")
    if count == 0:
        raise truncated("the video stream has no data")
    if promised and count < promised:
        raise truncated(f"{have}")
    if not promised and header_duration and fps and count < 0.9 * header_duration * fps - 1:
        raise truncated(f"{count} frames ({count / fps:.2f} s) where the header promises {header_duration:.2f} s")

    ctx = stream.codec_context
    try:
        if last_gop and first_gop and last_gop[0] is not first_gop[0]:
            if not _decode_some(ctx, first_gop, need_all=False):
                raise truncated("the first GOP does not decode")
            ctx.flush_buffers()
        if not _decode_some(ctx, last_gop, need_all=True):
            raise truncated("the last GOP does not decode to its last frame")
    except av.FFmpegError as e:
        raise truncated(f"decoding failed ({e})") from None
    return count


def _decode_some(ctx, packets: list, need_all: bool) -> bool:
    """Decode packets (then flush). need_all=False: stop at the first frame. need_all=True: the decoder must
    output the frame with the largest pts among the packets (leading pictures of an open GOP may be skipped)."""
    last_pts = max((p.pts for p in packets if p.pts is not None), default=None)
    seen = []
    for pkt in packets + [None]:
        for frame in ctx.decode(pkt):
            if not need_all:
                return True
            seen.append(frame.pts)
    if not seen:
        return False
    return last_pts is None or last_pts in seen


# ----------------------------------------------------------------------------------------------------------------
# reading frames


def iter_frames(
    path: str | Path, start: int = 0, stop: int | None = None, size: tuple[int, int] | None = None
) -> Iterator[np.ndarray]:
    """Yield frames [start, stop) as (H, W, 3) uint8 RGB arrays, resized to `size=(W, H)` if given.

    The index is the frame's position in the order the decoder outputs frames (presentation order), from 0.
    Like a slice, `stop` past the end yields what exists. Only one frame is held at a time.
    For `start > 0` the packets are demuxed once (cheap) to find that frame's timestamp, then the reader seeks to
    the keyframe before it, so cutting a segment from the end of a 60 s clip decodes about one GOP, not the whole
    clip; if the seek does not land at or before the frame, it decodes from the start instead.
    A stream that fails to decode midway raises `RowError("video_truncated")`; a file cut cleanly at a packet
    boundary just yields fewer frames (reading does not validate: `probe_video` does).
    """
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"bad frame range [{start}, {stop})")
    if stop is not None and stop == start:
        return
    plan = _locate(path, start) if start > 0 else None
    if plan is _PAST_END:
        return
    if plan is not None:
        exact = yield from _decode(path, start, stop, size, plan)
        if exact:
            return
    yield from _decode(path, start, stop, size, None)


_PAST_END = object()


def _locate(path, start: int):
    """(pts of frame `start`, dts of the keyframe at or before it), `_PAST_END`, or None (decode linearly)."""
    container, stream = open_input(path)
    pts, keys = [], []
    with container:
        try:
            for pkt in container.demux(stream):
                if pkt.size <= 0:
                    continue
                if pkt.pts is None or pkt.dts is None:
                    return None
                pts.append(pkt.pts)
                if pkt.is_keyframe:
                    keys.append((pkt.pts, pkt.dts))
        except av.FFmpegError:
            return None  # the linear decode reports the damage
    pts.sort()
    if start >= len(pts):
        return _PAST_END
    target = pts[start]
    usable = [k for k in keys if k[0] <= target]
    if not usable:
        return None
    # Seek by the keyframe's dts (<= its pts): dts-indexed (mp4) and pts-indexed (mkv) containers both land on this
    # keyframe or an earlier one; _decode checks that and falls back otherwise.
    return target, usable[-1][1]


def _decode(path, start, stop, size, plan):
    """Generator over frames [start, stop); returns False (having yielded nothing) if the seek in `plan` missed."""
    container, stream = open_input(path)
    with container:
        stream.thread_type = "AUTO"
        w, h = size if size is not None else (stream.codec_context.width, stream.codec_context.height)
        reformatter = VideoReformatter()  # reused: it keeps its scaler (frame.to_ndarray would build one per frame)
        target, index = None, 0
        if plan is not None:
            target, seek_ts = plan
            container.seek(seek_ts, stream=stream, backward=True, any_frame=False)
            index = None
        try:
            for frame in container.decode(stream):
                if index is None:  # after a seek: skip to the target frame
                    if frame.pts is None or frame.pts > target:
                        return False
                    if frame.pts < target:
                        continue
                    index = start
                if stop is not None and index >= stop:
                    return True
                if index >= start:
                    rgb = reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA")
                    yield np.ascontiguousarray(rgb.to_ndarray())
                index += 1
        except av.FFmpegError as e:
            raise RowError(
                "video_truncated", f"{path}: decoding failed near frame {index} ({e}); re-download or re-encode it."
            ) from None
    return plan is None or index is not None


def read_frames(
    path: str | Path, start: int = 0, stop: int | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Frames [start, stop) as one uint8 array (T, H, W, 3), RGB; see `iter_frames`."""
    frames = list(iter_frames(path, start, stop, size))
    if frames:
        return np.stack(frames)
    if size is None:
        info = probe_video(path, count_frames=False)
        size = (info.width, info.height)
    return np.zeros((0, size[1], size[0], 3), np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# writing


def _as_rate(fps) -> Fraction:
    """30 -> 30/1, 29.97 -> 2997/100, 30000/1001 (float) -> 30000/1001."""
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    codec: str = "libx264",
    crf: int = 23,
    preset: str = "veryfast",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    options: Mapping[str, str] | None = None,
) -> VideoInfo:
    """Encode (H, W, 3) uint8 RGB frames to a video file, atomically; return its VideoInfo.

    `frames` may be any iterable (a generator streams: one frame in memory at a time). The file appears under
    `path` only once complete: if the iterable raises midway, the exception propagates and nothing is left under
    `path` (the temp file beside it is removed). mp4/mov get `movflags=+faststart` (index at the front, so a
    player or a truncation check can read it first). `codec="libx265"` writes HEVC tagged `hvc1`, like Sekai's
    videos (and playable by Apple players). `gop` sets the keyframe interval (default: the encoder's). `options`
    adds encoder options (FFmpeg's names, e.g. {"x264-params": "bframes=0"}; `*-params` values are appended to ours).
    Reproducibility: libx264 as bundled with PyAV 18 can encode identical frames to different bytes from run to run
    (same quality; the lookahead's B-frame/macroblock-tree analysis seems to read uninitialised memory: outputs vary
    with unrelated allocations, even single-threaded). {"x264-params": "bframes=0"} (or "mbtree=0") made it
    reproducible in every trial; the generated sample uses bframes=0. libx265 showed no such variation.
    Raises ValueError for no frames, a frame that is not (H, W, 3) uint8, frames of different sizes, an odd
    width/height with a 4:2:0 `pix_fmt` (resize to even sizes first), or libx265 with a width under 64.
    """
    path = Path(path)
    rate = _as_rate(fps)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    _check_frame(first, None, 0)
    height, width = first.shape[:2]
    if pix_fmt in _SUBSAMPLED_420 and (width % 2 or height % 2):
        raise ValueError(f"{path}: {pix_fmt} needs even width and height, got {width}x{height}; resize first")
    if codec == "libx265" and width < 64:
        # x265 as bundled with PyAV 18 corrupts the heap on some narrow frames (seen at widths 40, 46, 48: glibc
        # aborts the process later); no real clip is that narrow, so refuse rather than risk it.
        raise ValueError(f"{path}: libx265 needs a width of at least 64 pixels, got {width}; use libx264 or resize")
    mux_options = {"movflags": "+faststart"} if path.suffix.lower() in _MP4_LIKE else {}
    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=_format_for(path), options=mux_options) as out:
            stream = out.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            opts = {"crf": str(crf), "preset": preset}
            params: list[str] = []  # x264-params / x265-params
            if codec == "libx265":
                params.append("log-level=error")  # x265 prints to stderr itself otherwise
                stream.codec_tag = "hvc1"
            if gop is not None:
                stream.codec_context.gop_size = int(gop)
                params.append(f"keyint={int(gop)}:min-keyint={int(gop)}:scenecut=0")
            for key, value in (options or {}).items():
                if key == f"{codec[3:]}-params":
                    params.append(str(value))
                else:
                    opts[key] = str(value)
            if params and codec in ("libx264", "libx265"):
                opts[f"{codec[3:]}-params"] = ":".join(params)
            stream.options = opts
            # one reformatter for the whole clip: it keeps its scaler, where frame.reformat() builds one per frame
            # (13x slower on small frames)
            reformatter = VideoReformatter()
            frame = first
            while frame is not None:
                if n:
                    _check_frame(frame, (height, width), n)
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vf = reformatter.reformat(vf, format=pix_fmt)
                vf.pts = n
                vf.time_base = 1 / rate
                for packet in stream.encode(vf):
                    out.mux(packet)
                n += 1
                frame = next(it, None)
            for packet in stream.encode(None):
                out.mux(packet)
            codec_name = stream.codec_context.codec.canonical_name  # "h264" for libx264, as probe_video reports
    return VideoInfo(str(path), path.stat().st_size, codec_name, float(rate), n, width, height, n / float(rate))


def _format_for(path: Path) -> str | None:
    # The temp file keeps the suffix, but say it explicitly for the common case.
    return {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}.get(path.suffix.lower())


def _check_frame(frame, shape, i: int) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{type(frame).__name__} {getattr(frame, 'dtype', '')} {getattr(frame, 'shape', '')}"
        raise ValueError(f"frame {i}: expected an (H, W, 3) uint8 RGB array, got {got}")
    if shape is not None and frame.shape[:2] != shape:
        raise ValueError(
            f"frame {i}: size {frame.shape[1]}x{frame.shape[0]} differs from the first frame's {shape[1]}x{shape[0]}"
        )


# ----------------------------------------------------------------------------------------------------------------
# cutting and resampling


def transcode(
    src: str | Path,
    dst: str | Path,
    start_frame: int = 0,
    end_frame: int | None = None,
    fps: float | Fraction | None = None,
    size: tuple[int, int] | None = None,
    codec: str = "libx264",
    crf: int = 23,
) -> VideoInfo:
    """Cut frames [start_frame, end_frame] (inclusive, Yume's convention) from `src`, optionally resample to `fps`
    and resize to `size=(W, H)`, and write `dst` atomically. Streams: one source frame in memory at a time.

    Resampling picks, for output frame k at time k/fps (from the cut's start), the source frame nearest in time
    (ties to the later one), dropping or repeating frames; output frames cover the cut's duration:
    ceil(n_in * fps / src_fps) of them. Raises `RowError("video_too_short")` if `src` has no frame `end_frame`,
    plus probe/reader errors (`video_missing`, `video_unreadable`, `video_truncated`).
    """
    if start_frame < 0 or (end_frame is not None and end_frame < start_frame):
        raise ValueError(f"bad frame range [{start_frame}, {end_frame}]")
    header = probe_video(src, count_frames=False)
    src_rate = _as_rate(header.fps)
    out_rate = _as_rate(fps) if fps is not None else src_rate
    stop = None if end_frame is None else end_frame + 1

    def source() -> Iterator[np.ndarray]:
        n = 0
        for frame in iter_frames(src, start_frame, stop, size):
            n += 1
            yield frame
        if n == 0 or (stop is not None and start_frame + n < stop):
            ends = f"has no frame {start_frame}" if n == 0 else f"ends after frame {start_frame + n - 1}"
            raise RowError(
                "video_too_short",
                f"{src}: asked for frames [{start_frame}, {end_frame}] but the video {ends}; "
                "check the clip's frame range or re-download the video.",
            )

    frames = source() if out_rate == src_rate else _resample(source(), src_rate, out_rate)
    return write_video(dst, frames, out_rate, codec=codec, crf=crf)


def _resample(frames: Iterator[np.ndarray], src_rate: Fraction, out_rate: Fraction) -> Iterator[np.ndarray]:
    """Nearest-timestamp resampling, streaming. Output k shows source floor(k * src/out + 1/2) (exact arithmetic)."""
    ratio = src_rate / out_rate
    k = 0
    last = None
    n_in = 0
    for j, frame in enumerate(frames):
        while (k * ratio + Fraction(1, 2)) // 1 <= j:
            yield frame
            k += 1
        last, n_in = frame, j + 1
    # the tail: outputs whose nearest source frame would be past the end, while still inside the cut's duration
    while last is not None and k * ratio < n_in:
        yield last
        k += 1
