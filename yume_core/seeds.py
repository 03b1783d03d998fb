"""Seeds derived from what an item is, never from where it ran: a clip's caption or a prompt's video is drawn with
the same seed whatever batch, worker or retry it lands in, so a rerun of one item gives the bytes a clean run gave.

Python's `hash()` is salted per process; a sha256 of the parts is not.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 63  # fits a signed 64-bit integer: torch, NumPy, vLLM's SamplingParams and JSON clients all take it


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from `parts` (their `str()`, joined by NUL)."""
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << SEED_BITS) - 1)
