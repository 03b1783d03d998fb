"""The generated Sekai-format sample: layout, ids, camera files, video/pose agreement, and each fault."""

from __future__ import annotations

import csv
import re
from collections import Counter

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from yume_core.errors import RowError
from yume_core.media import probe_video, read_frames
from yume_core.sample_data import ACTIONS, CSV_COLUMNS, FAULTS, SEG_MAX, SEG_MIN, make_sekai_sample

N_CLIPS, N_FRAMES, SIZE = 8, 150, (128, 72)
ALL_FAULTS = list(FAULTS)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sekai_sample(
        tmp_path_factory.mktemp("sekai"), n_clips=N_CLIPS, n_frames=N_FRAMES, size=SIZE, seed=0, faults=ALL_FAULTS
    )


def read_rows(sample):
    with open(sample.csv_path, newline="") as f:
        return list(csv.DictReader(f))


def good_ids(sample):
    return [sample.clip_ids[i] for i in sample.good_rows]


def yume_labels(poses: np.ndarray, stride: int = 1) -> list[tuple[str, str]]:
    """FACTS.md section 3, written out independently of the project's quantizer."""
    th_t, th_r = 1e-4 * stride, 1e-3 * stride
    p = poses[::stride].astype(np.float64)
    rel = np.linalg.inv(p[:-1]) @ p[1:]
    t = rel[:, :3, 3]
    ang = Rotation.from_matrix(rel[:, :3, :3]).as_euler("xyz")
    out = []
    for (tx, _, tz), (a0, a1, _) in zip(t, ang):
        keys = [k for k, on in (("W", tz > th_t), ("S", tz < -th_t), ("D", tx > th_t), ("A", tx < -th_t)) if on]
        vertical = "↑" if a0 > th_r else "↓" if a0 < -th_r else ""
        mouse = vertical + ("→" if a1 > th_r else "←" if a1 < -th_r else "")
        out.append(("+".join(keys) or "None", mouse or "·"))
    return out


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Integer (dx, dy) that moves the content of frame a onto frame b (phase correlation, numpy FFT)."""
    a, b = a.astype(np.float64).mean(-1), b.astype(np.float64).mean(-1)
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2((a - a.mean()) * win), np.fft.fft2((b - b.mean()) * win)
    cross = fb * np.conj(fa)
    r = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    y, x = np.unravel_index(np.argmax(r), r.shape)
    return (x - a.shape[1] if x > a.shape[1] // 2 else x), (y - a.shape[0] if y > a.shape[0] // 2 else y)


# ---------------------------------------------------------------------------------------------------------------
# layout and ids


def test_csv_columns_rows_and_expected(sample):
    with open(sample.csv_path, newline="") as f:
        header = next(csv.reader(f))
    assert header == CSV_COLUMNS
    rows = read_rows(sample)
    assert len(rows) == len(sample.clip_ids) == len(sample.expected) == N_CLIPS + len(ALL_FAULTS)
    assert sample.expected[:N_CLIPS] == [None] * N_CLIPS
    assert sorted(e.fault for e in sample.expected[N_CLIPS:]) == sorted(ALL_FAULTS)
    for row, cid in zip(rows, sample.clip_ids):
        assert row["videoFile"] == f"{cid}.mp4" and row["cameraFile"] == f"{cid}.npz"
        assert all(row[c] for c in CSV_COLUMNS), row
    assert len({r["caption"] for r in rows[:N_CLIPS]}) > 1 and len({r["location"] for r in rows}) > 1


def test_ids_split_with_rsplit(sample):
    ids = []
    for row in read_rows(sample):
        stem = row["videoFile"][: -len(".mp4")]
        yt, start, end = stem.rsplit("_", 2)
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", yt), yt
        assert re.fullmatch(r"\d{7}", start) and re.fullmatch(r"\d{7}", end)
        assert int(end) - int(start) == N_FRAMES
        ids.append(yt)
    assert any(i.startswith("_") for i in ids)
    assert any("_" in i[1:] for i in ids) and any("-" in i for i in ids)
    assert len(set(ids)) < len(set(sample.clip_ids)), "some clips share a YouTube video, as in Sekai"


def test_camera_files(sample):
    for cid in good_ids(sample):
        with np.load(sample.camera_path(cid)) as z:
            assert set(z.files) == {"intrinsic", "extrinsic"}
            k, e = z["intrinsic"], z["extrinsic"]
        assert k.shape == (3, 3) and k.dtype == np.float32
        assert k[0, 2] == 0.5 and k[1, 2] == 0.5 and 0.5 <= k[0, 0] <= 1.0
        assert k[1, 1] == pytest.approx(k[0, 0] * SIZE[0] / SIZE[1])  # square pixels, normalised by height
        assert e.shape == (N_FRAMES, 4, 4) and e.dtype == np.float32
        assert np.all(np.isfinite(e))
        np.testing.assert_array_equal(e[:, 3], np.tile([0, 0, 0, 1], (N_FRAMES, 1)))
        t = e[:, :3, 3]
        assert np.abs(t).max() <= 1.0
        if np.abs(t).max() > 0:
            assert np.abs(t).max() == pytest.approx(1.0)  # scaled so the largest axis just fits
        r = e[:, :3, :3].astype(np.float64)
        np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
        np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_videos_match_trajectories(sample):
    for cid in good_ids(sample):
        info = probe_video(sample.video_path(cid))
        with np.load(sample.camera_path(cid)) as z:
            n_poses = len(z["extrinsic"])
        assert info.frames == n_poses == N_FRAMES
        assert (info.width, info.height, info.fps, info.codec) == (*SIZE, 30.0, "h264")


# ---------------------------------------------------------------------------------------------------------------
# the plan is what Yume's rule reads off the poses


def test_quantization_recovers_the_plan(sample):
    seen = Counter()
    for cid in good_ids(sample):
        plan = sample.segments[cid]
        assert plan[0].start == 0 and plan[-1].stop == N_FRAMES - 1
        with np.load(sample.camera_path(cid)) as z:
            labels = yume_labels(z["extrinsic"])
        for prev, seg in zip([None] + plan[:-1], plan):
            assert SEG_MIN <= seg.stop - seg.start <= SEG_MAX
            assert (seg.keys, seg.mouse) == ACTIONS[seg.action][4:]
            if prev is not None:
                assert prev.stop == seg.start and (prev.keys, prev.mouse) != (seg.keys, seg.mouse)
            assert set(labels[seg.start : seg.stop]) == {(seg.keys, seg.mouse)}, (cid, seg)
            seen[seg.action] += 1
    assert set(seen) == set(ACTIONS), "a sample of 8 clips covers every action"


def test_still_segments_are_exactly_still(sample):
    for cid in good_ids(sample):
        with np.load(sample.camera_path(cid)) as z:
            e = z["extrinsic"]
        for seg in sample.segments[cid]:
            f, s, y, p = ACTIONS[seg.action][:4]
            part = e[seg.start : seg.stop + 1]
            if (f, s) == (0, 0):
                assert np.all(part[:, :3, 3] == part[0, :3, 3])
            if (y, p) == (0, 0):
                assert np.all(part[:, :3, :3] == part[0, :3, :3])


# ---------------------------------------------------------------------------------------------------------------
# the picture moves the way the camera does


def _segments_of(sample, action):
    for cid in good_ids(sample):
        for seg in sample.segments[cid]:
            if seg.action == action:
                yield cid, seg


def test_picture_still_when_standing_and_moving_when_walking(sample):
    for cid, seg in _segments_of(sample, "stand_still"):
        frames = read_frames(sample.video_path(cid), seg.start + 2, seg.stop - 1).astype(np.int16)
        assert np.abs(np.diff(frames, axis=0)).mean() < 0.05
    for action in ("walk_forward", "step_back", "strafe_left", "walk_right"):
        for cid, seg in _segments_of(sample, action):
            frames = read_frames(sample.video_path(cid), seg.start + 2, seg.stop - 1).astype(np.int16)
            assert np.abs(np.diff(frames, axis=0)).mean() > 0.3, (cid, seg)


@pytest.mark.parametrize(
    "action,axis,sign",
    [("pan_right", 0, -1), ("pan_left", 0, 1), ("turn_right", 0, -1), ("tilt_up", 1, 1), ("tilt_down", 1, -1)],
)
def test_picture_shifts_with_rotation(sample, action, axis, sign):
    """Panning right moves the content left (dx < 0); tilting up moves it down (dy > 0, image y points down)."""
    segs = list(_segments_of(sample, action))
    assert segs
    for cid, seg in segs:
        frames = read_frames(sample.video_path(cid), seg.start + 1, seg.stop)
        shifts = [phase_shift(frames[i], frames[i + 3])[axis] for i in range(0, len(frames) - 3, 3)]
        assert np.median(shifts) * sign > 0, (cid, seg, shifts)
        assert np.mean(np.sign(shifts) == sign) > 0.6


# ---------------------------------------------------------------------------------------------------------------
# faults


def _fault_row(sample, fault):
    (i,) = [i for i, e in enumerate(sample.expected) if e is not None and e.fault == fault]
    return i, sample.clip_ids[i]


def test_expected_statuses(sample):
    got = {e.fault: (e.status, e.reason) for e in sample.expected if e is not None}
    assert got == FAULTS
    assert got["duplicate"] == ("dropped", "duplicate_video")
    assert got["frame_mismatch"] == ("failed", "frame_count_mismatch")


def test_fault_video_and_camera_missing(sample):
    _, cid = _fault_row(sample, "video_missing")
    assert not sample.video_path(cid).exists() and sample.camera_path(cid).exists()
    with pytest.raises(RowError) as e:
        probe_video(sample.video_path(cid))
    assert e.value.reason == "video_missing"
    _, cid = _fault_row(sample, "camera_missing")
    assert sample.video_path(cid).exists() and not sample.camera_path(cid).exists()
    assert probe_video(sample.video_path(cid)).frames == N_FRAMES


@pytest.mark.parametrize("fault", ["video_truncated", "video_unreadable"])
def test_fault_broken_video(sample, fault):
    _, cid = _fault_row(sample, fault)
    with pytest.raises(RowError) as e:
        probe_video(sample.video_path(cid))
    assert e.value.reason == fault
    assert sample.camera_path(cid).exists()


def test_fault_bad_camera_files(sample):
    _, cid = _fault_row(sample, "poses_nonfinite")
    with np.load(sample.camera_path(cid)) as z:
        e = z["extrinsic"]
    assert e.shape == (N_FRAMES, 4, 4) and np.isnan(e).sum() == 1
    _, cid = _fault_row(sample, "camera_unreadable")
    with pytest.raises(Exception):
        np.load(sample.camera_path(cid))
    assert probe_video(sample.video_path(cid)).frames == N_FRAMES


def test_fault_frame_mismatch(sample):
    _, cid = _fault_row(sample, "frame_mismatch")
    with np.load(sample.camera_path(cid)) as z:
        assert len(z["extrinsic"]) == N_FRAMES
    assert probe_video(sample.video_path(cid)).frames == N_FRAMES - 10


def test_fault_duplicate(sample):
    i, cid = _fault_row(sample, "duplicate")
    rows = read_rows(sample)
    first = sample.clip_ids.index(cid)
    assert first < i and sample.expected[first] is None and rows[first] == rows[i]
    assert i == len(rows) - 1


# ---------------------------------------------------------------------------------------------------------------
# determinism, codecs, sizes, arguments


def test_deterministic_for_a_seed(tmp_path):
    a = make_sekai_sample(tmp_path / "a", n_clips=2, n_frames=34, size=(64, 36), seed=7)
    b = make_sekai_sample(tmp_path / "b", n_clips=2, n_frames=34, size=(64, 36), seed=7)
    c = make_sekai_sample(tmp_path / "c", n_clips=2, n_frames=34, size=(64, 36), seed=8)
    assert a.csv_path.read_bytes() == b.csv_path.read_bytes() != c.csv_path.read_bytes()
    assert a.segments == b.segments
    for cid in a.clip_ids:
        with np.load(a.camera_path(cid)) as za, np.load(b.camera_path(cid)) as zb:
            np.testing.assert_array_equal(za["extrinsic"], zb["extrinsic"])
            np.testing.assert_array_equal(za["intrinsic"], zb["intrinsic"])
        assert a.video_path(cid).read_bytes() == b.video_path(cid).read_bytes()


def test_hevc_and_tiny_clips(tmp_path):
    s = make_sekai_sample(tmp_path, n_clips=2, n_frames=34, size=(64, 36), codec="libx265")
    for cid in s.clip_ids:
        info = probe_video(s.video_path(cid))
        assert (info.codec, info.frames, info.width, info.height) == ("hevc", 34, 64, 36)
        (seg,) = s.segments[cid]  # 33 steps: one segment
        with np.load(s.camera_path(cid)) as z:
            assert set(yume_labels(z["extrinsic"])) == {(seg.keys, seg.mouse)}


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="even"):
        make_sekai_sample(tmp_path, n_clips=1, size=(65, 36))
    with pytest.raises(ValueError, match="unknown faults"):
        make_sekai_sample(tmp_path, n_clips=1, faults=["video_on_fire"])
    with pytest.raises(ValueError, match="duplicate"):
        make_sekai_sample(tmp_path, n_clips=0, faults=["duplicate"])
