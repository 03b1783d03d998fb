"""Frames for the captioning model: sample N frames of a clip or segment, decode only those, resize each to one
InternVL tile, JPEG-encode them; a bounded pool runs ahead of the GPU.

Sampling (`frame_indices`): the centre of each of N equal bins of the range, as InternVL's own video loader picks
frames, so the frames cover the whole clip and never sit on its first or last frame (often a cut or a fade).

Seeking (`seek`, PyAV only) decides whether those centres are decoded as they are or moved to keyframes:

- `"keyframe"` (default): in each bin, the keyframe nearest the bin's centre (keyframes ranked by presentation
  order from the packet index, so an HEVC CRA counts where it is shown; the earlier one on a tie), decoded alone:
  one intra decode per frame, no reference chain, so a clip costs ~N keyframe decodes whatever its length.
  Keyframes inside the range come first; the range's first and last frames (a clip's frame 0 is always a keyframe)
  are a bin's last resort, taken only when it holds no other keyframe: that is where cuts and fades sit, but one
  keyframe decoded alone still beats the chain to the centre (on x265's default 250-frame GOP, bin 0 of a 60 s
  clip holds only frame 0, and the 112-frame chain to its centre cost two thirds of the clip's decoding). A bin
  with no keyframe at all falls back to `exact` for its centre. The trade-off: a frame can be up to half a bin
  from its uniform target (at most ceil(L / 2N) frames for a range of L frames; also at most half a GOP when
  keyframes lie on both sides of the target inside the bin), never outside its own bin, so the frames still cover
  the range in order; fallback frames are exactly on target. For 8 frames of a 10 s clip a bin is 1.25 s (a frame
  moves <= 0.63 s); of a 60 s clip 7.5 s (<= 3.75 s; <= 1 s with 2 s GOPs). What it saves depends on the GOP,
  since a bin holds a keyframe only when the keyframe interval is at most about a bin. Measured on one core
  (`benchmarks/bench_frames.py`, 720p, BENCHMARKS.md): 60 s clips (Sekai-Real-HQ's length) get all 8 frames from
  keyframes with 2 s GOPs (keyint 60) and with keyint 250, ~80 ms per clip for H.264 and ~97 ms for HEVC, 5-20x
  faster than `exact`; 10 s clips with 2 s GOPs 5 of 8 (~190 / ~230 ms, 1.7x `exact`), with keyint 250 2 of 8
  (~1.15x). A 720p keyframe decode costs ~6.5 ms (H.264) to ~9 ms (HEVC) on one core, so 8 frames cannot go
  below ~55-75 ms per clip in software. Ranges shorter than 2N frames are sampled exactly (bins under 2 frames; a
  floored centre can then lie in the neighbouring bin). Captions must record `PreparedFrames.indices`, the frames
  actually used.
- `"exact"`: the centres themselves, each decoded from the keyframe before it (below).

Either way the frame returned for index i is frame i, bit-identical to a full decode with `fast_decode=False` (tested
on H.264 and open- and closed-GOP HEVC; see `fast_decode` below for the default).

Size: every frame becomes one `size` x `size` square (448 by default), aspect ratio *not* kept. Why a square:
InternVL3 cuts an image into 448 px tiles by its aspect ratio (plus a thumbnail when there is more than one tile),
so a 16:9 frame of 448x252 becomes 2 tiles + thumbnail = 3 x 256 tokens under the server's default
`max_dynamic_patch`, where a 448x448 square is exactly one tile (256 tokens) whatever the server is configured
with. 8 frames therefore cost 8 x 256 = 2,048 image tokens per request, the budget the request rate is planned on.
It is also what InternVL's own video path does (`load_video(..., max_num=1)` resizes every frame to 448x448), so the
model has seen squeezed video frames in training; letterboxing instead would spend 44% of each tile on padding.

Decoding (`decoder`):

- `"pyav"` (default): a sparse reader on PyAV. It demuxes the packets once (about 1 ms for 300 packets: no
  decoding) to rank the timestamps, so frame k is exactly the k-th frame in presentation order (as in
  `yume_core.media.iter_frames`). It then decodes only from the keyframe at or before each sampled frame up to that
  frame (for a keyframe: the keyframe alone), and tells FFmpeg to skip the non-reference frames that are not
  sampled (`skip_frame=NONREF`, switched per packet): no other frame depends on them, so the sampled frames are
  bit-identical to a full decode. Index and decoding share one open of the file (opening an H.264 mp4 costs
  ~6 ms, about one 720p keyframe decode), and the decoding seeks to each run of needed packets rather than reading
  the ones in between (3.5-5 ms per 60 s clip); every packet is checked against the index, and if a seek lands
  wrong the file is opened again and read through from its first packet.
  Scaling and colour conversion run in one swscale call on the 8 chosen frames only; `resize="area"` (default)
  averages the source pixels under each output pixel, so a 1280x720 -> 448x448 downscale is anti-aliased, at about
  half the cost of `"bicubic"` (~1 vs ~1.5 ms per 720p frame to 448x448 on one core; the JPEG adds ~0.7 ms).
  `fast_decode` (default on) skips H.264/HEVC's in-loop deblocking filter where no decoded frame is predicted from
  the result: on every frame when each sampled frame is a keyframe decoded alone, otherwise on non-reference frames
  only. So errors cannot propagate: the frames differ from a full decode by a fraction of a grey level on average
  (0.03-0.23 measured on 720p clips; tests bound it), and 8 keyframes of a 60 s 720p clip decode ~6-9% faster
  (H.264 56.6 -> 52.0 ms, HEVC 81.8 -> 76.5 ms). With `fast_decode=False` every frame is bit-identical to a full
  decode. Containers without timestamps (a raw `.h264` stream), or whose timestamps repeat, are decoded linearly,
  counting frames, and sampled exactly whatever `seek` says.
- `"decord"`: decord 0.6's `get_batch` with decord's own resize at decode time (measured: no slower than decoding
  at full size, where a Pillow resize afterwards costs ~6 ms per 720p frame). It decodes every frame between
  keyframe and target, so it measured 1.6-2.0x slower than the sparse reader on 720p H.264 and HEVC
  (`benchmarks/bench_frames.py`). Worse, on HEVC with open GOPs (x265's default: CRA keyframes with leading
  pictures) its seeks can land on the wrong frames: 8 frames sampled from a 32-frame clip with a CRA every 8 frames
  came back as 7 frames off by one or two, one of them twice (with a keyframe every 250 frames, as in the
  benchmark, the 8 samples happened to miss the leading pictures). Hence not the default; it stays selectable (the
  issue names it; a second opinion on an odd file), is exact on H.264 and closed-GOP HEVC in the tests, and is
  imported only when chosen. It is exact-only: it ignores `seek` and always decodes the uniform centres (its
  keyframe list, `get_key_indices`, counts packets in decode order, which is not presentation order for open-GOP
  keyframes, so picking keyframes through it would misplace them).
- `"nvdec"`: the same sparse reader with the decoding on the GPU's video engines (NVDEC, through PyAV's hardware
  API: `av.open(..., hwaccel=HWAccel("cuda", allow_software_fallback=False))`; PyAV >= 14 with an FFmpeg built
  with CUDA, as PyPI's av 18 wheels are). It is for GPU nodes, where the CPU's intra decode of 8 keyframes per clip
  (~55-75 ms of a core, see `seek`) is the floor of CPU preparation. The frames come back to system memory as NV12
  and are scaled and JPEG-encoded on the CPU as above. The hardware always deblocks, so `fast_decode` changes
  nothing there and the pictures are those of a full decode (up to colour-conversion rounding). The device is
  CUDA's primary context of the current device (`CUDA_VISIBLE_DEVICES` picks it), held once per process, so an
  open does not create a context of its own (FFmpeg's default). Before any clip, `check_decoder` decodes a test
  frame on NVDEC; where that fails (no GPU, no driver, a container without the driver's video libraries) it stops
  with one line naming `frames.decoder` and the fix, rather than decoding in software behind the setting's back.
  A stream NVDEC has no decoder for fails its row with `video_nvdec_unsupported`. Measured on a GPU node by
  `benchmarks/gpu_check.py --sections nvdec` (clips/s against the CPU path, and the cost of an open).

Each decoder runs single-threaded: throughput comes from decoding several clips at once, one per core, which
wastes nothing on thread synchronisation and needs no tuning per machine.

Parallelism (`iter_prepared`): decord (ctypes FFI), PyAV's decoder, swscale and Pillow's JPEG encoder all release
the GIL, and threads measured as fast as processes on 2 cores (1.48 s vs 1.46 s for 12 clips), so the default pool
is threads (no process start, no pickling of JPEGs). `pool="processes"` is there for nodes with many cores, where
the Python part of the per-packet loop (a few ms per clip) would start to queue on the GIL.

Errors are `RowError`s: `video_missing`, `video_unreadable` (not a video FFmpeg/decord can open),
`video_too_short` (the asked range [start, stop) runs past the video's last frame) and `video_truncated` (fewer
frames than the container's index promises, the stream fails to decode midway, or a sampled frame never comes out
of the decoder).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
from collections.abc import Hashable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from yume_core.config import ConfigError
from yume_core.errors import RowError
from yume_core.media import open_input, probe_video

__all__ = ["FrameConfig", "PreparedFrames", "check_decoder", "frame_indices", "iter_prepared", "prepare_frames"]

DECODERS = ("pyav", "decord", "nvdec")
SEEKS = ("keyframe", "exact")
POOLS = ("threads", "processes")
RESIZES = ("area", "bicubic", "bilinear")


@dataclass(frozen=True)
class FrameConfig:
    """How frames are sampled, sized, encoded and prepared in parallel.

    `workers=0` uses every CPU this process may run on; `max_inflight=0` means 2 x workers: each worker has one clip
    queued behind the one it decodes, so no worker waits on the consumer, and memory stays bounded (one clip's
    JPEGs, ~0.3 MB at 8 x 448 px, per item in flight).
    """

    num_frames: int = 8
    size: int = 448  # output frames are size x size: one InternVL tile each (see the module docstring)
    jpeg_quality: int = 90
    decoder: str = "pyav"  # pyav | decord | nvdec (the pyav reader decoding on the GPU; see the module docstring)
    seek: str = "keyframe"  # keyframe | exact (see the module docstring); decord always samples exactly
    fast_decode: bool = True  # skip deblocking where no decoded frame depends on it (see the module docstring)
    resize: str = "area"  # area | bicubic | bilinear: swscale's filter for the downscale to `size`
    workers: int = 0
    max_inflight: int = 0
    pool: str = "threads"  # threads | processes

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}")
        if not 16 <= self.size <= 4096:
            raise ValueError(f"size must be between 16 and 4096 pixels, got {self.size}")
        if not 1 <= self.jpeg_quality <= 95:  # Pillow: above 95 only grows the file
            raise ValueError(f"jpeg_quality must be between 1 and 95, got {self.jpeg_quality}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.seek not in SEEKS:
            raise ValueError(f"seek must be one of {SEEKS}, got {self.seek!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        if self.workers < 0 or self.max_inflight < 0:
            raise ValueError(f"workers and max_inflight must be >= 0, got {self.workers} and {self.max_inflight}")

    @property
    def resolved_workers(self) -> int:
        if self.workers:
            return self.workers
        try:
            return len(os.sched_getaffinity(0))  # respects CPU affinity and cgroup cpusets, unlike os.cpu_count()
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1

    @property
    def resolved_inflight(self) -> int:
        return self.max_inflight or 2 * self.resolved_workers


@dataclass
class PreparedFrames:
    """The frames of one clip or segment, ready for a request: JPEG bytes in time order, the source frame index of
    each (0-based, presentation order, in the video's own numbering), and the size of every JPEG. `indices` are the
    frames actually decoded: with `seek="keyframe"` they are keyframes near the uniform targets, not the targets
    themselves, so record these (not `frame_indices`) as the frames a caption saw."""

    jpegs: list[bytes]
    indices: np.ndarray
    width: int
    height: int


def frame_indices(n_frames: int, num: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """`num` frame indices spread uniformly over [start, stop) (stop defaults to `n_frames`), int64, ascending.

    Index k is the centre of the k-th of `num` equal bins: start + floor((2k + 1) * L / (2 num)) with L = stop -
    start, in integer arithmetic (InternVL's `get_index` does the same in floats). A range of at most `num` frames
    gives every frame once, so fewer than `num` indices: repeating a frame would spend 256 tokens on nothing and
    suggest to the model that time stands still. Raises ValueError for an empty or out-of-bounds range.
    """
    stop = n_frames if stop is None else stop
    if num < 1:
        raise ValueError(f"num must be at least 1, got {num}")
    if not 0 <= start < stop <= n_frames:
        raise ValueError(f"frame range [{start}, {stop}) is empty or outside the video's {n_frames} frames")
    length = stop - start
    if length <= num:
        return np.arange(start, stop, dtype=np.int64)
    return start + (2 * np.arange(num, dtype=np.int64) + 1) * length // (2 * num)


def prepare_frames(
    video_path: str | Path, config: FrameConfig = FrameConfig(), start: int = 0, stop: int | None = None
) -> PreparedFrames:
    """Sample `config.num_frames` frames of [start, stop) of a video (stop None = its end), decode only those, resize
    them to `size` x `size` and JPEG-encode them. Raises `RowError` (see the module docstring) for bad files and
    ranges past the end, ValueError for a negative or empty range (a caller's bug, not the file's)."""
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"bad frame range [{start}, {stop})")
    check_decoder(config)
    read = _read_decord if config.decoder == "decord" else _read_pyav
    indices, frames = read(str(video_path), config, start, stop)
    return PreparedFrames(
        jpegs=[_jpeg(f, config.jpeg_quality) for f in frames], indices=indices, width=config.size, height=config.size
    )


def _sample(path: str, n_frames: int, config: FrameConfig, start: int, stop: int | None) -> np.ndarray:
    end = n_frames if stop is None else stop
    if start >= n_frames or end > n_frames:
        raise RowError(
            "video_too_short",
            f"{path}: asked for frames [{start}, {end}) but the video has {n_frames}; check the clip's frame range "
            "or re-download the video.",
        )
    return frame_indices(n_frames, config.num_frames, start, end)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# NVDEC: the pyav reader with the decoding on the GPU


def check_decoder(config: FrameConfig) -> None:
    """Raise `ConfigError` (one line: the setting, what is wrong, the fix) when `config.decoder` cannot run in this
    process: `nvdec` without a working NVDEC. `prepare_frames` and `iter_prepared` call it before any clip."""
    if config.decoder == "nvdec" and (problem := nvdec_problem()):
        raise ConfigError(
            f"frames.decoder is 'nvdec' but {problem}; run on a node with an NVIDIA GPU whose driver exposes video "
            "decoding (libnvcuvid; in a container NVIDIA_DRIVER_CAPABILITIES must include 'video'), or set "
            "frames: {decoder: pyav} to decode on the CPU"
        )


_NVDEC_LOCK = threading.Lock()
_nvdec: tuple[object, str | None] | None = None  # (the device held for the process, or None; the problem, or None)


def nvdec_problem() -> str | None:
    """Why NVDEC cannot decode in this process (a short clause), or None when it can. Probed once per process: a
    one-frame H.264 stream made in memory is decoded on the device with software fallback off."""
    global _nvdec
    with _NVDEC_LOCK:
        if _nvdec is None:
            _nvdec = _probe_nvdec()
        return _nvdec[1]


def _nvdec_hwaccel():
    from av.codec.hwaccel import HWAccel

    # primary_ctx: share CUDA's primary context (held by `_probe_nvdec` for the process) instead of creating a new
    # context in every open, FFmpeg's default
    return HWAccel(device_type="cuda", allow_software_fallback=False, options={"primary_ctx": "1"})


def _probe_nvdec() -> tuple[object, str | None]:
    try:
        from av.codec.hwaccel import hwdevices_available
    except ImportError:
        return None, f"PyAV {av.__version__} has no hardware decoding API (it needs av >= 14)"
    if "cuda" not in hwdevices_available():
        return None, f"this PyAV's FFmpeg was built without CUDA (hardware devices: {hwdevices_available() or 'none'})"
    try:
        held = _nvdec_hwaccel().create(av.codec.Codec("h264", "r"))  # keeps the primary context alive
    except (av.FFmpegError, OSError, NotImplementedError, RuntimeError) as e:
        import ctypes.util

        driver = "" if ctypes.util.find_library("cuda") else "no NVIDIA driver library (libcuda) was found, so "
        return None, f"{driver}no CUDA device could be opened for decoding ({e})"
    try:
        with av.open(io.BytesIO(_probe_stream()), hwaccel=_nvdec_hwaccel()) as container:
            on_device = container.streams.video[0].codec_context.is_hwaccel
            frames = list(container.decode(video=0))
    except (av.FFmpegError, OSError, RuntimeError, ValueError) as e:
        return None, f"NVDEC failed to decode a test frame ({e})"
    if not on_device or not frames:
        return None, "NVDEC did not decode a test frame"
    return held, None


def _probe_stream() -> bytes:
    """One 256x144 H.264 frame in an mp4, made with PyAV's bundled encoder."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 256, 144, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((144, 256, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def _open(path: str, config: FrameConfig):
    """(container, its first video stream) as `open_input` gives them, with NVDEC attached for `decoder="nvdec"`.
    A file that is itself the problem gets `open_input`'s RowError; a stream NVDEC cannot decode fails the row."""
    if config.decoder != "nvdec":
        return open_input(path)
    unsupported = RowError(
        "video_nvdec_unsupported",
        f"{path}: NVDEC has no decoder for its video stream; caption it with frames: {{decoder: pyav}}.",
    )
    try:
        container = av.open(path, hwaccel=_nvdec_hwaccel())
    except av.FFmpegError as e:
        plain, _ = open_input(path)  # raises the project's RowError when the file is bad
        plain.close()
        raise RuntimeError(f"{path}: NVDEC failed to open a file the CPU decoder opens ({e})") from None
    except RuntimeError:  # PyAV: hardware decoding asked for, and no stream of the file has it
        plain, _ = open_input(path)  # a file without a video stream fails as it would on the CPU
        plain.close()
        raise unsupported from None
    stream = container.streams.video[0] if container.streams.video else None
    if stream is None or not stream.codec_context.is_hwaccel:
        container.close()
        raise unsupported
    return container, stream


# ----------------------------------------------------------------------------------------------------------------
# PyAV: sparse decoding


def _truncated(path: str, what: str) -> RowError:
    return RowError(
        "video_truncated", f"{path}: {what}; the file is damaged or cut short. Re-download or re-encode it."
    )


def _read_pyav(path: str, config: FrameConfig, start: int, stop: int | None) -> tuple[np.ndarray, list[np.ndarray]]:
    # one open for the index and the decoding: opening an H.264 mp4 costs ~8 ms (FFmpeg decodes a frame to find
    # the stream's parameters), as much as decoding one 720p keyframe
    container, stream = _open(path, config)  # video_missing / video_unreadable with the project's messages
    with container:
        pts, keyframe = _index(path, container, stream)
        indices = _sample(path, len(keyframe), config, start, stop)
        if pts is None:
            return indices, _decode_linear(path, indices, config)
        end = len(keyframe) if stop is None else stop
        indices, target_pos = _pick(pts, keyframe, indices, config.seek, start, end)
        try:
            return indices, _decode_sparse(path, container, pts, keyframe, target_pos, config, seek=True)
        except (_Misplaced, av.FFmpegError, RowError):
            pass  # a seek went wrong, or the file is damaged: a fresh open reads it through, or says why not
    container, _ = _open(path, config)
    with container:
        try:
            return indices, _decode_sparse(path, container, pts, keyframe, target_pos, config, seek=False)
        except _Misplaced as e:
            raise _truncated(path, f"its packets do not match its index ({e})") from None


def _scan(path: str) -> tuple[np.ndarray | None, np.ndarray]:
    """The packet index of a file in decode order (see `_index`)."""
    container, stream = open_input(path)
    with container:
        return _index(path, container, stream)


def _index(path: str, container, stream) -> tuple[np.ndarray | None, np.ndarray]:
    """(timestamps in decode order, or None when some packet has none or two share one; keyframe flags)."""
    try:
        promised = int(stream.frames or 0)
        scan = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size > 0]
    except av.FFmpegError as e:
        raise _truncated(path, f"demuxing failed ({e})") from None
    if len(scan) < promised:  # the file ends before its index does: sampling the rest would misplace the frames
        raise _truncated(path, f"{len(scan)} frames where its index promises {promised}")
    keyframe = np.array([k for _, k in scan], dtype=bool)
    if any(p is None for p, _ in scan):
        return None, keyframe
    pts = np.array([p for p, _ in scan], dtype=np.int64)
    if len(np.unique(pts)) < len(pts):  # timestamps that do not name one frame each: count frames instead
        return None, keyframe
    return pts, keyframe


def _pick(
    pts: np.ndarray, keyframe: np.ndarray, targets: np.ndarray, seek: str, start: int, end: int
) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices to decode, their decode-order packet positions) for the uniform `targets` of [start, end).

    `exact`: the targets. `keyframe`: in each target's bin (the frames i of [start, end) with (i - start) * num //
    (end - start) equal to the target's k), the keyframe nearest to the target (the earlier one on a tie) among
    those inside the range; failing one, the range's first or last frame if it is a keyframe in that bin; failing
    that, the target itself. Ranges of fewer than 2 * num frames are sampled exactly.
    Keyframes are ranked by presentation order (timestamp), so an open-GOP keyframe (HEVC CRA) counts where it is
    shown, after its leading pictures."""
    order = np.argsort(pts, kind="stable")  # order[i]: decode-order position of the i-th frame shown
    num, length = len(targets), end - start
    if seek == "exact" or length < 2 * num:
        # bins under 2 frames: little to choose from, and a floored target can lie outside its own bin (the target
        # of bin 5 of [0, 10) in 8 bins is frame 6, which lies in bin 4 by the rule above)
        return targets, order[targets]
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    keys = np.sort(rank[keyframe])  # presentation indices of the keyframes
    keys = keys[(keys >= start) & (keys < end)]
    # the range's first and last frames only where a bin holds no other keyframe (see the module docstring)
    edge = (keys == start) | (keys == end - 1)
    inner, edges = keys[~edge], keys[edge]
    k = np.arange(num, dtype=np.int64)
    lo = start + (k * length + num - 1) // num  # bin k is [lo, hi): ceil(k L / num) <= i - start < ceil((k+1) L / num)
    hi = start + ((k + 1) * length + num - 1) // num
    picked = targets.copy()
    for b in range(num):
        for candidates in (inner, edges):
            inside = candidates[(candidates >= lo[b]) & (candidates < hi[b])]
            if inside.size:
                picked[b] = inside[np.argmin(np.abs(inside - targets[b]))]  # argmin: the first (earlier) on a tie
                break
    return picked, order[picked]


def _needed_packets(pts: np.ndarray, keyframe: np.ndarray, target_pos: np.ndarray) -> np.ndarray:
    """Packets to send to the decoder: for each target, from the last keyframe at or before it in decode order whose
    own timestamp is not later than the target's (an open-GOP keyframe cannot reconstruct the leading frames shown
    before it), up to the target's packet. Packets in between that are not needed are never sent."""
    need = np.zeros(len(pts), dtype=bool)
    key_pos = np.flatnonzero(keyframe)
    for j in target_pos:
        usable = key_pos[(key_pos <= j) & (pts[key_pos] <= pts[j])]
        need[(usable[-1] if usable.size else 0) : j + 1] = True
    return need


