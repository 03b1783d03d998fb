"""Text review of an event set before synthesis: pages to keep, reject or edit each event, and the reviewed set.

Rendering an event costs minutes of GPU time (Wan 2.2 I2V A14B at 720p); reading its text costs a person seconds.
So drafted events are reviewed as text first, and only the kept texts, as people edited them, are rendered. This
joins two stages (the event set's reader in `synthesis.events`, the review pages and decisions in
`filtering.review`), which is why it lives with the flows and not in either.

- `make_event_review(events, out_dir)`: the text review pages (start image, category, text) for the set's ok rows.
- `apply_event_review(events, decisions, edits, out_dir)`: `out_dir/events.jsonl`, the reviewed event set: the
  kept records as they were, with `description` replaced by the edited text where there is one (the old text kept
  as `original_description`), `review` and `review_note` added, image paths rewritten relative to the new file;
  plus `manifest.parquet` (every record with its verdict: `rejected_in_review`, `not_reviewed`, or the event set's
  own reason) and `summary.json`. `synthesize` and the build read the reviewed set as they read any event set, so
  an edited text reaches the videos' prompts and from there the samples' `event_text`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from filtering.review import apply_review, make_text_review, review_counts
from synthesis.events import event_records, read_event_set
from yume_core.errors import InputError
from yume_core.manifest import OK, put_column, write_manifest
from yume_core.storage import atomic_write_text

EVENTS_FILE = "events.jsonl"


def event_table(events: str | Path) -> pa.Table:
    """The event set's rows (`synthesis.events.read_event_set`: event id as `prompt_id`, text as `caption`)."""
    return read_event_set(events)


def make_event_review(events: str | Path, out_dir: str | Path, page_size: int = 200,
                      title: str | None = None) -> Path:
    """The text review pages of an event set; returns `index.html`'s path."""
    events = Path(events)
    return make_text_review(event_table(events), "/", out_dir, page_size=page_size,
                            title=title or f"{events.parent.name} events")


def apply_event_review(events: str | Path, decisions: Mapping[str, tuple[str, str | None]],
                       edits: Mapping[str, str], out_dir: str | Path, unreviewed: str = "drop",
                       source: str = "decisions") -> dict:
    """Write the reviewed event set (see the module docstring); returns the summary (also `summary.json`)."""
    from pipelines.reporting import report

    events, out = Path(events), Path(out_dir)
    if out.resolve() == events.parent.resolve():
        raise InputError(out, "is the event set's own folder", "write the reviewed set to another folder")
    table = event_table(events)
    ids = set(table["prompt_id"].to_pylist())
    stray = sorted(k for k in edits if k not in ids)
    if stray:
        raise InputError(source, f"edits texts of {len(stray)} event(s) the set does not have: {stray[:10]}",
                         "are these the decisions for another event set?")
    rejected_edits = sorted(k for k, text in edits.items() if decisions.get(k, ("",))[0] != "keep")
    table = apply_review(table, decisions, unreviewed=unreviewed, source=source)
    edited = pa.array([edits.get(k) for k in table["prompt_id"].to_pylist()], pa.string())
    table = put_column(table, pa.field("edited_text", pa.string()), edited)
    records = event_records(events)
    lines = []
    for row in table.filter(pc.equal(table["status"], OK)).to_pylist():
        rec = dict(records[row["line"]])
        rec["event_id"] = row["prompt_id"]  # an id the reader derived (none written) stays the same id
        rec["image"] = Path(os.path.relpath(row["image_path"], out)).as_posix()
        if row["edited_text"] and row["edited_text"] != row["caption"]:
            rec["original_description"] = rec.get("description")
            rec["description"] = row["edited_text"]
        rec["review"] = row["review"] or "not_reviewed"
        if row["review_note"]:
            rec["review_note"] = row["review_note"]
        lines.append(json.dumps(rec, ensure_ascii=False))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / EVENTS_FILE, "".join(line + "\n" for line in lines))
    write_manifest(table, out / "manifest.parquet")
    extra = {**review_counts(table), "edited": sum(1 for line in lines if '"original_description"' in line),
             "edits_on_rejected": len(rejected_edits)}
    summary = report(table, out, title="text-review", seconds=0.0, extra=extra)
    summary["outputs"] = {"events": str(out / EVENTS_FILE), "manifest": str(out / "manifest.parquet")}
    return summary
