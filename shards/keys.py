"""Sample keys: the clip id made safe for WebDataset, Hugging Face `datasets` and file systems.

Rule: every character outside `[A-Za-z0-9_-]` becomes `_`. So a key has no dots (WebDataset and `datasets` split a
member name at its first dot into key and extension), no path separators, no spaces and nothing non-ASCII.
Sekai ids (`<youtubeId>_<start:07d>_<end:07d>`, YouTube ids made of letters, digits, `_` and `-`) pass unchanged.

The rule is not injective (`a.b` and `a_b` both give `a_b`), so keys are checked across all rows written together:
two clips with the same key raise `KeyCollisionError` naming both, before anything is written. The original clip
id stays in the sample's json and in the index.
"""

from __future__ import annotations

import re
from typing import Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class KeyCollisionError(ValueError):
    """Two different rows map to the same sample key."""


def sanitize_key(clip_id: str) -> str:
    if clip_id is None or str(clip_id) == "":
        raise ValueError("a row without a clip_id cannot become a sample: its key would be empty")
    return _UNSAFE.sub("_", str(clip_id))


def sample_keys(clip_ids: Iterable[str]) -> list[str]:
    """Sanitised keys for `clip_ids`, in order; raises KeyCollisionError if two rows share a key."""
    keys: list[str] = []
    seen: dict[str, str] = {}
    for cid in clip_ids:
        key = sanitize_key(cid)
        if key in seen:
            other = seen[key]
            what = "appears twice in the manifest" if other == cid else f"and clip {other!r} both sanitise to it"
            raise KeyCollisionError(
                f"sample key {key!r} is not unique: clip {cid!r} {what}. Keys keep only [A-Za-z0-9_-] (other "
                "characters become '_'); rename one of the clips or drop the duplicate row."
            )
        seen[key] = cid
        keys.append(key)
    return keys