class _Misplaced(Exception):
    """The second pass over the packets does not see the packets of the index (a rewind that went wrong)."""


def _decode_sparse(
    path: str, container, pts: np.ndarray, keyframe: np.ndarray, target_pos: np.ndarray, config: FrameConfig,
    seek: bool,
):
    """Decode the frames at decode-order positions `target_pos` from `container`.

    The needed packets form runs, each starting on a keyframe. With `seek`, the demuxer jumps to each run's
    keyframe (an index lookup in mp4: for 8 keyframes of a 60 s clip ~0.1 ms where reading the packets in between
    costs 3.5-5 ms); without, it reads from the first packet on. Either way every packet is checked against the
    index, and `_Misplaced` is raised when a seek lands after a run's keyframe or packets go missing."""
    need = _needed_packets(pts, keyframe, target_pos)
    bounds = np.flatnonzero(np.diff(np.concatenate([[0], need.astype(np.int8), [0]])))
    runs = list(zip(bounds[::2].tolist(), (bounds[1::2] - 1).tolist()))  # [first, last] positions of each run
    position = {int(t): i for i, t in enumerate(pts.tolist())}
    want = set(pts[target_pos].tolist())
    got: dict[int, np.ndarray] = {}
    reformatter = VideoReformatter()

    def keep(frames) -> None:
        for frame in frames:
            if frame.pts in want and frame.pts not in got:
                got[frame.pts] = _rgb(reformatter, frame, config)

    stream = container.streams.video[0]
    ctx = stream.codec_context
    ctx.thread_count = 1
    keyframes_alone = int(need.sum()) == len(want) and bool(keyframe[target_pos].all())
    _decoder_options(ctx, config, keyframes_alone)
    packets, pos = None, -1
    try:
        for first, last in runs:
            if seek:  # to the keyframe at or before the run's start: the run's own (an earlier one is skipped)
                container.seek(int(pts[first]), stream=stream, backward=True, any_frame=False)
            if seek or packets is None:
                packets = (p for p in container.demux(stream) if p.size > 0)
            expected = first
            for packet in packets:
                pos = position.get(packet.pts, -1)
                if expected == first and 0 <= pos < first:
                    continue  # before the run: packets the decoder does not need
                if pos != expected:
                    raise _Misplaced(f"packet {expected} expected, got pts {packet.pts} (index position {pos})")
                ctx.skip_frame = "DEFAULT" if packet.pts in want else "NONREF"
                keep(ctx.decode(packet))
                if pos == last:
                    break
                expected += 1
            else:
                raise _Misplaced(f"the packets ended before packet {expected}")
            keep(ctx.decode(None))  # drain the frames held for reordering, then reset for the next run
            ctx.flush_buffers()
    except av.FFmpegError as e:
        raise _truncated(path, f"decoding failed near packet {pos} ({e})") from None
    if len(got) < len(want):
        raise _truncated(path, f"{len(want) - len(got)} of {len(want)} sampled frames did not decode")
    return [got[p] for p in pts[target_pos].tolist()]


