"""The rule written the plain way, one step at a time, as Yume's own script does.

It exists as an oracle, not for use: the vectorised `rule.py` takes shortcuts (rigid inverse, closed-form Euler
angles), and the tests and the benchmark hold it against this literal reading of FACTS §3 (np.linalg.inv and
scipy's Euler angles per step, labels built as strings). It is ~40 µs per step; never put it on a data path.
"""

from __future__ import annotations

import numpy as np

from quantize_actions.config import QuantizeConfig
from yume_core.actions import KEY_LABELS, MOUSE_LABELS


def reference_motion(poses: np.ndarray, stride: int = 1) -> np.ndarray:
    """(S, 4): t_x, t_z, Euler angle[0], angle[1] of each step, the values the thresholds are applied to."""
    from scipy.spatial.transform import Rotation  # here, not at the top: keeps `import quantize_actions` light

    sub = np.asarray(poses, np.float64)[::stride]
    out = np.zeros((max(len(sub) - 1, 0), 4))
    for i in range(len(sub) - 1):
        rel = np.linalg.inv(sub[i]) @ sub[i + 1]
        angles = Rotation.from_matrix(rel[:3, :3]).as_euler("xyz")
        out[i] = rel[0, 3], rel[2, 3], angles[0], angles[1]
    return out


def reference_quantize(poses: np.ndarray, config: QuantizeConfig = QuantizeConfig()) -> tuple[np.ndarray, np.ndarray]:
    th, rth = config.translation_cutoff, config.rotation_cutoff
    keys, mouse = [], []
    for t_x, t_z, pitch, yaw in reference_motion(poses, config.stride):
        k = []
        if t_z > th:
            k.append("W")
        if t_z < -th:
            k.append("S")
        if t_x > th:
            k.append("D")
        if t_x < -th:
            k.append("A")
        keys.append(KEY_LABELS.index("+".join(k) if k else "None"))
        vertical = "↑" if pitch > rth else "↓" if pitch < -rth else ""
        horizontal = "→" if yaw > rth else "←" if yaw < -rth else ""
        mouse.append(MOUSE_LABELS.index(vertical + horizontal or "·"))
    return np.array(keys, np.uint8), np.array(mouse, np.uint8)
