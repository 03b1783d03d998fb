"""A small generated dataset in Sekai's on-disk format, for the demo, the tests and the benchmarks.

Why generate instead of shipping files: the real data is 600 GB of YouTube video that cannot be redistributed, and
a test needs to know the truth. Here every clip comes from a known plan of walking actions (walk forward, strafe,
pan, tilt, stand still, step back, turn while walking), so a test can check that the action quantizer recovers the
plan, that the video really moves the way the poses say, and that each kind of broken input is caught with the
right reason. Everything is deterministic for a seed (same CSV, same poses, same pixels), so failures reproduce.

Layout (like the real download; FACTS.md section 2)::

    out_dir/sekai-real-walking-hq.csv     videoFile, cameraFile, caption, location, scene, crowdDensity, weather,
                                          timeOfDay  (cameraFile = "<stem>.npz", resolved against out_dir/cameras)
    out_dir/videos/<stem>.mp4             H.264 (default) or HEVC tagged hvc1 (codec="libx265", like Sekai); no
                                          audio track (Sekai's carry AAC, which nothing here reads)
    out_dir/cameras/<stem>.npz            intrinsic (3,3) float32 normalised by image size (row 0 by width, row 1 by
                                          height; cx = cy = 0.5); extrinsic (T,4,4) float32 camera-to-world, OpenCV
                                          axes (x right, y down, z forward), translation scaled so every axis of
                                          the clip stays within +-1 (as Sekai does)

Stems are `<youtubeId>_<startFrame:07d>_<endFrame:07d>` with endFrame - startFrame = n_frames (half-open, 30 fps).
YouTube ids are 11 characters of [A-Za-z0-9_-]; several contain `_` or `-`, the first starts with `_`, and some
clips share a video id (several clips cut from one YouTube video, as in Sekai), so ingest must split with
`rsplit("_", 2)`.

Pictures: a procedural town (textured ground, a ring of textured buildings around the walk, a sky with clouds on a
high plane) is ray-cast per pixel, vectorised in numpy over a batch of frames x all pixels, from the same poses that
go into the npz (the scene is built in metres; the renderer scales the stored unit translation back by the clip's
scale factor). So the video moves as the trajectory says: a still segment gives identical frames, a pan right shifts
the picture left, walking makes the ground flow.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from yume_core.media import write_video
from yume_core.storage import atomic_path, atomic_write_bytes

__all__ = [
    "ACTIONS",
    "CSV_COLUMNS",
    "CSV_NAME",
    "FAULTS",
    "ExpectedRow",
    "PlannedSegment",
    "SekaiSample",
    "make_sekai_sample",
    "make_trajectory",
    "render_frames",
]

CSV_NAME = "sekai-real-walking-hq.csv"
CSV_COLUMNS = ["videoFile", "cameraFile", "caption", "location", "scene", "crowdDensity", "weather", "timeOfDay"]

# action name -> (forward sign, sideways sign (+ right), yaw sign (+ pan right), pitch sign (+ tilt up), keys, mouse)
# keys/mouse are what Yume's rule (FACTS.md section 3) gives for every frame step of such a segment.
ACTIONS: dict[str, tuple[int, int, int, int, str, str]] = {
    "walk_forward": (1, 0, 0, 0, "W", "·"),
    "walk_left": (1, -1, 0, 0, "W+A", "·"),
    "walk_right": (1, 1, 0, 0, "W+D", "·"),
    "turn_left": (1, 0, -1, 0, "W", "←"),
    "turn_right": (1, 0, 1, 0, "W", "→"),
    "strafe_left": (0, -1, 0, 0, "A", "·"),
    "strafe_right": (0, 1, 0, 0, "D", "·"),
    "step_back": (-1, 0, 0, 0, "S", "·"),
    "pan_left": (0, 0, -1, 0, "None", "←"),
    "pan_right": (0, 0, 1, 0, "None", "→"),
    "tilt_up": (0, 0, 0, 1, "None", "↑"),
    "tilt_down": (0, 0, 0, -1, "None", "↓"),
    "stand_still": (0, 0, 0, 0, "None", "·"),
}

# fault name -> (status, reason) the ingest stage should give the row
FAULTS: dict[str, tuple[str, str]] = {
    "video_missing": ("failed", "video_missing"),
    "camera_missing": ("failed", "camera_missing"),
    "video_truncated": ("failed", "video_truncated"),
    "video_unreadable": ("failed", "video_unreadable"),
    "poses_nonfinite": ("failed", "poses_nonfinite"),
    "camera_unreadable": ("failed", "camera_unreadable"),
    "frame_mismatch": ("failed", "frame_count_mismatch"),
    "duplicate": ("dropped", "duplicate_video"),
}

SEG_MIN, SEG_MAX = 35, 70  # frame steps per planned segment: Yume's runs are 33..70 frames
PITCH_LIMIT = 0.45  # rad; a walker does not look at the sky or their feet for long
EYE = 1.6  # camera height above the ground, metres


@dataclass(frozen=True)
class PlannedSegment:
    """One planned action: frame steps [start, stop), i.e. the motion from frame `start` to frame `stop`."""

    action: str
    keys: str
    mouse: str
    start: int
    stop: int


@dataclass(frozen=True)
class ExpectedRow:
    """What ingest should conclude about a fault row."""

    status: str  # "failed" or "dropped"
    reason: str
    fault: str


@dataclass
class SekaiSample:
    """Paths and ground truth of a generated sample.

    `clip_ids` and `expected` are aligned with the CSV's data rows (row 0 = first line after the header):
    `expected[i]` is None for a good row, else an `ExpectedRow`. A list rather than a dict keyed by clip id because
    the `duplicate` fault makes two rows share one clip id (the first stays ok, the later one is dropped).
    `segments` maps each clip id with a trajectory to its action plan (the truth the quantizer should recover).
    """

    out_dir: Path
    csv_path: Path
    videos_dir: Path
    cameras_dir: Path
    clip_ids: list[str]
    expected: list[ExpectedRow | None]
    segments: dict[str, list[PlannedSegment]] = field(default_factory=dict)
    n_frames: int = 0
    fps: float = 30.0
    size: tuple[int, int] = (256, 144)

    @property
    def good_rows(self) -> list[int]:
        return [i for i, e in enumerate(self.expected) if e is None]

    def video_path(self, clip_id: str) -> Path:
        return self.videos_dir / f"{clip_id}.mp4"

    def camera_path(self, clip_id: str) -> Path:
        return self.cameras_dir / f"{clip_id}.npz"


# ----------------------------------------------------------------------------------------------------------------
# trajectories


def _partition(rng: np.random.Generator, n: int) -> list[int]:
    """Split n steps into segments of SEG_MIN..SEG_MAX steps (one segment if n < SEG_MIN)."""
    if n < SEG_MIN:
        return [n] if n > 0 else []
    k_min, k_max = math.ceil(n / SEG_MAX), n // SEG_MIN
    k = int(rng.integers(k_min, k_max + 1))
    lengths = np.full(k, SEG_MIN)
    for _ in range(n - SEG_MIN * k):  # hand out the rest one step at a time to segments with room
        room = np.flatnonzero(lengths < SEG_MAX)
        lengths[rng.choice(room)] += 1
    return lengths.tolist()


class _Deck:
    """Shuffled actions dealt in turn, so a sample of a few clips already covers every action."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.cards = rng, []

    def draw(self, ok) -> str:
        for _ in range(3):
            if not self.cards:
                names = list(ACTIONS)
                self.cards = [names[i] for i in self.rng.permutation(len(names))]
            for i, a in enumerate(self.cards):
                if ok(a):
                    return self.cards.pop(i)
            self.cards = []
        return "walk_forward"


