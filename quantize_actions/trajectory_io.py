"""Reading camera trajectories from disk: Yume `.npy` segments and Sekai `.npz` camera files.

Every way a file can be unusable becomes a RowError with a reason code and a sentence naming the file, what was
found and what was expected, so a batch run marks that one row failed and goes on. Pickled payloads are refused
(allow_pickle=False): a trajectory never needs them and loading one would run arbitrary code.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from quantize_actions.validate import check_shape, validate_poses
from yume_core import remote
from yume_core.errors import RowError
from yume_core.storage import is_temp

TRAJECTORY_SUFFIXES = (".npy", ".npz")
# what np.load and lazy npz member reads raise on damaged or foreign bytes
_UNREADABLE = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _read(path: Path | str) -> np.ndarray:
    try:
        loaded = np.load(io.BytesIO(remote.read_bytes(path)) if remote.is_url(path) else path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if "extrinsic" not in loaded.files:
                    raise RowError(
                        "camera_no_extrinsic",
                        f"{path}: .npz has no 'extrinsic' array (keys found: {', '.join(loaded.files) or 'none'}); "
                        "expected a Sekai camera file with 'extrinsic' (T, 4, 4) camera-to-world poses",
                    )
                return loaded["extrinsic"]
        return loaded
    except _UNREADABLE as e:
        raise RowError(
            "camera_unreadable",
            f"{path}: cannot be read as a NumPy .npy/.npz trajectory ({type(e).__name__}: {e}); the file is "
            "truncated, corrupt or of another format (pickled objects are refused); re-download or re-export it",
        ) from None


def read_trajectory(path: str | Path) -> np.ndarray:
    """(N, 4, 4) poses as stored (float32 for Sekai), after the checks that need no pass over the values
    (existence, format, shape, at least two poses); `validate_poses` does the rest. `path` may be a URL."""
    if remote.is_url(path):
        if not remote.exists(path):
            raise RowError("camera_missing", f"{path}: no such object; check the camera path or the dataset root")
        poses = _read(path)
        check_shape(poses, source=path)
        return poses
    path = Path(path)
    if not path.exists():
        raise RowError("camera_missing", f"{path}: no such file; check the camera path or the dataset root")
    if not path.is_file():
        raise RowError("camera_unreadable", f"{path}: is not a regular file; expected a .npy or .npz trajectory")
    poses = _read(path)
    check_shape(poses, source=str(path))
    return poses


def load_trajectory(path: str | Path) -> np.ndarray:
    """Validated float64 (N, 4, 4) camera-to-world poses from a `.npy` array or a Sekai `.npz` (`extrinsic`)."""
    poses = read_trajectory(path)
    validate_poses(poses, source=str(path))
    return poses.astype(np.float64)


def read_or_error(path: str | Path | None) -> np.ndarray | RowError:
    """`read_trajectory` with the RowError returned instead of raised, for pool maps over many files."""
    try:
        if path is None:
            raise RowError("camera_missing", "row has no camera_path; the manifest row names no trajectory file")
        return read_trajectory(path)
    except RowError as e:
        return e


def find_trajectory_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files given directly (kept whatever they are, so a bad one becomes a failed row) plus every `.npy`/`.npz`
    under given folders, recursively; sorted, duplicates removed, unfinished atomic-write temp files skipped."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: dict[Path, Path] = {}
    for p in map(Path, paths):
        candidates = (
            (f for f in p.rglob("*") if f.suffix.lower() in TRAJECTORY_SUFFIXES and f.is_file() and not is_temp(f))
            if p.is_dir()
            else [p]
        )
        for f in candidates:
            found.setdefault(f.resolve(), f)
    return sorted(found.values(), key=str)
