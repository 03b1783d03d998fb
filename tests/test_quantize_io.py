"""Bad trajectory files: each gives its reason code and a message naming the file; good files load."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from quantize_actions import find_trajectory_files, load_trajectory, quantize_files, validate_poses
from yume_core.errors import RowError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "yume_test_video"


def walk(n=10) -> np.ndarray:
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    poses[:, 2, 3] = np.arange(n) * 1e-3
    return poses


def write_bad_files(d: Path) -> dict[str, str]:
    """file name -> expected reason."""
    (d / "garbage.npy").write_bytes(b"\x00\x13 definitely not numpy " * 20)
    np.save(d / "full.npy", walk(50))
    data = (d / "full.npy").read_bytes()
    (d / "truncated.npy").write_bytes(data[: len(data) // 2])
    (d / "full.npy").unlink()
    np.savez_compressed(d / "full.npz", extrinsic=walk(500))
    data = (d / "full.npz").read_bytes()
    (d / "truncated.npz").write_bytes(data[: len(data) - 40])  # central directory cut off
    (d / "full.npz").unlink()
    np.savez(d / "no_extrinsic.npz", intrinsic=np.eye(3), poses=walk())
    np.save(d / "shape_3x4.npy", walk()[:, :3, :])
    np.save(d / "one_pose.npy", walk(1))
    nan = walk(20)
    nan[[7, 9], 0, 3] = np.nan
    np.save(d / "nan.npy", nan)
    scaled = walk(20)
    scaled[12, :3, :3] *= 1.01
    np.save(d / "not_orthonormal.npy", scaled)
    mirror = walk(20)
    mirror[4, :3, 0] *= -1  # orthonormal, det -1
    np.save(d / "reflection.npy", mirror)
    lastrow = walk(20)
    lastrow[3, 3, :] = [0, 0, 0.5, 1]
    np.save(d / "bad_last_row.npy", lastrow)
    (d / "pickled.npy").write_bytes(b"\x93NUMPY" + pickle.dumps([1, 2]))
    np.save(d / "object.npy", np.array([walk(), None], dtype=object), allow_pickle=True)
    np.savez(d / "text.npz", extrinsic=np.array(["a", "b"]))
    return {
        "garbage.npy": "camera_unreadable",
        "truncated.npy": "camera_unreadable",
        "truncated.npz": "camera_unreadable",
        "no_extrinsic.npz": "camera_no_extrinsic",
        "shape_3x4.npy": "poses_bad_shape",
        "one_pose.npy": "poses_too_few",
        "nan.npy": "poses_nonfinite",
        "not_orthonormal.npy": "poses_not_rigid",
        "reflection.npy": "poses_not_rigid",
        "bad_last_row.npy": "poses_not_rigid",
        "pickled.npy": "camera_unreadable",
        "object.npy": "camera_unreadable",
        "text.npz": "poses_bad_shape",
    }


def reason_and_message(path) -> tuple[str, str]:
    with pytest.raises(RowError) as info:
        load_trajectory(path)
    return info.value.reason, info.value.message


def test_each_bad_file_gets_its_reason(tmp_path):
    for name, reason in write_bad_files(tmp_path).items():
        got, message = reason_and_message(tmp_path / name)
        assert got == reason, (name, message)
        assert str(tmp_path / name) in message


def test_messages_say_what_was_found(tmp_path):
    write_bad_files(tmp_path)
    assert "intrinsic, poses" in reason_and_message(tmp_path / "no_extrinsic.npz")[1]
    assert "(10, 3, 4)" in reason_and_message(tmp_path / "shape_3x4.npy")[1]
    message = reason_and_message(tmp_path / "nan.npy")[1]
    assert "2 of 20 poses" in message and "first at frame 7" in message
    message = reason_and_message(tmp_path / "not_orthonormal.npy")[1]
    assert "frame 12" in message and "1 of 20 poses fail" in message
    assert "det R = -1" in reason_and_message(tmp_path / "reflection.npy")[1]
    assert "frame 3" in reason_and_message(tmp_path / "bad_last_row.npy")[1]


def test_missing_file_and_folder(tmp_path):
    assert reason_and_message(tmp_path / "nope.npz")[0] == "camera_missing"
    assert reason_and_message(tmp_path)[0] == "camera_unreadable"


def test_good_files_load_as_float64(tmp_path):
    np.savez(tmp_path / "clip.npz", extrinsic=walk(30), intrinsic=np.eye(3, dtype=np.float32))
    poses = load_trajectory(tmp_path / "clip.npz")
    assert poses.dtype == np.float64 and poses.shape == (30, 4, 4)
    np.testing.assert_array_equal(poses, walk(30))
    fixture = load_trajectory(next(FIXTURES.glob("Keys_W_A_Mouse_Left/*.npy")))
    assert fixture.dtype == np.float64 and fixture.shape[1:] == (4, 4)


def test_validate_poses_tolerance():
    poses = walk(5).astype(np.float64)
    poses[2, :3, :3] *= 1 + 2e-4  # RᵀR off by ~4e-4, det by ~6e-4
    validate_poses(poses)  # within the default 1e-3
    with pytest.raises(RowError) as info:
        validate_poses(poses, tol=1e-4)
    assert info.value.reason == "poses_not_rigid"


def test_find_trajectory_files(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/x.npz", "a/deep/y.npy", "b.npy", "a/notes.txt", "a/.tmp-1234abcd-z.npy"):
        (tmp_path / name).write_bytes(b"")
    found = find_trajectory_files([tmp_path / "a", tmp_path / "b.npy", tmp_path / "a" / "x.npz", tmp_path / "a"])
    assert found == sorted([tmp_path / "a/x.npz", tmp_path / "a/deep/y.npy", tmp_path / "b.npy"], key=str)
    assert find_trajectory_files(tmp_path / "a" / "notes.txt") == [tmp_path / "a" / "notes.txt"]


def test_quantize_files_on_a_mixed_folder(tmp_path):
    expected = write_bad_files(tmp_path)
    np.save(tmp_path / "good_a.npy", walk(40))
    np.savez(tmp_path / "good_b.npz", extrinsic=walk(35), intrinsic=np.eye(3))
    table = quantize_files(tmp_path, workers=2, batch_size=4)
    rows = {r["path"]: r for r in table.to_pylist()}
    assert table.num_rows == len(expected) + 2 == len(rows)
    assert table["path"].to_pylist() == sorted(rows)
    for name, reason in expected.items():
        row = rows[str(tmp_path / name)]
        assert (row["status"], row["reason"]) == ("failed", reason)
        assert name in row["error"] and row["keys"] is None
    for name, n in (("good_a.npy", 40), ("good_b.npz", 35)):
        row = rows[str(tmp_path / name)]
        assert (row["status"], row["reason"], row["error"]) == ("ok", None, None)
        assert row["clip_id"] == name.split(".")[0] and row["num_poses"] == n
        assert row["keys"] == ["W"] * (n - 1) and row["mouse"] == ["·"] * (n - 1)
        assert row["speed"] == pytest.approx(1e-3 * 30)
