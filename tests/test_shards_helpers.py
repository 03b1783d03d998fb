"""Small real inputs for the shard tests: tiny H.264 mp4s (PyAV), Sekai-style .npz poses, a clip manifest.

Imported by the other test_shards_* modules (pytest puts this folder on sys.path); it holds no tests itself.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest

from yume_core.manifest import CLIP_SCHEMA, conform

W, H, FPS = 64, 36, 30
KEYS = ["W", "W+A", "None", "S", "W+D", "D"]
MOUSE = ["·", "←", "→", "↑", "↓←", "↑→"]


def write_mp4(path: Path, frames: int, seed: int, fps: int = FPS, size=(W, H)) -> Path:
    """A real H.264 mp4 with `frames` frames (moving gradient + noise so every clip differs)."""
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fractions.Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "30", "preset": "ultrafast"}
        base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        for t in range(frames):
            img = np.roll(base, t, axis=1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def walking_poses(frames: int, seed: int) -> np.ndarray:
    """Camera-to-world poses walking forward along z with a slow yaw, float32 (T,4,4)."""
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4, dtype=np.float32), (frames, 1, 1))
    yaw = np.cumsum(rng.normal(0.002, 0.001, frames))
    poses[:, 0, 0] = np.cos(yaw)
    poses[:, 0, 2] = np.sin(yaw)
    poses[:, 2, 0] = -np.sin(yaw)
    poses[:, 2, 2] = np.cos(yaw)
    poses[:, 2, 3] = np.linspace(0, 0.1, frames)
    return poses


def _segments(n_frames: int, rng) -> list[dict]:
    """Two or three constant-label runs covering the clip, frames inclusive."""
    cuts = sorted(rng.choice(np.arange(5, n_frames - 5), size=2, replace=False).tolist())
    bounds = [(0, cuts[0] - 1), (cuts[0], cuts[1] - 1), (cuts[1], n_frames - 1)]
    return [
        {"start_frame": a, "end_frame": b, "keys": KEYS[int(rng.integers(len(KEYS)))],
         "mouse": MOUSE[int(rng.integers(len(MOUSE)))], "agreement": 1.0}
        for a, b in bounds
    ]


def make_manifest(root: Path, n_ok: int = 5, frames=(20, 40), extra_captions: bool = True,
                  bad_rows: bool = True, stride: int | None = None) -> pa.Table:
    """A clip manifest with `n_ok` ok rows (real mp4 + npz each) and, with `bad_rows`, one failed and one dropped
    row whose files also exist (they must still stay out of shards)."""
    rng = np.random.default_rng(0)
    rows = []
    n = n_ok + (2 if bad_rows else 0)
    for i in range(n):
        T = int(rng.integers(frames[0], frames[1] + 1))
        stem = f"{'_' if i % 3 == 0 else ''}clip-{i:02d}_x_{1000 * i:07d}_{1000 * i + T:07d}"
        video = write_mp4(root / "videos" / f"{stem}.mp4", T, seed=i)
        poses = walking_poses(T, seed=i)
        camera = root / "cameras" / f"{stem}.npz"
        camera.parent.mkdir(parents=True, exist_ok=True)
        np.savez(camera, extrinsic=poses, intrinsic=np.eye(3, dtype=np.float32))
        steps = (T - 1) // (stride or 1)
        segs = _segments(T, rng)
        status = "ok"
        if bad_rows and i == 1:
            status = "failed"
        if bad_rows and i == 3:
            status = "dropped"
        row = {
            "clip_id": stem,
            "source": "sekai-real-walking-hq",
            "csv_row": i,
            "status": status,
            "reason": None if status == "ok" else ("video_truncated" if status == "failed" else "too_static"),
            "error": None if status == "ok" else "test row",
            "video_file": f"{stem}.mp4",
            "camera_file": f"{stem}.npz",
            "youtube_id": stem.rsplit("_", 2)[0],
            "start_frame": 1000 * i,
            "end_frame": 1000 * i + T,
            "caption": f"A walk through street {i}, \"quoted\" — with ünïcode.",
            "location": "Tokyo",
            "scene": "street",
            "crowd_density": "medium",
            "weather": "clear",
            "time_of_day": "day",
            "video_path": str(video),
            "camera_path": str(camera),
            "video_bytes": video.stat().st_size,
            "video_codec": "h264",
            "video_fps": float(FPS),
            "video_frames": T,
            "width": W,
            "height": H,
            "num_poses": T,
            "keys": [KEYS[int(k)] for k in rng.integers(0, len(KEYS), steps)],
            "mouse": [MOUSE[int(k)] for k in rng.integers(0, len(MOUSE), steps)],
            "segments": segs,
            "chunks": [{"start_frame": a, "end_frame": min(a + 15, T - 1), "keys": "W", "mouse": "·",
                        "agreement": 0.75} for a in range(0, T - 1, 16)],
            "speed": float(rng.uniform(0.5, 2)),
            "turn_deg": float("nan") if i == 0 else float(rng.uniform(0, 5)),
            "view_rotation_deg": float(rng.uniform(0, 3)),
        }
        if extra_captions:
            row["caption_event"] = f"event {i}: a cyclist passes"
            row["prompt_t2v"] = f"t2v prompt {i}"
        rows.append(row)
    schema = pa.schema(list(CLIP_SCHEMA) + ([pa.field("caption_event", pa.string()), pa.field("prompt_t2v", pa.string())]
                                           if extra_captions else []))
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return conform(pa.Table.from_pydict(cols, schema=schema))


def ok_rows(table: pa.Table) -> list[dict]:
    return [r for r in table.to_pylist() if r["status"] == "ok"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("inputs"))