def make_trajectory(
    rng: np.random.Generator, n_frames: int, fps: float = 30.0, deck: _Deck | None = None
) -> tuple[np.ndarray, float, list[PlannedSegment]]:
    """A walker's camera path: (world poses (T,4,4) float64 in metres, scale, plan).

    Consecutive segments have different labels, so each segment is one run of the quantizer. Within a segment the
    motion eases (per-step magnitude between 80% and 100% of the segment's rate: smooth, never near a threshold);
    parts that do not move are exactly constant (a pan has zero translation, a walk exactly constant rotation).
    Rates: walking 1.1-1.5 m/s, sideways 0.8-1.0 m/s, back 0.6-0.8 m/s, pan 15-30 deg/s, tilt 8-14 deg/s. The
    stored translation is divided by `scale` (the largest |coordinate|) to fit +-1, so a 5 m walk of 150 frames
    gives unit steps ~0.008, far above Yume's 1e-4; even a 60 s walk stays above it by ~3x.
    Rotation is R = Ry(yaw) @ Rx(pitch) (no roll): +yaw turns the view to the right (+x), +pitch tilts it up (-y).
    """
    deck = deck or _Deck(rng)
    n_steps = max(n_frames - 1, 0)
    walk, side, back = rng.uniform(1.1, 1.5), rng.uniform(0.8, 1.0), rng.uniform(0.6, 0.8)
    yaw_rate, pitch_rate = np.radians(rng.uniform(15, 30)), np.radians(rng.uniform(8, 14))
    pitch0 = rng.uniform(-0.1, 0.05)
    yaw0 = rng.uniform(-math.pi, math.pi)

    steps = np.zeros((n_steps, 4))  # forward, right, yaw, pitch per step
    plan: list[PlannedSegment] = []
    pitch, start, prev = pitch0, 0, None
    for length in _partition(rng, n_steps):
        ease = 0.8 + 0.2 * np.sin(np.pi * (np.arange(length) + 0.5) / length)

        def ok(a: str) -> bool:
            f, s, y, p, keys, mouse = ACTIONS[a]
            if prev is not None and (keys, mouse) == (prev[4], prev[5]):
                return False
            return abs(pitch + p * pitch_rate / fps * ease.sum()) <= PITCH_LIMIT

        action = deck.draw(ok)
        f, s, y, p, keys, mouse = ACTIONS[action]
        seg = steps[start : start + length]
        seg[:, 0] = f * (walk if f > 0 else back) * ease / fps
        seg[:, 1] = s * side * ease / fps
        seg[:, 2] = y * yaw_rate * ease / fps
        seg[:, 3] = p * pitch_rate * ease / fps
        pitch += seg[:, 3].sum()
        plan.append(PlannedSegment(action, keys, mouse, start, start + length))
        start, prev = start + length, ACTIONS[action]

    yaw = yaw0 + np.concatenate([[0.0], np.cumsum(steps[:, 2])])
    pit = pitch0 + np.concatenate([[0.0], np.cumsum(steps[:, 3])])
    # step i moves along the heading of frame i: world displacement = Ry(yaw_i) @ (right, 0, forward)
    cy, sy = np.cos(yaw[:-1]), np.sin(yaw[:-1])
    disp = np.stack([cy * steps[:, 1] + sy * steps[:, 0], np.zeros(n_steps), -sy * steps[:, 1] + cy * steps[:, 0]], 1)
    pos = np.concatenate([np.zeros((1, 3)), np.cumsum(disp, 0)])

    poses = np.zeros((n_frames, 4, 4))
    poses[:, :3, :3] = _ry(yaw) @ _rx(pit)
    poses[:, :3, 3] = pos
    poses[:, 3, 3] = 1.0
    scale = float(np.abs(pos).max())
    return poses, (scale if scale > 0 else 1.0), plan


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rx(a: np.ndarray) -> np.ndarray:
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


