"""Checks that an array really holds camera-to-world poses before the rule reads it.

The rule silently produces labels from anything shaped (N, 4, 4): projection matrices, scaled transforms or NaN
gaps would all become plausible-looking but wrong actions. Each check names the first bad frame and the size of the
error, so a person can find the problem in the file. The per-frame checks are 1-D operations on the 16 component
rows (see `batch.py`), so a whole batch can be screened in one pass and only failing clips re-checked for a message.
"""

from __future__ import annotations

from functools import reduce

import numpy as np

from yume_core.errors import RowError

DEFAULT_TOLERANCE = 1e-3  # accepts float32 storage (errors ~1e-7), rejects scaled or skewed matrices


def check_shape(poses: np.ndarray, source: str = "trajectory") -> None:
    """The cheap checks that need no pass over the data: shape, dtype, at least two poses."""
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise RowError(
            "poses_bad_shape", f"{source}: poses have shape {poses.shape}, expected (N, 4, 4) camera-to-world matrices"
        )
    if not (np.issubdtype(poses.dtype, np.floating) or np.issubdtype(poses.dtype, np.integer)):
        raise RowError("poses_bad_shape", f"{source}: poses have dtype {poses.dtype}, expected floating-point numbers")
    if len(poses) < 2:
        raise RowError("poses_too_few", f"{source}: {len(poses)} pose(s); at least 2 are needed for one action step")


def rigidity_errors(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame of component rows `c` (16, n): max|RᵀR - I|, det R, and the last row's distance from [0,0,0,1]."""
    x, y, z = (c[0], c[4], c[8]), (c[1], c[5], c[9]), (c[2], c[6], c[10])

    def dot(u, v):
        return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]

    orth = reduce(
        np.maximum,
        [np.abs(dot(x, x) - 1), np.abs(dot(y, y) - 1), np.abs(dot(z, z) - 1),
         np.abs(dot(x, y)), np.abs(dot(x, z)), np.abs(dot(y, z))],
    )
    y_cross_z = (y[1] * z[2] - y[2] * z[1], y[2] * z[0] - y[0] * z[2], y[0] * z[1] - y[1] * z[0])
    det = dot(x, y_cross_z)
    last = reduce(np.maximum, [np.abs(c[12]), np.abs(c[13]), np.abs(c[14]), np.abs(c[15] - 1)])
    return orth, det, last


def invalid_frames(columns: np.ndarray, tol: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """bool per frame: non-finite or not rigid within `tol` (NaN errors compare false, so they count as invalid)."""
    orth, det, last = rigidity_errors(columns)
    return ~np.isfinite(columns).all(axis=0) | ~((orth <= tol) & (np.abs(det - 1) <= tol) & (last <= tol))


def validate_poses(poses: np.ndarray, tol: float = DEFAULT_TOLERANCE, source: str = "trajectory") -> None:
    """Raise RowError (poses_bad_shape / poses_too_few / poses_nonfinite / poses_not_rigid) unless `poses` is a
    valid (N >= 2, 4, 4) camera-to-world trajectory: finite, rotation blocks orthonormal with det +1 and last rows
    [0, 0, 0, 1], all within `tol`."""
    a = np.asarray(poses)
    check_shape(a, source)
    c = a.reshape(len(a), 16).T.astype(np.float64)
    nonfinite = ~np.isfinite(c).all(axis=0)
    if nonfinite.any():
        raise RowError(
            "poses_nonfinite",
            f"{source}: {int(nonfinite.sum())} of {len(a)} poses contain NaN or inf (first at frame "
            f"{int(np.argmax(nonfinite))}); pose estimation probably failed there: re-estimate the trajectory or cut "
            "the clip before that frame",
        )
    orth, det, last = rigidity_errors(c)
    bad = (orth > tol) | (np.abs(det - 1) > tol) | (last > tol)
    if bad.any():
        f = int(np.argmax(bad))
        raise RowError(
            "poses_not_rigid",
            f"{source}: pose at frame {f} is not a rigid camera-to-world transform (max|RᵀR - I| = {orth[f]:.3g}, "
            f"det R = {det[f]:.6g}, last row off [0, 0, 0, 1] by {last[f]:.3g}; tolerance {tol:g}); "
            f"{int(bad.sum())} of {len(a)} poses fail. Expected rotation + translation matrices as Sekai's "
            "'extrinsic' stores them, not scaled, projective or intrinsic matrices",
        )
