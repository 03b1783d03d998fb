"""What a person sees at the end of a flow: counts by status and reason, the action histogram, the trajectory flags,
where outputs are.

The same summary goes to the terminal, to `summary.json` beside the manifest, and to a Prefect artifact when a
flow run is active (so it shows in the Prefect UI of a server the run reports to).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import quantize_actions
from pipelines.batching import Parts
from yume_core.manifest import OK, format_summary, summarize
from yume_core.remote import public_path
from yume_core.storage import atomic_write_text


def report(manifest: "pa.Table | Parts", out: Path, title: str, seconds: float, extra: dict | None = None) -> dict:
    """`extra`: a stage's own figures (tokens, rates, projections), shown under the counts and kept in the json.

    `manifest` may be `Parts` (e.g. the manifest file just written): then it is read a row group at a time, only
    the columns the counts and the action histogram need."""
    if isinstance(manifest, Parts):
        summary = manifest.summarize()
        hist = _parts_histogram(manifest) if summary["ok"] and "keys" in manifest.column_names else None
        flags = (_add_counts(quantize_actions.flag_counts(t["trajectory_flags"])
                             for t in manifest.iter_tables(["trajectory_flags"]))
                 if "trajectory_flags" in manifest.column_names else None)
    else:
        summary = summarize(manifest)
        ok = manifest.filter(pc.equal(manifest["status"], OK))
        hist = None
        if ok.num_rows and "keys" in ok.column_names:  # clip manifests; prompt and video manifests have no actions
            hist = quantize_actions.action_histogram(ok["keys"], ok["mouse"])
        flags = (quantize_actions.flag_counts(manifest["trajectory_flags"].combine_chunks())
                 if "trajectory_flags" in manifest.column_names else None)
    summary["seconds"] = round(seconds, 2)
    summary["outputs"] = {"manifest": str(out / "manifest.parquet")}
    if (out / "shards").is_dir():
        summary["outputs"]["shards"] = str(out / "shards")
    if hist is not None:
        png = out / "actions_histogram.png"
        quantize_actions.plot_action_histogram(hist, png)
        summary["actions"] = {"keys": hist["keys"], "mouse": hist["mouse"]}
        summary["outputs"]["actions_histogram"] = str(png)
    if flags is not None:
        summary["trajectory_flags"] = flags  # clips checked (rows with poses) and how many carry each flag
    if extra:
        summary[title] = extra
    summary["outputs"] = {k: public_path(v) for k, v in summary["outputs"].items()}  # URLs for a bucket's output
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    text = format_summary(summary, title)
    if flags is not None:
        text += (f"\n  trajectory flags: {flags['flagged']} of {flags['checked']} checked clips (jitter "
                 f"{flags['jitter']}, jump {flags['jump']}, frozen {flags['frozen']})")
    if extra:
        text += "\n" + "\n".join(f"  {k}: {v}" for k, v in extra.items())
    print(text)
    _artifact(summary, title, text)
    return summary


def _parts_histogram(manifest: Parts) -> dict:
    """`action_histogram` of the ok rows, summed over the manifest's row groups (counts add up exactly)."""
    total: dict | None = None
    for t in manifest.iter_tables(["status", "keys", "mouse"]):
        ok = t.filter(pc.equal(t["status"], OK))
        if not ok.num_rows:
            continue
        h = quantize_actions.action_histogram(ok["keys"], ok["mouse"])
        if total is None:
            total = h
            continue
        total["steps"] += h["steps"]
        for name in ("keys", "mouse"):
            for label, n in h[name].items():
                total[name][label] += n
        for k, row in h["pairs"].items():
            for m, n in row.items():
                total["pairs"][k][m] += n
    return total or quantize_actions.action_histogram([], [])


def _add_counts(counts) -> dict:
    total: dict = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total or quantize_actions.flag_counts([])


def _artifact(summary: dict, title: str, text: str) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    rows = [{"status": k, "reason": "", "count": summary[k]} for k in ("in", "ok", "dropped", "failed")]
    rows += summary["by_reason"]
    create_table_artifact(table=rows, key=f"{title}-summary", description=f"```\n{text}\n```")
