"""`gpu_check` section `nvdec`: Frame preparation for captioning on the CPU against NVDEC, over generated 720p clips."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpu_sections.common import Part, cpu_cores, seconds_left

REPLICA_RPS = 3.0  # requests/s of one 4xH100 InternVL3-78B replica, as assumed in BENCHMARKS.md (frame preparation)


BITRATES_KBPS = {"libx264": 3000, "libx265": 2000}  # as benchmarks/bench_frames.py: web-like rates


def render_walk(work: Path, size: tuple[int, int], fps: int = 30) -> list:
    """2 s of a walk through the generated town (`yume_core.sample_data`, as bench_frames.py's sources). The town
    renders ~8 frames/s at 720p on one core, too slow to render whole clips within a bounded run."""
    from yume_core.media import iter_frames
    from yume_core.sample_data import make_sekai_sample

    sample = make_sekai_sample(work / "render", n_clips=1, n_frames=2 * fps, size=size, seed=7)
    return list(iter_frames(sample.video_path(sample.clip_ids[0])))


def walk_loop(rendered: list) -> list:
    """The rendered walk forth and back (no cut: the encoder places keyframes as on one walk), each frame with its
    own light sensor grain (sigma 3, as bench_frames.py), so the encoder has to spend its bitrate."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [np.clip(f.astype(np.int16) + rng.normal(0, 3, f.shape[:2] + (1,)).astype(np.int16), 0, 255)
            .astype(np.uint8) for f in rendered + rendered[-2:0:-1]]


def encode_walk(path: Path, codec: str, loop: list, seconds: float, keyint: int, fps: int = 30) -> None:
    from yume_core.media import write_video

    params = f"bitrate={BITRATES_KBPS[codec]}:keyint={keyint}"  # ABR, keyint only: as bench_frames.py
    frames = (loop[t % len(loop)] for t in range(int(seconds * fps)))
    write_video(path, frames, fps, codec=codec, preset="medium", options={f"{codec[3:]}-params": params})


def _keyframes(path: Path) -> list[int]:
    import bench_frames

    return bench_frames.keyframe_positions(path)


def _rate(path: Path, clips: int, config) -> dict:
    """clips/s and CPU ms per clip of `iter_prepared` over `clips` items of one file (best of 2)."""
    from captioning.frames import iter_prepared

    best = (float("inf"), float("inf"))
    for _ in range(2):
        w0, c0 = time.perf_counter(), time.process_time()
        done = sum(1 for _, r in iter_prepared(((i, path, 0, None) for i in range(clips)), config)
                   if not isinstance(r, Exception))
        if done != clips:
            raise RuntimeError(f"{clips - done} of {clips} clips failed with {config}")
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    wall, cpu = best
    return {"workers": config.resolved_workers, "clips": clips, "clips_per_s": round(clips / wall, 2),
            "clips_per_s_per_worker": round(clips / wall / config.resolved_workers, 2),
            "cpu_ms_per_clip": round(1000 * cpu / clips, 1),
            "replica_equivalents": round(clips / wall / REPLICA_RPS, 2)}


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _open_cost(path: Path, config, repeats: int) -> dict:
    """Fixed cost of a clip (open, index, one frame) and the cost of each further frame, from 1- and 8-frame runs."""
    import dataclasses

    from captioning.frames import prepare_frames

    one = dataclasses.replace(config, num_frames=1)
    eight = dataclasses.replace(config, num_frames=8)
    prepare_frames(path, one), prepare_frames(path, eight)  # warm
    t1 = _median_s(lambda: prepare_frames(path, one), repeats)
    t8 = _median_s(lambda: prepare_frames(path, eight), repeats)
    per_frame = max(t8 - t1, 0.0) / 7
    return {"one_frame_ms": round(1000 * t1, 2), "eight_frames_ms": round(1000 * t8, 2),
            "per_frame_ms": round(1000 * per_frame, 2), "per_open_ms": round(1000 * (t1 - per_frame), 2)}


def _context_cost(path: Path, repeats: int) -> dict:
    """An open plus the first decoded frame on NVDEC: with the shared primary context (the reader's) and with a
    context created per open (FFmpeg's default)."""
    import av
    from av.codec.hwaccel import HWAccel

    def first_frame(options):
        with av.open(str(path), hwaccel=HWAccel("cuda", allow_software_fallback=False, options=options)) as c:
            next(iter(c.decode(video=0)))

    out = {}
    for name, options in (("primary_context_ms", {"primary_ctx": "1"}), ("own_context_ms", {})):
        first_frame(options)
        out[name] = round(1000 * _median_s(lambda: first_frame(options), repeats), 2)
    return out


def _agreement(path: Path) -> dict:
    """NVDEC's frames against the CPU's exact ones (full decode, deblocking on): same indices, mean |diff|."""
    import io

    import numpy as np
    from PIL import Image

    from captioning.frames import FrameConfig, prepare_frames

    cpu = prepare_frames(path, FrameConfig(fast_decode=False, jpeg_quality=95))
    gpu = prepare_frames(path, FrameConfig(decoder="nvdec", jpeg_quality=95))

    def px(jpeg: bytes):
        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float64)

    diffs = [float(np.abs(px(a) - px(b)).mean()) for a, b in zip(cpu.jpegs, gpu.jpegs)]
    return {"same_indices": cpu.indices.tolist() == gpu.indices.tolist(), "mean_abs_diff_max": round(max(diffs), 3)}


