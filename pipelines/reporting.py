"""What a person sees at the end of a flow: counts by status and reason, the action histogram, where outputs are.

The same summary goes to the terminal, to `summary.json` beside the manifest, and to a Prefect artifact when a
flow run is active (so it shows in the Prefect UI of a server the run reports to).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import quantize_actions
from yume_core.manifest import OK, format_summary, summarize
from yume_core.storage import atomic_write_text


def report(manifest: pa.Table, out: Path, title: str, seconds: float, extra: dict | None = None) -> dict:
    """`extra`: a stage's own figures (tokens, rates, projections), shown under the counts and kept in the json."""
    summary = summarize(manifest)
    summary["seconds"] = round(seconds, 2)
    summary["outputs"] = {"manifest": str(out / "manifest.parquet")}
    if (out / "shards").is_dir():
        summary["outputs"]["shards"] = str(out / "shards")
    ok = manifest.filter(pc.equal(manifest["status"], OK))
    if ok.num_rows and "keys" in ok.column_names:  # clip manifests; prompt and video manifests have no actions
        hist = quantize_actions.action_histogram(ok["keys"], ok["mouse"])
        png = out / "actions_histogram.png"
        quantize_actions.plot_action_histogram(hist, png)
        summary["actions"] = {"keys": hist["keys"], "mouse": hist["mouse"]}
        summary["outputs"]["actions_histogram"] = str(png)
    if extra:
        summary[title] = extra
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    text = format_summary(summary, title)
    if extra:
        text += "\n" + "\n".join(f"  {k}: {v}" for k, v in extra.items())
    print(text)
    _artifact(summary, title, text)
    return summary


def _artifact(summary: dict, title: str, text: str) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    rows = [{"status": k, "reason": "", "count": summary[k]} for k in ("in", "ok", "dropped", "failed")]
    rows += summary["by_reason"]
    create_table_artifact(table=rows, key=f"{title}-summary", description=f"```\n{text}\n```")