# ----------------------------------------------------------------------------------------------------------------
# textures (built once per process, shared by all clips; variety comes from tints, palettes and offsets per clip)

TEX_GROUND = 512  # texels per side; 2.5 cm per texel -> the pattern repeats every 12.8 m
GROUND_TEXEL = 0.025
FACADE_W, FACADE_H, FACADE_HMAX = 2048, 256, 32.0  # columns around the ring, rows over 0..32 m
CLOUD_TEX, CLOUD_TEXEL, CLOUD_ALT = 256, 6.0, 400.0
N_VARIANTS = 4


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cutoff: float) -> np.ndarray:
    """Tileable smooth noise in [0, 1]: white noise low-passed in the Fourier domain (periodic by construction)."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    spec = np.fft.rfft2(white) * np.exp(-(fx**2 + fy**2) / (2 * cutoff**2))
    out = np.fft.irfft2(spec, s=shape)
    out -= out.min()
    return (out / max(out.max(), 1e-9)).astype(np.float32)


@lru_cache(maxsize=N_VARIANTS)
def _ground_texture(variant: int) -> np.ndarray:
    """Paving stones in running bond with grout lines, per-stone shade and grime; (512*512, 3) float32 in [0,1]."""
    rng = np.random.default_rng(1000 + variant)
    n = TEX_GROUND
    period = [32, 24, 40, 16][variant % 4]  # texels per stone (0.4-1.0 m)
    r = np.arange(n)[:, None]
    c = np.arange(n)[None, :]
    course = r // period
    cc = c + (course % 2) * (period // 2)
    per_row = n // period
    stone = (course % per_row) * per_row + (cc // period) % per_row
    shade = rng.uniform(0.75, 1.1, per_row * per_row)[stone]
    grout = (r % period < 2) | (cc % period < 2)
    base = np.array([[0.55, 0.53, 0.5], [0.62, 0.5, 0.42], [0.48, 0.5, 0.52], [0.6, 0.58, 0.5]][variant % 4])
    grime = 0.75 + 0.25 * _smooth_noise(rng, (n, n), 0.02)
    fine = 0.9 + 0.1 * _smooth_noise(rng, (n, n), 0.15)
    tex = base[None, None, :] * (shade * grime * fine)[..., None]
    tex[grout] *= 0.55
    return np.clip(tex, 0, 1).reshape(-1, 3).astype(np.float32)


@lru_cache(maxsize=N_VARIANTS)
def _facade_texture(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """Buildings around a ring: (texture (H*W, 3) float32, heights (W,) in metres). Row 0 is street level."""
    rng = np.random.default_rng(2000 + variant)
    w, h = FACADE_W, FACADE_H
    rows_per_m = h / FACADE_HMAX
    # building spans along the ring
    edges = [0]
    while edges[-1] < w:
        edges.append(edges[-1] + int(rng.integers(50, 180)))
    edges[-1] = w
    spans = np.searchsorted(np.array(edges[1:]), np.arange(w), side="right")
    nb = len(edges) - 1
    height = rng.uniform(7, 26, nb)
    palette = np.array(
        [[0.75, 0.68, 0.58], [0.62, 0.42, 0.35], [0.82, 0.8, 0.75], [0.55, 0.58, 0.62], [0.78, 0.62, 0.45],
         [0.45, 0.47, 0.5], [0.85, 0.75, 0.62], [0.6, 0.52, 0.48]]
    )
    color = palette[rng.integers(0, len(palette), nb)] * rng.uniform(0.85, 1.1, (nb, 1))
    win_period = rng.integers(16, 34, nb)  # columns
    floor_m = rng.uniform(2.8, 3.6, nb)
    glass = np.array([0.22, 0.27, 0.33]) * rng.uniform(0.7, 1.3, (nb, 1))

    col = np.arange(w)
    local = col - np.array(edges[:-1])[spans]
    width = (np.array(edges[1:]) - np.array(edges[:-1]))[spans]
    in_col = (local % win_period[spans]) < 0.55 * win_period[spans]
    in_col &= (local > 4) & (local < width - 4)
    m = (np.arange(h) + 0.5)[:, None] / rows_per_m  # metres above ground, (h, 1)
    fl = floor_m[spans][None, :]
    frac = (m % fl) / fl
    in_row = (frac > 0.3) & (frac < 0.8) & (m > fl)  # windows from the first floor up
    window = in_row & in_col[None, :]
    shop = m < 0.9 * fl  # street level: shop fronts, darker
    tex = np.broadcast_to(color[spans][None], (h, w, 3)).copy()
    tex[window] = np.broadcast_to(glass[spans][None], (h, w, 3))[window]
    tex *= np.where(shop, 0.6, 1.0)[..., None]
    tex[:, local < 2] *= 0.5  # a dark seam between buildings
    tex *= (0.8 + 0.2 * _smooth_noise(rng, (h, w), 0.05))[..., None]
    return np.clip(tex, 0, 1).reshape(-1, 3).astype(np.float32), height[spans].astype(np.float32)


@lru_cache(maxsize=1)
def _cloud_texture() -> np.ndarray:
    rng = np.random.default_rng(3000)
    return _smooth_noise(rng, (CLOUD_TEX, CLOUD_TEX), 0.03).reshape(-1)


# sky colours (zenith, horizon) and a light multiplier per time of day; cloud cover and light per weather
_TIME_LOOK = {
    "morning": ((0.45, 0.62, 0.85), (0.85, 0.82, 0.75), 0.95),
    "noon": ((0.3, 0.5, 0.85), (0.75, 0.82, 0.9), 1.05),
    "afternoon": ((0.35, 0.52, 0.8), (0.85, 0.8, 0.7), 1.0),
    "evening": ((0.3, 0.3, 0.55), (0.95, 0.6, 0.4), 0.75),
    "night": ((0.04, 0.05, 0.12), (0.2, 0.2, 0.28), 0.5),
}
_WEATHER = {"clear": (0.15, 1.0), "cloudy": (0.5, 0.9), "overcast": (0.9, 0.8), "rainy": (0.95, 0.65)}


@dataclass(frozen=True)
class _Scene:
    variant: int
    center: tuple[float, float]  # ring centre (x, z), metres
    radius: float
    phase: int  # columns the skyline is rotated by
    ground_tint: np.ndarray
    facade_tint: np.ndarray
    zenith: np.ndarray
    horizon: np.ndarray
    light: float
    cloud_cover: float
    fog: float  # metres


def _make_scene(rng: np.random.Generator, positions: np.ndarray, time_of_day: str, weather: str) -> _Scene:
    zen, hor, light = _TIME_LOOK[time_of_day]
    cover, wlight = _WEATHER[weather]
    xz = positions[:, [0, 2]]
    center = (xz.min(0) + xz.max(0)) / 2
    reach = float(np.linalg.norm(xz - center, axis=1).max())
    grey = np.array([0.6, 0.62, 0.65])
    mix = 0.6 * cover if weather in ("overcast", "rainy") else 0.0
    return _Scene(
        variant=int(rng.integers(N_VARIANTS)),
        center=(float(center[0]), float(center[1])),
        radius=max(18.0, reach + rng.uniform(10, 20)),
        phase=int(rng.integers(FACADE_W)),
        ground_tint=rng.uniform(0.9, 1.1, 3).astype(np.float32),
        facade_tint=rng.uniform(0.85, 1.15, 3).astype(np.float32),
        zenith=((1 - mix) * np.array(zen) + mix * grey).astype(np.float32),
        horizon=((1 - mix) * np.array(hor) + mix * grey).astype(np.float32),
        light=light * wlight,
        cloud_cover=cover,
        fog=float(rng.uniform(60, 110)) * (0.6 if weather == "rainy" else 1.0),
    )


# ----------------------------------------------------------------------------------------------------------------
# rendering


def _pixel_rays(intrinsic: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Camera-frame ray directions (z = 1) through pixel centres, (H*W, 3) float32; computed once per clip."""
    w, h = size
    fx, fy, cx, cy = intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(h) + 0.5) / h
    x = np.broadcast_to(((u - cx) / fx)[None, :], (h, w))
    y = np.broadcast_to(((v - cy) / fy)[:, None], (h, w))
    return np.stack([x, y, np.ones((h, w))], -1).reshape(-1, 3).astype(np.float32)