def section_nvdec(part: Part, until: float, dry: bool) -> None:
    import ctypes.util

    import av

    from captioning import frames as fr
    from yume_core.config import ConfigError
    from yume_core.media import probe_video

    try:
        from av.codec.hwaccel import hwdevices_available

        devices = hwdevices_available()
    except ImportError:
        devices = None
    part["pyav"] = av.__version__
    part["ffmpeg_hw_devices"] = devices
    part["driver_libraries"] = {"libcuda": ctypes.util.find_library("cuda"),
                                "libnvcuvid": ctypes.util.find_library("nvcuvid")}
    part["NVIDIA_DRIVER_CAPABILITIES"] = os.environ.get("NVIDIA_DRIVER_CAPABILITIES")
    try:
        fr.check_decoder(fr.FrameConfig(decoder="nvdec"))
        part["nvdec"] = {"available": True}
    except ConfigError as e:
        part["nvdec"] = {"available": False, "error": str(e)}
    part.save()
    print(f"NVDEC: {'available' if part['nvdec']['available'] else part['nvdec']['error']}", flush=True)

    cores = cpu_cores()
    # 10 s with a keyframe every second: each of the 8 bins (1.25 s) holds a keyframe, so every sampled frame is a
    # keyframe decoded alone, as on 60 s clips with 2 s GOPs (BENCHMARKS.md); a 60 s clip's longer packet index
    # costs ~4 ms more per open on the CPU
    seconds, size, keyint = (2, (128, 72), 30) if dry else (10, (1280, 720), 30)
    clips_one, clips_all, repeats = (2, 4, 2) if dry else (12, 4 * cores, 5)
    part["setup"] = {"cores": cores, "clip_seconds": seconds, "size": list(size), "keyint": keyint,
                     "frames_per_clip": 8, "jpeg_size": 448, "seek": "keyframe", "replica_rps": REPLICA_RPS,
                     "source": "generated town walk with grain, H.264 3 Mbit/s and HEVC 2 Mbit/s, preset medium"}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_clips_"))
    part["sources"] = {}
    try:
        t0 = time.perf_counter()
        loop = walk_loop(render_walk(work, size))
        # HEVC first: Sekai's clips are HEVC
        paths = {codec: work / f"walk_{codec[3:]}.mp4" for codec in ("libx265", "libx264")}
        with ThreadPoolExecutor(2) as pool:  # the encoders release the GIL
            list(pool.map(lambda c, frames=loop: encode_walk(paths[c], c, frames, seconds, keyint), paths))
        del loop
        part["setup"]["sources_made_s"] = round(time.perf_counter() - t0, 1)
        for codec, path in paths.items():
            if seconds_left(until) < (2 if dry else 15):
                part["sources"][codec] = {"skipped": "time budget"}
                continue
            info = probe_video(path)
            keys = _keyframes(path)
            row: dict = {"frames": info.frames, "mbit_s": round(info.bytes * 8 / info.duration_s / 1e6, 2),
                         "keyframes": len(keys),
                         "sampled_keyframes": sum(i in set(keys) for i in fr.prepare_frames(path).indices.tolist())}
            part["sources"][codec] = row
            row["cpu_1"] = _rate(path, clips_one, fr.FrameConfig(workers=1))
            row["cpu_all"] = _rate(path, clips_all, fr.FrameConfig(workers=cores))
            row["cpu_open"] = _open_cost(path, fr.FrameConfig(workers=1), repeats)
            part.save()
            print(f"{codec} CPU: {row['cpu_1']['clips_per_s']} clips/s on 1 core, {row['cpu_all']['clips_per_s']} "
                  f"on {cores}", flush=True)
            if not part["nvdec"]["available"]:
                continue
            row["nvdec"] = {}
            try:
                for workers in sorted({1, 4, min(8, cores), cores}):
                    if seconds_left(until) < 10:
                        row["nvdec"][str(workers)] = {"skipped": "time budget"}
                        continue
                    n = clips_one if workers == 1 else max(clips_all, 4 * workers)
                    row["nvdec"][str(workers)] = _rate(path, n, fr.FrameConfig(decoder="nvdec", workers=workers))
                    part.save()
                row["nvdec_open"] = _open_cost(path, fr.FrameConfig(decoder="nvdec", workers=1), repeats)
                row["nvdec_context"] = _context_cost(path, repeats)
                row["nvdec_vs_cpu_frames"] = _agreement(path)
            except Exception as e:  # noqa: BLE001 - recorded; the other codec is still measured
                row["nvdec_error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                print(f"{codec} NVDEC failed: {row['nvdec_error']}", flush=True)
            part.save()
            rates = [r for r in row["nvdec"].values() if "clips_per_s" in r]
            if rates:
                best = max(rates, key=lambda r: r["clips_per_s"])
                print(f"{codec} NVDEC: best {best['clips_per_s']} clips/s with {best['workers']} workers "
                      f"({best['cpu_ms_per_clip']} ms CPU per clip)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [f"{c}: {r['nvdec_error']}" for c, r in part["sources"].items() if "nvdec_error" in r]
    if not dry and not part["nvdec"]["available"]:
        part["error"] = "NVDEC unavailable (CPU figures recorded): " + part["nvdec"]["error"]
    elif failed:
        part["error"] = "NVDEC failed: " + "; ".join(failed)