def _decode_linear(path: str, indices: np.ndarray, config: FrameConfig) -> list[np.ndarray]:
    """For streams without timestamps: decode every frame in output order and keep the sampled ones."""
    want = set(indices.tolist())
    got: dict[int, np.ndarray] = {}
    reformatter = VideoReformatter()
    container, stream = _open(path, config)
    with container:
        stream.codec_context.thread_count = 1
        _decoder_options(stream.codec_context, config, keyframes_alone=False)
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i in want:
                    got[i] = _rgb(reformatter, frame, config)
                if i >= indices[-1]:
                    break
        except av.FFmpegError as e:
            raise _truncated(path, f"decoding failed after {len(got)} sampled frames ({e})") from None
    if len(got) < len(want):
        raise _truncated(path, f"{len(want) - len(got)} of {len(want)} sampled frames did not decode")
    return [got[i] for i in indices.tolist()]


def _decoder_options(ctx, config: FrameConfig, keyframes_alone: bool) -> None:
    """With `fast_decode`, skip the in-loop deblocking filter on every frame when each sampled frame is a keyframe
    decoded alone (no later frame is predicted from it, so nothing drifts), else only on non-reference frames (the
    same guarantee: nothing is predicted from them). Set before the decoder opens (the first `decode`)."""
    if config.fast_decode:
        ctx.options = {"skip_loop_filter": "all" if keyframes_alone else "noref"}


