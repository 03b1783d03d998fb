"""How many GPU-hours and how much wall-clock a synthesis run needs, from a per-video time given or measured here.

The model: every GPU holds one pipeline (loaded once, `load_seconds`) and makes videos one after another, each
taking `seconds_per_video` (denoising with CFG + VAE decode + encoding). With N videos on G GPUs:

- busy GPU-hours = N x seconds_per_video / 3600 (+ one load per GPU): the compute itself;
- wall-clock = load + ceil(N / G) x seconds_per_video: the slowest GPU's share;
- reserved GPU-hours = G x wall-clock: what a reservation of G GPUs for the run costs.

`calibrate` measures the per-video time on this machine with the given model and preset: it loads the pipeline once
(timed on its own), then times whole videos. The first video pays one-off costs (kernel selection, allocator
warm-up), so with two or more videos the figure is the median of the later ones.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from synthesis.generate import SynthConfig, WanWorker, video_seed
from synthesis.models import I2V
from yume_core.media import write_video

CALIBRATION_PROMPTS = (
    ("A first-person walk down a busy night market street, lanterns swaying above food stalls while people pass by "
     "and steam rises from grills."),
    "A quiet mountain village at dawn, mist drifting between wooden houses as a dog trots across a stone path.",
)


@dataclass(frozen=True)
class SynthPlan:
    count: int
    gpus: int
    seconds_per_video: float
    load_seconds: float
    gpu_hours: float  # busy: the videos' compute plus one load per GPU
    wall_hours: float
    reserved_gpu_hours: float
    videos_per_gpu_hour: float
    basis: str

    def as_dict(self) -> dict:
        return asdict(self)


def plan_synthesis(count: int, gpus: int, seconds_per_video: float, load_seconds: float = 0.0,
                   basis: str = "given") -> SynthPlan:
    if count < 0 or gpus < 1 or seconds_per_video <= 0 or load_seconds < 0:
        raise ValueError("count must be >= 0, gpus >= 1, seconds_per_video > 0 and load_seconds >= 0")
    busy = (count * seconds_per_video + min(gpus, count) * load_seconds) / 3600
    wall = (load_seconds + math.ceil(count / gpus) * seconds_per_video) / 3600 if count else 0.0
    return SynthPlan(count, gpus, round(seconds_per_video, 3), round(load_seconds, 3), round(busy, 2),
                     round(wall, 2), round(wall * gpus, 2), round(3600 / seconds_per_video, 2), basis)


def format_plan(plan: SynthPlan) -> str:
    return "\n".join([
        (f"{plan.count:,} videos on {plan.gpus} GPU(s) at {plan.seconds_per_video:g} s/video "
         f"(+{plan.load_seconds:g} s model load per GPU; basis: {plan.basis})"),
        f"  GPU-hours (busy):     {plan.gpu_hours:,.2f}",
        f"  wall-clock:           {plan.wall_hours:,.2f} h ({plan.wall_hours / 24:,.2f} days)",
        f"  GPU-hours (reserved): {plan.reserved_gpu_hours:,.2f}",
        f"  videos per GPU-hour:  {plan.videos_per_gpu_hour:,.2f}",
    ])


def calibrate(config: SynthConfig, videos: int = 2) -> dict:
    """Load once, make `videos` videos (encoded to a temp dir), and return the timings (see module docstring)."""
    if videos < 1:
        raise ValueError("calibrate needs at least one video")
    worker = WanWorker(config)
    try:
        image = _calibration_image(config.width, config.height) if worker.kind == I2V else None
        times = []
        with tempfile.TemporaryDirectory(prefix="yume-synth-calibrate-") as tmp:
            for k in range(videos):
                prompt = CALIBRATION_PROMPTS[k % len(CALIBRATION_PROMPTS)]
                started = time.perf_counter()
                frames, _, _ = worker.generate(config, prompt, image, video_seed(f"calibrate-{k}", config.seed))
                write_video(Path(tmp) / f"{k}.mp4", frames, config.fps, crf=config.crf)
                times.append(time.perf_counter() - started)
    finally:
        worker.close()
    timed = times[1:] if len(times) > 1 else times
    return {
        "model": config.model, "preset": config.preset, "device": worker.device, "dtype": worker.dtype,
        "size": f"{config.width}x{config.height}", "frames": config.num_frames, "steps": config.steps,
        "cache": config.cache.kind, "load_seconds": round(worker.load_seconds, 3),
        "video_seconds": [round(t, 3) for t in times], "seconds_per_video": round(statistics.median(timed), 3),
    }


def _calibration_image(width: int, height: int):
    """A smooth synthetic scene (sky gradient over a darker ground) so I2V runs need no input file."""
    from PIL import Image

    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    sky = np.array([0.45, 0.65, 0.95], np.float32) * (1 - 0.5 * y) + 0.1 * x
    ground = np.array([0.35, 0.3, 0.25], np.float32) * (0.6 + 0.4 * x)
    rgb = np.where(y < 0.55, sky, ground)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
