"""The two action label sets (`yume_core.actions`) as small integer codes.

Per-frame labels are stored and computed as uint8 codes indexing these tuples: a 540M-step dataset then costs bytes
per step, and run detection, majority votes and histograms become integer array operations. The code tables are
derived from the rule's wording (which sign means which letter, and in which order they are joined) so that the
mapping cannot drift from the text of the rule.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from yume_core.actions import KEY_LABELS, MOUSE_LABELS


def _sign_table(labels, first: tuple[str, str], second: tuple[str, str], joiner: str, still: str) -> np.ndarray:
    """table[s1 + 1, s2 + 1] = code of the label for signs s1, s2 in {-1, 0, 1}; first = (negative, positive)."""
    table = np.zeros((3, 3), np.uint8)
    for s1 in (-1, 0, 1):
        for s2 in (-1, 0, 1):
            parts = [pos if sign > 0 else neg for sign, (neg, pos) in ((s1, first), (s2, second)) if sign]
            table[s1 + 1, s2 + 1] = labels.index(joiner.join(parts) if parts else still)
    return table


# keys: forward axis t_z (W/S) before lateral axis t_x (D/A), joined with "+"
KEY_TABLE = _sign_table(KEY_LABELS, ("S", "W"), ("A", "D"), "+", "None")
# mouse: vertical angle[0] (↑/↓) before horizontal angle[1] (→/←), no joiner
MOUSE_TABLE = _sign_table(MOUSE_LABELS, ("↓", "↑"), ("←", "→"), "", "·")

_KEY_ARROW = pa.array(KEY_LABELS, pa.string())
_MOUSE_ARROW = pa.array(MOUSE_LABELS, pa.string())


def key_strings(codes: np.ndarray) -> pa.Array:
    """Codes -> Arrow strings with one C++ take, not a Python list of str."""
    return _KEY_ARROW.take(pa.array(codes))


def mouse_strings(codes: np.ndarray) -> pa.Array:
    return _MOUSE_ARROW.take(pa.array(codes))
