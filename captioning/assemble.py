"""Training prompts = event or scene text followed by the action phrases of each segment.

Yume-1.5 decomposes a caption into an event description and an action description. Actions come from the
trajectory (each segment already carries its phrase from the action vocabulary), so a prompt is assembled, never
generated: `prompt_t2v` keeps Sekai's original scene caption, `prompt_i2v` uses the event re-caption. One prompt per
segment, aligned with the row's `segments` list.
"""

from __future__ import annotations

import pyarrow as pa


def join_prompt(text: str | None, phrase: str | None) -> str | None:
    parts = [p.strip() for p in (text, phrase) if p and p.strip()]
    return " ".join(parts) or None


def segment_prompts(texts: list[str | None], segments: list[list[dict] | None]) -> pa.Array:
    """list<string> per row: `text + phrase` for each segment; null where the row has no text or no segments."""
    out = []
    for text, segs in zip(texts, segments):
        if not text or segs is None:
            out.append(None)
        else:
            out.append([join_prompt(text, s.get("phrase")) for s in segs])
    return pa.array(out, pa.list_(pa.string()))
