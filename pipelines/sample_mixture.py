"""A small mixture written the way `yume-data build` writes one, without running the build: for the trainer's tests
and benchmarks, which need the three sets and a mixture file in seconds rather than a build's minute.

real_world: generated Sekai clips with their action labels, every other one with an event caption (so the others
train T2V only); synthetic: moving-texture videos (T2V, no labels); event: the same kind of videos with their first
frames as start images (T2V+I2V, no labels). All through the project's own shard writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

DEFAULT_WEIGHTS = {"real_world": 0.5, "synthetic": 0.25, "event": 0.25}


def texture_clip(path: Path, seed: int, frames: int, size: tuple[int, int], fps: float = 8) -> np.ndarray:
    """A random texture scrolling sideways (so consecutive frames differ), as an mp4; returns its first frame."""
    from yume_core.media import write_video

    width, height = size
    base = np.random.default_rng(seed).integers(0, 255, (height, width, 3)).astype(np.uint8)
    shots = [np.roll(base, 2 * i, axis=1) for i in range(frames)]
    write_video(path, shots, fps, options={"x264-params": "bframes=0"})
    return shots[0]


def make_sample_mixture(root: str | Path, clips: int = 8, clip_frames: int = 150,
                        clip_size: tuple[int, int] = (256, 144), videos: int = 4, video_frames: int = 33,
                        video_size: tuple[int, int] = (32, 32), weights: dict | None = None,
                        shard_max_count: int = 4) -> Path:
    """The three sets under `root/out` and `root/out/mixture.yaml` over them; returns the mixture's path."""
    from PIL import Image

    import quantize_actions
    import shards
    from yume_core.config import to_dict
    from yume_core.mixture import MixtureSource, write_mixture
    from yume_core.sample_data import make_sekai_sample
    from yume_core.samples import DEFAULT_TASKS
    from yume_core.sekai import check_frame_counts, probe_clips, read_sekai_csv

    root = Path(root)
    out, media = root / "out", root / "media"
    media.mkdir(parents=True, exist_ok=True)
    config = shards.ShardConfig(max_count=shard_max_count)
    quantize = quantize_actions.QuantizeConfig()

    sample = make_sekai_sample(root / "sekai", n_clips=clips, n_frames=clip_frames, size=clip_size)
    table = read_sekai_csv(sample.csv_path, sample.videos_dir, sample.cameras_dir)
    table = check_frame_counts(quantize_actions.quantize_table(probe_clips(table), quantize))
    events = [f"A street musician starts to play, scene {i}." if i % 2 == 0 else None for i in range(table.num_rows)]
    table = table.append_column("caption_event", pa.array(events, pa.string()))
    shards.write_set_shards(table, out / "real_world", "real_world", config, {"actions": to_dict(quantize)})

    rows = []
    for i in range(videos):
        texture_clip(media / f"s{i}.mp4", i, video_frames, video_size)
        rows.append({"prompt_id": f"syn{i}", "caption": f"A drone flies low over a river valley, take {i}.",
                     "video_path": f"s{i}.mp4", "status": "ok", "reason": None, "error": None})
    shards.write_set_shards(pa.Table.from_pylist(rows), out / "synthetic", "synthetic", config, base_dir=media)

    rows = []
    for i in range(videos):
        first = texture_clip(media / f"e{i}.mp4", 100 + i, video_frames, video_size)
        Image.fromarray(first).save(media / f"e{i}.png")
        rows.append({"prompt_id": f"ev{i}", "caption": f"Snow starts falling over the tram stop, take {i}.",
                     "video_path": f"e{i}.mp4", "image_path": f"e{i}.png", "category": "weather", "status": "ok",
                     "reason": None, "error": None})
    shards.write_set_shards(pa.Table.from_pylist(rows), out / "event", "event", config, base_dir=media)

    weights = weights or DEFAULT_WEIGHTS
    return write_mixture(out / "mixture.yaml", [MixtureSource(name, out / name, weights[name], DEFAULT_TASKS[name])
                                                for name in ("real_world", "synthetic", "event")])