def render_frames(
    poses: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int], scene: _Scene, batch_pixels: int = 1 << 16
) -> Iterator[np.ndarray]:
    """Yield one (H, W, 3) uint8 frame per camera-to-world pose (metres), ray-casting the scene.

    Vectorised over a batch of frames x all pixels (about `batch_pixels` rays per numpy call: tiny frames get
    many frames per call, so per-call overhead vanishes; big ones stay within a few tens of MB).
    """
    w, h = size
    rays = _pixel_rays(intrinsic, size)
    n = rays.shape[0]
    batch = max(1, batch_pixels // n)
    for b0 in range(0, len(poses), batch):
        pb = poses[b0 : b0 + batch]
        rgb = _shade(pb[:, :3, :3].astype(np.float32), pb[:, :3, 3].astype(np.float32), rays, scene)
        yield from rgb.reshape(len(pb), h, w, 3)


def _shade(rot: np.ndarray, cam: np.ndarray, rays: np.ndarray, sc: _Scene) -> np.ndarray:
    """Colours (B*N, 3) uint8 for B poses x N pixel rays. Dense math decides what each ray hits (ground, the
    ring of buildings, sky); each material is then shaded only on its own rays."""
    b, n = len(rot), len(rays)
    rx, ry = rays[None, :, 0], rays[None, :, 1]  # ray z is 1
    r = rot[:, :, :, None]  # (B, 3, 3, 1)
    dx = r[:, 0, 0] * rx + r[:, 0, 1] * ry + r[:, 0, 2]  # world directions, (B, N) each
    dy = r[:, 1, 0] * rx + r[:, 1, 1] * ry + r[:, 1, 2]
    dz = r[:, 2, 0] * rx + r[:, 2, 1] * ry + r[:, 2, 2]
    ox, oy, oz = cam[:, 0, None], cam[:, 1, None], cam[:, 2, None]

    # the ring of buildings (inside of a vertical cylinder): where does each ray meet it, how high above ground
    px, pz = ox - np.float32(sc.center[0]), oz - np.float32(sc.center[1])
    a = dx * dx + dz * dz + np.float32(1e-12)
    hb = px * dx + pz * dz
    c = px * px + pz * pz - np.float32(sc.radius**2)  # < 0: the camera is inside
    tw = (np.sqrt(np.maximum(hb * hb - a * c, 0)) - hb) / a
    above = np.float32(EYE) - (oy + tw * dy)  # y points down; the ground is the plane y = EYE

    out = np.empty((b * n, 3), np.float32)
    frame_of = lambda idx: idx // n  # noqa: E731
    tex_f, heights = _facade_texture(sc.variant)
    above_f, tw_f = above.reshape(-1), tw.reshape(-1)
    dx_f, dy_f, dz_f = dx.reshape(-1), dy.reshape(-1), dz.reshape(-1)

    # candidates for a wall: between the ground and the tallest building
    cand = np.flatnonzero((above_f >= 0) & (above_f < FACADE_HMAX))
    fr = frame_of(cand)
    t = tw_f[cand]
    hx = px[fr, 0] + t * dx_f[cand]
    hz = pz[fr, 0] + t * dz_f[cand]
    col = ((np.arctan2(hz, hx) * np.float32(FACADE_W / (2 * np.pi))).astype(np.int64) + sc.phase) % FACADE_W
    ab = above_f[cand]
    hit = ab < heights[col]
    wall, col, ab, t = cand[hit], col[hit], ab[hit], t[hit]
    row = np.minimum((ab * np.float32(FACADE_H / FACADE_HMAX)).astype(np.int64), FACADE_H - 1)
    fog = np.exp(-t / np.float32(sc.fog))[:, None]
    out[wall] = tex_f[row * FACADE_W + col] * (sc.facade_tint * sc.light) * fog + sc.horizon * (1 - fog)

    # ground: rays that reach the plane before the ring
    gnd = np.flatnonzero(above_f < 0)
    fr = frame_of(gnd)
    dyg = dy_f[gnd]
    tg = (np.float32(EYE) - oy[fr, 0]) / dyg
    gu = ((ox[fr, 0] + tg * dx_f[gnd]) * np.float32(1 / GROUND_TEXEL)).astype(np.int64) & (TEX_GROUND - 1)
    gv = ((oz[fr, 0] + tg * dz_f[gnd]) * np.float32(1 / GROUND_TEXEL)).astype(np.int64) & (TEX_GROUND - 1)
    fog = np.exp(-tg / np.float32(sc.fog))[:, None]
    out[gnd] = _ground_texture(sc.variant)[gv * TEX_GROUND + gu] * (sc.ground_tint * sc.light) * fog + sc.horizon * (
        1 - fog
    )

    # sky: everything else; a gradient by elevation and clouds on a high plane
    sky_mask = np.ones(b * n, bool)
    sky_mask[wall] = False
    sky_mask[gnd] = False
    sky = np.flatnonzero(sky_mask)
    fr = frame_of(sky)
    sdx, sdy, sdz = dx_f[sky], dy_f[sky], dz_f[sky]
    up = np.clip(-sdy / np.sqrt(sdx * sdx + sdy * sdy + sdz * sdz), 0, 1)
    k = np.sqrt(up)[:, None]
    color = sc.horizon * (1 - k) + sc.zenith * k
    tc = (oy[fr, 0] + np.float32(CLOUD_ALT)) / np.maximum(-sdy, np.float32(1e-3))
    cu = ((ox[fr, 0] + tc * sdx) * np.float32(1 / CLOUD_TEXEL)).astype(np.int64) & (CLOUD_TEX - 1)
    cv = ((oz[fr, 0] + tc * sdz) * np.float32(1 / CLOUD_TEXEL)).astype(np.int64) & (CLOUD_TEX - 1)
    cloud = _cloud_texture()[cv * CLOUD_TEX + cu]
    alpha = (np.clip((cloud - (1 - sc.cloud_cover) * 0.8) * 3, 0, 1) * np.clip(up * 6, 0, 1))[:, None]
    out[sky] = color * (1 - alpha) + np.float32(0.55 + 0.4 * sc.light) * alpha
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# metadata

_LOCATIONS = [
    "Tokyo, Japan", "Lisbon, Portugal", "Kyoto, Japan", "Paris, France", "New York City, USA", "Istanbul, Turkey",
    "Seoul, South Korea", "Mexico City, Mexico", "Prague, Czech Republic", "Hanoi, Vietnam", "Barcelona, Spain",
    "Copenhagen, Denmark", "Marrakesh, Morocco", "Buenos Aires, Argentina", "Edinburgh, UK", "Bangkok, Thailand",
]
_SCENES = [
    "old town street", "shopping street", "residential alley", "riverside promenade", "city square",
    "market street", "harbour front", "pedestrian zone", "park path", "boulevard",
]
_CROWD = ["low", "medium", "high"]
_TIMES = list(_TIME_LOOK)
_WEATHERS = list(_WEATHER)
_CROWD_TEXT = {
    "low": "Only a few pedestrians are around, and the street feels quiet.",
    "medium": "A steady stream of pedestrians passes by, some carrying shopping bags.",
    "high": "The sidewalks are busy with people walking in both directions.",
}
_BUILDINGS = [
    "Multi-storey buildings with rows of windows line both sides, with shops and cafes at street level.",
    "Old facades in warm colours frame the street, their ground floors taken by small stores.",
    "Apartment blocks with balconies rise on either side above a paved walkway.",
    "Stone buildings of varying heights enclose the space, their windows reflecting the light.",
]
_LIGHT_TEXT = {
    "morning": "soft morning light", "noon": "bright midday light", "afternoon": "warm afternoon light",
    "evening": "the fading light of the evening", "night": "street lamps and lit windows at night",
}


def _metadata(rng: np.random.Generator) -> dict[str, str]:
    location = str(rng.choice(_LOCATIONS))
    scene = str(rng.choice(_SCENES))
    crowd = str(rng.choice(_CROWD))
    time_of_day = str(rng.choice(_TIMES))
    weather = str(rng.choice(_WEATHERS))
    sky = {"clear": "clear", "cloudy": "partly cloudy", "overcast": "overcast", "rainy": "grey and rainy"}[weather]
    caption = (
        f"The video shows a first-person walk along a {scene} in {location}, seen in {_LIGHT_TEXT[time_of_day]}. "
        f"{rng.choice(_BUILDINGS)} {_CROWD_TEXT[crowd]} The sky is {sky}, and the paving stones of the street "
        "stretch ahead."
    )
    return {
        "caption": caption, "location": location, "scene": scene, "crowdDensity": crowd,
        "weather": weather, "timeOfDay": time_of_day,
    }


_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def _youtube_id(rng: np.random.Generator, k: int) -> str:
    """11 chars of [A-Za-z0-9_-]; clip 0 starts with '_', odd clips contain '_', every third contains '-'."""
    chars = list(rng.choice(list(_ID_CHARS[:62]), 11))
    if k % 2 == 1:
        chars[int(rng.integers(1, 10))] = "_"
    if k % 3 == 2:
        chars[int(rng.integers(1, 10))] = "-"
    if k == 0:
        chars[0] = "_"
    return "".join(chars)


# ----------------------------------------------------------------------------------------------------------------
# the sample

_HTML_404 = (b"<!DOCTYPE html><html><head><title>404 Not Found</title></head>"
             b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n") * 40
_LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
                b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 1843392\n")


def make_sekai_sample(
    out_dir: str | Path,
    n_clips: int = 8,
    n_frames: int = 150,
    size: tuple[int, int] = (256, 144),
    fps: float = 30,
    seed: int = 0,
    codec: str = "libx264",
    faults: Sequence[str] = (),
) -> SekaiSample:
    """Write `n_clips` good clips plus one extra row per entry of `faults` under `out_dir`; return its SekaiSample.

    Rows: the good clips first, then one clip per fault in the order given, then the `duplicate` rows (if any).

    Faults (FAULTS gives each row's expected status and reason):
    `video_missing` (the CSV names an mp4 that does not exist), `camera_missing` (no npz), `video_truncated` (the
    mp4 cut to 60% of its bytes; written with faststart, so it opens but ends early), `video_unreadable` (an HTML
    error page saved as .mp4), `poses_nonfinite` (NaN in the middle pose), `camera_unreadable` (a Git LFS pointer
    saved as .npz), `frame_mismatch` (the video has 10 frames fewer than the trajectory), `duplicate` (a second
    CSV row naming the first good clip again; the first stays ok, the copy is dropped).
    Good rows are ok. Everything is a pure function of the arguments.
    """
    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"size must be even for yuv420p video, got {w}x{h}")
    if n_frames < 2:
        raise ValueError("n_frames must be >= 2 (a trajectory needs at least one step)")
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {sorted(FAULTS)}")
    if "frame_mismatch" in faults and n_frames <= 11:
        raise ValueError("the frame_mismatch fault needs n_frames > 11")
    if "duplicate" in faults and n_clips < 1:
        raise ValueError("the duplicate fault needs at least one good clip")

    out = Path(out_dir)
    videos, cameras = out / "videos", out / "cameras"
    videos.mkdir(parents=True, exist_ok=True)
    cameras.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(seed)
    deck = _Deck(np.random.default_rng(root.spawn(1)[0]))
    jobs = [None] * n_clips + [f for f in faults if f != "duplicate"]
    clip_rngs = [np.random.default_rng(s) for s in root.spawn(len(jobs) + 1)[1:]]

    # libx264 (PyAV 18) encoded identical frames to different bytes from run to run when B-frames were on; without
    # them the sample is byte-for-byte reproducible (see write_video), and still segments decode to identical frames
    det = {"x264-params": "bframes=0"} if codec == "libx264" else None
    rows: list[dict[str, str]] = []
    clip_ids: list[str] = []
    expected: list[ExpectedRow | None] = []
    segments: dict[str, list[PlannedSegment]] = {}
    prev_id, prev_end = None, 0
    for k, fault in enumerate(jobs):
        rng = clip_rngs[k]
        if prev_id is not None and fault is None and rng.random() < 0.3:
            yt, start = prev_id, prev_end + int(rng.integers(0, 600))  # another clip of the same YouTube video
        else:
            yt, start = _youtube_id(rng, k), int(rng.integers(0, 54000))
        prev_id, prev_end = yt, start + n_frames
        stem = f"{yt}_{start:07d}_{start + n_frames:07d}"
        meta = _metadata(rng)
        poses, scale, plan = make_trajectory(rng, n_frames, fps, deck)
        fx = rng.uniform(0.55, 0.9)
        intrinsic = np.array([[fx, 0, 0.5], [0, fx * w / h, 0.5], [0, 0, 1]], np.float32)
        stored = poses.astype(np.float32)
        stored[:, :3, 3] = (poses[:, :3, 3] / scale).astype(np.float32)
        segments[stem] = plan

        # camera file
        npz_path = cameras / f"{stem}.npz"
        if fault == "camera_unreadable":
            atomic_write_bytes(npz_path, _LFS_POINTER)
        elif fault == "camera_missing":
            npz_path.unlink(missing_ok=True)  # a rerun into the same folder must not leave one behind
        else:
            extrinsic = stored.copy()
            if fault == "poses_nonfinite":
                extrinsic[n_frames // 2, 0, 3] = np.nan
            _save_npz(npz_path, intrinsic=intrinsic, extrinsic=extrinsic)

        # video: rendered from the stored (float32, unit-scaled) poses, scaled back to metres
        mp4 = videos / f"{stem}.mp4"
        if fault == "video_unreadable":
            atomic_write_bytes(mp4, _HTML_404)
        elif fault == "video_missing":
            mp4.unlink(missing_ok=True)
        else:
            render_poses = stored.astype(np.float64)
            render_poses[:, :3, 3] *= scale
            if fault == "frame_mismatch":
                render_poses = render_poses[: n_frames - 10]
            scene = _make_scene(rng, poses[:, :3, 3], meta["timeOfDay"], meta["weather"])
            write_video(mp4, render_frames(render_poses, intrinsic, size, scene), fps, codec=codec, options=det)
            if fault == "video_truncated":
                data = mp4.read_bytes()
                atomic_write_bytes(mp4, data[: int(len(data) * 0.6)])

        rows.append({"videoFile": f"{stem}.mp4", "cameraFile": f"{stem}.npz", **meta})
        clip_ids.append(stem)
        expected.append(None if fault is None else ExpectedRow(*FAULTS[fault], fault))

    for _ in range(sum(f == "duplicate" for f in faults)):
        rows.append(dict(rows[0]))
        clip_ids.append(clip_ids[0])
        expected.append(ExpectedRow(*FAULTS["duplicate"], "duplicate"))

    csv_path = out / CSV_NAME
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(csv_path, buf.getvalue().encode("utf-8"))
    return SekaiSample(out, csv_path, videos, cameras, clip_ids, expected, segments, n_frames, float(fps), (w, h))


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