def _rgb(reformatter: VideoReformatter, frame: av.VideoFrame, config: FrameConfig) -> np.ndarray:
    # threads=1: one core per worker (reformat's default, 0, would start a thread per CPU in every worker)
    out = reformatter.reformat(
        frame, width=config.size, height=config.size, format="rgb24", interpolation=config.resize.upper(), threads=1
    )
    return out.to_ndarray()


# ----------------------------------------------------------------------------------------------------------------
# decord


def _read_decord(path: str, config: FrameConfig, start: int, stop: int | None) -> tuple[np.ndarray, list[np.ndarray]]:
    try:
        import decord
    except ImportError:
        raise RuntimeError("decoder='decord' needs the decord package (pip install decord); or use decoder='pyav'")
    probe_video(path, count_frames=False)  # video_missing / video_unreadable with the project's messages
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), width=config.size, height=config.size, num_threads=1)
    except decord.DECORDError as e:
        raise RowError(
            "video_unreadable", f"{path}: decord cannot open it ({e}); re-download or re-encode it."
        ) from None
    indices = _sample(path, len(reader), config, start, stop)
    try:
        batch = reader.get_batch(indices.tolist()).asnumpy()
    except decord.DECORDError as e:
        raise _truncated(path, f"decord failed to decode the sampled frames ({e})") from None
    return indices, list(batch)


