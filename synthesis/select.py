"""Pick N diverse captions from OpenVid-1M for text-to-video synthesis (the paper: 80,000).

Steps, each accounted for row by row (`status`/`reason` on every input row):

1. read the CSV (`select_csv`): malformed lines, empty and non-UTF-8 captions are counted and reported;
2. normalise captions and collapse exact duplicates by hashing (O(n));
3. find near-duplicates among the distinct texts, with `method="minhash"` (word-shingle Jaccard, offline, the
   default) or `method="embedding"` (cosine of sentence embeddings with a model spec; the production option for
   paraphrases), and cluster them (`dedup`); each cluster keeps its first row in CSV order;
4. sample `count` of the kept rows with `numpy.random.default_rng(seed)`; fewer kept than asked: all are
   selected and a warning says so.

Deterministic for a given input and seed: hashing, LSH and k-means use fixed seeds of their own, so the seed only
chooses the sample, and two seeds see the same duplicate clusters. `prompt_id` comes from the caption text
(`dedup.content_id`), so a prompt keeps its id across seeds and reruns and generated videos can be reused.

Outputs (`write_selection`): the selected rows (Parquet, CSV order), every input row with its verdict
(`<stem>.rows.parquet`: `exact_duplicate` / `near_duplicate` rows name the prompt they repeat, `not_sampled` rows
were distinct but not drawn) and a JSON report (`<stem>.report.json`: counts, method, threshold, example pairs).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synthesis.dedup import (
    cluster,
    content_ids,
    first_of_each,
    normalize_captions,
    spread_examples,
    text_ids,
)
from synthesis.dedup_embed import EmbedConfig
from synthesis.dedup_minhash import MinHashConfig
from synthesis.select_csv import OpenVidRows, read_openvid_csv
from yume_core.config import ConfigError
from yume_core.manifest import DROPPED, FAILED, OK, write_manifest
from yume_core.storage import atomic_write_text

METHODS = ("minhash", "embedding")
SELECTED_COLUMNS = (
    "prompt_id", "caption", "video", "aesthetic_score", "motion_score", "temporal_consistency_score",
    "camera_motion", "frame", "fps", "seconds", "row", "cluster_size", "status", "reason", "error",
)


@dataclass(frozen=True)
class SelectConfig:
    count: int = 80_000
    seed: int = 0
    method: str = "minhash"
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    embedding: EmbedConfig = field(default_factory=EmbedConfig)
    examples: int = 5  # duplicate pairs shown in the report

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown dedup method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.count < 0:
            raise ConfigError("count must be >= 0")

    @property
    def threshold(self) -> float:
        return self.minhash.threshold if self.method == "minhash" else self.embedding.threshold


def select_prompts(rows: OpenVidRows, cfg: SelectConfig, progress: bool = False) -> tuple[pa.Table, dict]:
    """Every input row with its verdict (ok = selected), and the report (see the module docstring)."""
    t0 = time.perf_counter()
    table = rows.table
    n = table.num_rows
    norm = normalize_captions(table["caption"])
    status = np.asarray(table["status"].to_numpy(zero_copy_only=False), dtype=object)
    reason = np.asarray(table["reason"].to_numpy(zero_copy_only=False), dtype=object)
    error = np.asarray(table["error"].to_numpy(zero_copy_only=False), dtype=object)
    blank = (status == OK) & pc.fill_null(pc.equal(norm, ""), True).to_numpy(zero_copy_only=False)
    status[blank], reason[blank] = FAILED, "empty_caption"
    error[blank] = "the caption is only punctuation or symbols; nothing to generate from this row"

    ok_rows = np.flatnonzero(status == OK)
    ids = text_ids(norm.take(pa.array(ok_rows))) if len(ok_rows) else np.zeros(0, np.int64)
    first = first_of_each(ids)  # ok-row position of each distinct normalised text, in CSV order
    t_norm = time.perf_counter()
    pi, pj, psim, stats = _pairs(table, norm, ok_rows[first], cfg, progress)
    t_pairs = time.perf_counter()
    groups = cluster(len(first), pi, pj, psim)

    rep_row = ok_rows[first[groups.rep[ids]]] if len(ok_rows) else ok_rows
    prompt_ids = np.asarray(content_ids(table["caption"].to_pylist()), dtype=object)
    dup_of = np.full(n, None, dtype=object)
    similarity = np.full(n, np.nan)
    is_dup = rep_row != ok_rows
    exact = is_dup & (ids == ids[np.searchsorted(ok_rows, rep_row)])
    dup_rows = ok_rows[is_dup]
    dup_of[dup_rows] = prompt_ids[rep_row[is_dup]]
    similarity[ok_rows[exact]] = 1.0
    near_rows = ok_rows[is_dup & ~exact]
    similarity[near_rows] = groups.best[ids[is_dup & ~exact]]
    status[dup_rows] = DROPPED
    reason[ok_rows[exact]] = "exact_duplicate"
    reason[near_rows] = "near_duplicate"
    error[dup_rows] = [f"repeats prompt {p} (kept, CSV row {r})" for p, r in zip(dup_of[dup_rows], rep_row[is_dup])]

    kept = ok_rows[~is_dup]
    warn = []
    if cfg.count >= len(kept):
        chosen = kept
        if cfg.count > len(kept):
            warn.append(
                f"only {len(kept)} distinct captions remain after removing duplicates, fewer than the {cfg.count} "
                f"asked; all {len(kept)} are selected"
            )
    else:
        chosen = np.sort(np.random.default_rng(cfg.seed).choice(kept, cfg.count, replace=False))
    not_chosen = np.setdiff1d(kept, chosen)
    status[not_chosen], reason[not_chosen] = DROPPED, "not_sampled"
    error[not_chosen] = f"distinct, but not among the {cfg.count} drawn with seed {cfg.seed}"
    for w in warn:
        warnings.warn(w, stacklevel=2)

    cluster_size = np.zeros(n, np.int64)  # rows a kept caption stands for (itself included); 0 on other rows
    np.add.at(cluster_size, rep_row, 1)
    out = table.drop_columns(["status", "reason", "error"])
    out = out.add_column(0, "prompt_id", pa.array(prompt_ids, pa.string()))
    out = out.append_column("cluster_size", pa.array(cluster_size, pa.int64()))
    out = out.append_column("duplicate_of", pa.array(dup_of, pa.string()))
    out = out.append_column("similarity", pa.array(similarity, pa.float64(), mask=np.isnan(similarity)))
    out = out.append_column("status", pa.array(status, pa.string()))
    out = out.append_column("reason", pa.array(reason, pa.string()))
    out = out.append_column("error", pa.array(error, pa.string()))
    out = _with_malformed(out, rows.malformed)

    captions = table["caption"]
    examples = _pair_examples(groups, ok_rows[first], captions, cfg.examples)
    exact_examples = _exact_examples(ok_rows, ids, first, captions, cfg.examples)
    counts = _counts(out)
    report = {
        "method": cfg.method,
        "threshold": cfg.threshold,
        "similarity": "jaccard of word shingles" if cfg.method == "minhash" else "cosine of sentence embeddings",
        "seed": cfg.seed,
        "count_asked": cfg.count,
        **counts,
        "unparsed_numbers": rows.unparsed,
        "malformed_examples": rows.malformed[: cfg.examples],
        "index": stats,
        "duplicate_pairs": examples,
        "exact_duplicate_examples": exact_examples,
        "warnings": warn,
        "seconds": {
            "normalise": round(t_norm - t0, 3),
            "near_duplicates": round(t_pairs - t_norm, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
        "config": _config_dict(cfg),
    }
    return out, report


def _pairs(table, norm, rows, cfg: SelectConfig, progress: bool):
    if len(rows) < 2:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0), {}
    if cfg.method == "minhash":
        from synthesis.dedup_minhash import minhash_pairs

        return minhash_pairs(norm.take(pa.array(rows)), cfg.minhash)
    from synthesis.dedup_embed import embedding_pairs

    texts = pc.utf8_trim_whitespace(table["caption"].take(pa.array(rows))).to_pylist()
    return embedding_pairs(texts, cfg.embedding, progress=progress)


def _pair_examples(groups, text_rows, captions, k) -> list[dict]:
    """A few verified pairs spread over the similarity range; `later` is removed, `earlier` is kept unless it
    repeats something earlier still."""

    def side(text: int) -> dict:
        row = int(text_rows[text])
        return {"row": row, "caption": captions[row].as_py()}

    return [
        {"similarity": round(float(groups.pair_sim[e]), 4), "earlier": side(groups.pair_i[e]),
         "later": side(groups.pair_j[e])}
        for e in spread_examples(groups.pair_sim, k)
    ]


def _exact_examples(ok_rows, ids, first, captions, k) -> list[dict]:
    """A few rows whose caption equals an earlier one after normalisation (case, punctuation, spacing)."""
    dup = np.flatnonzero(first[ids] != np.arange(len(ids)))[:k]
    return [
        {"kept": {"row": int(ok_rows[first[ids[d]]]), "caption": captions[int(ok_rows[first[ids[d]]])].as_py()},
         "removed": {"row": int(ok_rows[d]), "caption": captions[int(ok_rows[d])].as_py()}}
        for d in dup
    ]


def _with_malformed(out: pa.Table, malformed: list[str]) -> pa.Table:
    """Append one failed row per CSV line the parser skipped, so the row table accounts for every input row."""
    if not malformed:
        return out
    m = len(malformed)
    extra = {name: pa.nulls(m, out.schema.field(name).type) for name in out.column_names}
    extra["status"] = pa.array([FAILED] * m, pa.string())
    extra["reason"] = pa.array(["csv_malformed"] * m, pa.string())
    extra["error"] = pa.array(
        [f"wrong number of fields in the line starting {t[:80]!r}; fix its quoting" for t in malformed], pa.string()
    )
    return pa.concat_tables([out, pa.table(extra, schema=out.schema)])


def _counts(out: pa.Table) -> dict:
    status = out["status"].to_numpy(zero_copy_only=False)
    reason = out["reason"].to_numpy(zero_copy_only=False)
    by = {}
    for s, r in zip(status[status != OK], reason[status != OK]):
        by[r] = by.get(r, 0) + 1
    return {
        "rows_in": len(status),
        "invalid": {r: c for r, c in sorted(by.items()) if r in _INVALID},
        "exact_duplicates": by.get("exact_duplicate", 0),
        "near_duplicates": by.get("near_duplicate", 0),
        "distinct": int(((status == OK) | (reason == "not_sampled")).sum()),
        "not_sampled": by.get("not_sampled", 0),
        "selected": int((status == OK).sum()),
    }


_INVALID = ("csv_malformed", "empty_caption", "caption_not_utf8")


def _config_dict(cfg: SelectConfig) -> dict:
    d = asdict(cfg)
    d.pop("embedding" if cfg.method == "minhash" else "minhash")
    return d


def selected(rows_table: pa.Table) -> pa.Table:
    """The selected prompts (status ok) in CSV order, with the columns of SELECTED_COLUMNS first."""
    ok = rows_table.filter(pc.equal(rows_table["status"], OK))
    ok = ok.take(pc.sort_indices(ok["row"]))
    first = [c for c in SELECTED_COLUMNS if c in ok.column_names]
    rest = [c for c in ok.column_names if c not in first and c not in ("duplicate_of", "similarity")]
    return ok.select(first + rest)


def output_paths(output: str | Path) -> dict[str, Path]:
    output = Path(output)
    stem = output.name.removesuffix(".parquet")
    return {
        "prompts": output,
        "rows": output.with_name(f"{stem}.rows.parquet"),
        "report": output.with_name(f"{stem}.report.json"),
    }


def write_selection(rows_table: pa.Table, report: dict, output: str | Path) -> dict[str, Path]:
    """Write the selected prompts, the per-row verdicts and the JSON report atomically; return their paths."""
    paths = output_paths(output)
    meta = {"yume_data.select": json.dumps({k: report[k] for k in ("method", "threshold", "seed", "count_asked")})}
    write_manifest(selected(rows_table), paths["prompts"], metadata=meta)
    write_manifest(rows_table, paths["rows"], metadata=meta)
    report = {**report, "outputs": {k: str(v) for k, v in paths.items()}}
    atomic_write_text(paths["report"], json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return paths


def select_prompts_csv(csv_path: str | Path, output: str | Path, cfg: SelectConfig, progress: bool = False) -> dict:
    """Read an OpenVid CSV, select, write everything next to `output`; the report (with `outputs`)."""
    t0 = time.perf_counter()
    rows = read_openvid_csv(csv_path)
    t_read = time.perf_counter() - t0
    table, report = select_prompts(rows, cfg, progress=progress)
    report["input"] = str(csv_path)
    report["seconds"] = {"read": round(t_read, 3), **report["seconds"]}
    paths = write_selection(table, report, output)
    report["outputs"] = {k: str(v) for k, v in paths.items()}
    return report


def format_report(report: dict, width: int = 110) -> str:
    """The terminal summary: counts, then a few removed duplicates beside what they repeat."""
    inv = ", ".join(f"{r} {c}" for r, c in report["invalid"].items()) or "none"
    lines = [
        f"select-prompts ({report['method']}, {report['similarity']} >= {report['threshold']}, seed {report['seed']})",
        f"  rows in {report['rows_in']} | invalid: {inv}",
        (f"  duplicates removed: {report['exact_duplicates']} exact (after normalising case, punctuation, "
         f"spacing) + {report['near_duplicates']} near"),
        (f"  distinct {report['distinct']} | selected {report['selected']} of {report['count_asked']} asked"
         f" | not sampled {report['not_sampled']}"),
    ]
    lines += [f"  warning: {w}" for w in report["warnings"]]

    def clip(text: str) -> str:
        return text if len(text) <= width else text[: width - 3] + "..."

    for ex in report["duplicate_pairs"]:
        lines.append(f"  near duplicate (similarity {ex['similarity']:.3f}):")
        lines.append(f"    row {ex['earlier']['row']:>8}: {clip(ex['earlier']['caption'])}")
        lines.append(f"    row {ex['later']['row']:>8}: {clip(ex['later']['caption'])}  (removed)")
    return "\n".join(lines)