# ----------------------------------------------------------------------------------------------------------------
# the bounded pool


def _prepare_or_error(video_path, config: FrameConfig, start: int, stop: int | None) -> PreparedFrames | RowError:
    try:
        return prepare_frames(video_path, config, start, stop)
    except RowError as e:
        return e


def iter_prepared(
    items: Iterable[tuple[Hashable, str | Path, int, int | None]], config: FrameConfig = FrameConfig()
) -> Iterator[tuple[Hashable, PreparedFrames | RowError]]:
    """Prepare frames for `(key, video_path, start, stop)` items in a pool; yield `(key, PreparedFrames)`, or
    `(key, RowError)` for a bad video, in **completion order** (match results by key).

    Completion order rather than input order: one slow item (a 60 s clip among 10 s ones) would otherwise hold
    back every result behind it while the workers run dry; here a finished item is handed on at once and replaced.
    At most `config.resolved_inflight` items are taken from `items` and not yet yielded, so memory stays bounded
    however long `items` is, and a consumer that stops pulling (a busy GPU) stops the decoding too. `items` is read
    lazily in this thread. Other exceptions are bugs: they propagate, and pending work is cancelled. Closing the
    generator early cancels what has not started and waits for what is running. A decoder that cannot run here
    (`check_decoder`: `nvdec` without a GPU) raises `ConfigError` at the call, before any item is read.
    """
    check_decoder(config)
    return _iter_prepared(items, config)


def _iter_prepared(
    items: Iterable[tuple[Hashable, str | Path, int, int | None]], config: FrameConfig
) -> Iterator[tuple[Hashable, PreparedFrames | RowError]]:
    limit = config.resolved_inflight
    executor = _executor(config)
    pending: dict[Future, Hashable] = {}
    source = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                    break
                key, video_path, start, stop = item
                pending[executor.submit(_prepare_or_error, video_path, config, start, stop)] = key
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            future = next(iter(done))  # one at a time: the freed slot is refilled before the next yield
            key = pending.pop(future)
            yield key, future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


_END = object()


def _executor(config: FrameConfig) -> Executor:
    if config.pool == "threads":
        return ThreadPoolExecutor(config.resolved_workers, thread_name_prefix="frames")
    # spawn: forking a process that already runs threads (a task runner, the HTTP client) can deadlock the child
    return ProcessPoolExecutor(config.resolved_workers, mp_context=multiprocessing.get_context("spawn"))
