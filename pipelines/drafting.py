"""The draft-events flow: start images in, a drafted event set out (`events.jsonl`) that `synthesize` and the build's
event set read as they are.

    images (an event-images manifest or a folder) -> check each image -> (image x category) rows
      -> [batch] draft_table (a VLM writes one event per row; checked, re-asked, seeded)
      -> near-duplicates across the whole set removed (the prompt selection's dedup, `synthesis.select`)
      -> balance: at most N per category (`per_category`), or a `count` split by the categories' shares
      -> OUT/events.jsonl (the kept events), OUT/manifest.parquet (every row with its verdict), OUT/summary.json

Every (image, category) row ends ok, dropped (`near_duplicate`, `exact_duplicate`, `over_quota`, or an image's own
earlier verdict) or failed (`event_refusal`, `event_camera_motion`, `event_off_category`, `image_too_small`, ...),
so rows out = images in x categories. Batches are resumable parts keyed by the rows (their images' bytes
included) and the settings: a rerun sends no request and writes the same bytes. The dedup and the balance run over
the whole set after the batches, as the VBench cut does, so they never depend on how the set was batched.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow

from captioning import make_backend
from captioning.draft_prompts import load_categories, load_draft_prompt
from captioning.drafting import DraftConfig, draft_table
from pipelines.batching import fingerprint, map_batches
from pipelines.flows import StageFlow
from pipelines.reporting import report
from pipelines.runners import Resources, RunnerConfig, task_runner
from synthesis.dedup_minhash import MinHashConfig
from yume_core.config import ConfigError, to_dict
from yume_core.errors import InputError, RowError
from yume_core.failfast import FailFast
from yume_core.manifest import DROPPED, FAILED, OK, mark, read_manifest, write_manifest
from yume_core.seeds import stable_seed
from yume_core.storage import atomic_write_text, check_writable

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
EVENTS_FILE = "events.jsonl"
_BAD_ID = re.compile(r"[^A-Za-z0-9_-]+")

PAIR_SCHEMA = pa.schema([
    ("draft_id", pa.string()),  # <image_id>-<category>: the event_id of the drafted event
    ("image_id", pa.string()),
    ("image_path", pa.string()),  # absolute
    ("image_sha256", pa.string()),
    ("category", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("error", pa.string()),
])


@dataclass(frozen=True)
class DraftFlowConfig:
    vlm: DraftConfig = field(default_factory=DraftConfig)  # the model that drafts: the caption command's options
    categories: tuple[str, ...] = ()  # draft only these categories of the file (empty: all)
    per_category: int | None = None  # keep at most this many events per category
    count: int | None = None  # or: keep this many in all, split by the categories' shares
    dedup: MinHashConfig = field(default_factory=MinHashConfig)  # near-duplicates across the set (select-prompts')
    min_side: int = 256  # start images smaller than this on their short side fail (as the event set's check does)
    batch_size: int = 64
    runner: RunnerConfig = field(default_factory=lambda: RunnerConfig(kind="threads", workers=1))

    def __post_init__(self):
        if self.per_category is not None and self.count is not None:
            raise ConfigError("give per_category or count, not both")
        for name in ("per_category", "count"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class EventDraftConfig(DraftFlowConfig):
    """A build's `draft:` section of an `i2v_event` set: the flow's settings, and whether the set drafts its events
    on the frames it cut from clips (`inputs.images` always drafts)."""

    enabled: bool = False

    def flow_config(self) -> DraftFlowConfig:
        return DraftFlowConfig(**{f.name: getattr(self, f.name) for f in fields(DraftFlowConfig)})


# ----------------------------------------------------------------------------------------------------- the images


def read_start_images(images: str | Path, min_side: int = 256, workers: int = 4) -> pa.Table:
    """One row per start image: an `event-images` manifest (its rows, verdicts kept) or every image file under a
    folder (sorted). Each ok image is decoded whole and hashed; a bad one fails with the event set's reasons."""
    from synthesis.events import check_image

    src = Path(images)
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        rows = []
        seen: dict[str, str] = {}
        for p in files:
            rel = p.relative_to(src)
            image_id = _BAD_ID.sub("_", str(rel.with_suffix("")).replace(os.sep, "_")).strip("_") or "image"
            row = {"image_id": image_id, "image_path": str(p.resolve()), "status": OK, "reason": None, "error": None}
            if image_id in seen:
                row.update(status=FAILED, reason="duplicate_image_id",
                           error=f"{rel} and {seen[image_id]} both name image {image_id!r}; rename one")
            seen.setdefault(image_id, str(rel))
            rows.append(row)
        if not rows:
            raise InputError(src, "holds no image (.jpg, .jpeg, .png, .webp)", "pass the folder of start images or "
                             "the manifest.parquet that yume-data event-images wrote")
    elif src.suffix == ".parquet":
        table = read_manifest(src)
        missing = {"image_id", "image_path", "status"} - set(table.column_names)
        if missing:
            raise InputError(src, f"has no column(s) {', '.join(sorted(missing))}: it is not an event-images "
                             "manifest", "pass the manifest.parquet that yume-data event-images wrote, or a folder")
        rows = []
        for r in table.select([c for c in ("image_id", "image_path", "clip_id", "status", "reason", "error")
                               if c in table.column_names]).to_pylist():
            image_id = r["image_id"] or f"{r.get('clip_id') or 'row'}-{len(rows)}"
            path = str((src.parent / r["image_path"]).resolve()) if r["image_path"] else None
            rows.append({"image_id": image_id, "image_path": path, "status": r["status"], "reason": r["reason"],
                         "error": r["error"]})
    else:
        raise InputError(src, "is neither a folder nor a .parquet manifest", "pass a folder of start images or "
                         "the manifest.parquet that yume-data event-images wrote")

    def checked(row: dict) -> dict:
        if row["status"] != OK:
            return row
        try:
            check_image(row["image_path"], min_side)
        except RowError as exc:
            return {**row, "status": FAILED, "reason": exc.reason, "error": exc.message}
        return {**row, "image_sha256": hashlib.sha256(Path(row["image_path"]).read_bytes()).hexdigest()}

    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes in C with the GIL released
        rows = list(pool.map(checked, rows))
    names = ("image_id", "image_path", "image_sha256", "status", "reason", "error")
    return pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names})


def pair_rows(images: pa.Table, categories: tuple[str, ...]) -> pa.Table:
    """(image x category) rows, image-major: every image's rows keep its verdict."""
    n, k = images.num_rows, len(categories)
    take = pa.array(np.repeat(np.arange(n), k))
    rep = images.take(take)
    cats = pa.array(list(categories) * n, pa.string())
    ids = pc.binary_join_element_wise(rep["image_id"], cats, "-")
    cols = {"draft_id": ids, "image_id": rep["image_id"], "image_path": rep["image_path"],
            "image_sha256": rep["image_sha256"], "category": cats, "status": rep["status"], "reason": rep["reason"],
            "error": rep["error"]}
    return pa.table(cols, schema=PAIR_SCHEMA)


# ------------------------------------------------------------------------------------------------- over the set


def remove_duplicates(table: pa.Table, dedup: MinHashConfig) -> pa.Table:
    """Near and exact duplicates among the ok descriptions, across categories and images, by the prompt selection's
    own dedup (normalise, hash, MinHash + LSH, verified Jaccard); the first in table order stays."""
    from synthesis.select import SelectConfig, select_prompts
    from synthesis.select_csv import OpenVidRows

    at = np.flatnonzero(pc.fill_null(pc.equal(table["status"], OK), False).to_numpy(zero_copy_only=False))
    if len(at) < 2:
        return table
    n = len(at)
    none = pa.nulls(n, pa.string())
    rows = pa.table({"caption": table["description"].take(pa.array(at)), "row": pa.array(np.arange(n)),
                     "status": pa.array([OK] * n), "reason": none, "error": none})
    with warnings.catch_warnings():  # "fewer distinct than asked": asking for all of them is the point here
        warnings.simplefilter("ignore")
        verdicts, _ = select_prompts(OpenVidRows(rows), SelectConfig(count=n, method="minhash", minhash=dedup))
    ids = np.asarray(table["draft_id"].to_pylist(), dtype=object)[at]
    kept_as: dict[str, str] = {}  # a kept description's content id -> its event
    for pid, status, draft in zip(verdicts["prompt_id"].to_pylist(), verdicts["status"].to_pylist(), ids):
        if status == OK:
            kept_as.setdefault(pid, draft)
    reason, dup_of, sims = (verdicts[c].to_pylist() for c in ("reason", "duplicate_of", "similarity"))
    for kind in ("exact_duplicate", "near_duplicate"):
        hit = np.zeros(table.num_rows, bool)
        errors = np.full(table.num_rows, None, dtype=object)
        for k, (r, d, sim) in enumerate(zip(reason, dup_of, sims)):
            if r == kind:
                hit[at[k]] = True
                errors[at[k]] = f"repeats event {kept_as.get(d, d)} (similarity {sim:.2f}), which is kept"
        if hit.any():
            table = mark(table, pa.array(hit), DROPPED, kind, pa.array(errors, pa.string()))
    return table


def quotas(config: DraftFlowConfig, categories) -> dict[str, int | None]:
    """Events to keep per category: `per_category`, or `count` split by the shares (largest remainders, ties by
    category order), or no limit."""
    keys = categories.keys
    if config.per_category is not None:
        return {k: config.per_category for k in keys}
    if config.count is None:
        return {k: None for k in keys}
    shares = categories.shares()
    exact = np.array([config.count * shares[k] for k in keys])
    base = np.floor(exact).astype(int)
    extra = config.count - int(base.sum())
    order = sorted(range(len(keys)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:extra]:
        base[i] += 1
    return dict(zip(keys, base.tolist()))


def balance(table: pa.Table, limits: dict[str, int | None], seed: int) -> pa.Table:
    """Keep at most each category's quota of ok events: drawn by a seeded hash of the event id, so the choice
    depends on the event alone (not on what else was drafted); the rest are dropped as `over_quota`."""
    ids, cats = table["draft_id"].to_pylist(), table["category"].to_pylist()
    ok = pc.fill_null(pc.equal(table["status"], OK), False).to_pylist()
    over = [False] * table.num_rows
    for cat, limit in limits.items():
        mine = [i for i in range(table.num_rows) if ok[i] and cats[i] == cat]
        if limit is None or len(mine) <= limit:
            continue
        ranked = sorted(mine, key=lambda i: (stable_seed(seed, "balance", ids[i]), ids[i]))
        for i in ranked[limit:]:
            over[i] = True
    if not any(over):
        return table
    msg = pa.array([f"category {c} already has its {limits[c]} events (drawn with seed {seed})" if o else None
                    for o, c in zip(over, cats)], pa.string())
    return mark(table, pa.array(over), DROPPED, "over_quota", msg)


def event_lines(table: pa.Table, out: Path) -> list[str]:
    """The kept events as event-set JSON lines (`synthesis.events`), images relative to the output folder."""
    lines = []
    for r in table.filter(pc.equal(table["status"], OK)).to_pylist():
        image = Path(os.path.relpath(r["image_path"], out)).as_posix()
        lines.append(json.dumps({"event_id": r["draft_id"], "category": r["category"],
                                 "description": r["description"], "image": image, "source": "drafted",
                                 "model": r["draft_model"], "prompt_version": r["draft_prompt_version"],
                                 "draft_seed": r["draft_seed"]}, ensure_ascii=False))
    return lines


def category_summary(table: pa.Table, limits: dict[str, int | None], images_ok: int) -> dict:
    """Per category: asked (its quota, or one event per usable image), drafted (answers that passed the checks),
    removed as duplicates, failed by reason, over the quota, written; and what fell short of the ask."""
    out = {}
    rows = table.select(["category", "status", "reason"]).to_pylist()
    for cat, limit in limits.items():
        mine = [r for r in rows if r["category"] == cat]
        failed: dict[str, int] = {}
        for r in mine:
            if r["status"] == FAILED:
                failed[r["reason"]] = failed.get(r["reason"], 0) + 1
        count = {k: sum(r["reason"] == k for r in mine) for k in ("near_duplicate", "exact_duplicate", "over_quota")}
        written = sum(r["status"] == OK for r in mine)
        asked = images_ok if limit is None else limit
        out[cat] = {"asked": asked, "rows": len(mine), "written": written, "failed": failed,
                    "duplicates": count["near_duplicate"] + count["exact_duplicate"],
                    "over_quota": count["over_quota"], "short": max(0, asked - written)}
    return out


# --------------------------------------------------------------------------------------------------------- the flow


def draft_settings(config: DraftConfig) -> dict:
    """What changes a drafted event: the model and sampling settings, and the texts of the prompt and categories
    themselves (a user's categories file edited without a new version still redraws), not where the servers are."""
    settings = {k: v for k, v in to_dict(config).items() if k not in ("endpoints", "concurrency", "timeout",
                                                                      "fail_fast")}
    prompt, categories = load_draft_prompt(config.prompt), load_categories(config.categories)
    settings["texts"] = [prompt.system, prompt.user, [vars(c) for c in categories.categories]]
    return settings


def draft_batch(batch: pa.Table, config: DraftConfig, fail_fast: FailFast | None = None) -> pa.Table:
    return draft_table(batch, make_backend(config.caption_config()), config, fail_fast)


def _gpus(config: DraftConfig) -> float:
    from pipelines.captioning import caption_gpus

    return caption_gpus(config.caption_config())


def run_draft_events(images: str, output: str, config: DraftFlowConfig) -> dict:
    """The flow body (`draft_events_flow` wraps it); returns the summary (also OUT/summary.json)."""
    out = Path(output)
    started = time.perf_counter()
    categories = load_categories(config.vlm.categories).subset(list(config.categories))
    load_draft_prompt(config.vlm.prompt)
    image_rows = read_start_images(images, config.min_side)
    pairs = pair_rows(image_rows, categories.keys)
    if config.vlm.backend == "openai":
        from pipelines.captioning import check_endpoints

        check_endpoints(config.vlm.caption_config())
    key = fingerprint(pairs, draft_settings(config.vlm), columns=("draft_id", "image_sha256", "category", "status"))
    watch = FailFast(config.vlm.fail_fast, "events asked of the model", "check the endpoint, the model name, the "
                     "prompt and the category file; vlm.fail_fast: 0 goes on anyway")
    step = functools.partial(draft_batch, config=config.vlm, fail_fast=watch)
    with task_runner(config.runner) as runner:
        resources = Resources(cpus=1, gpus=runner.gpus(_gpus(config.vlm)))
        parts = map_batches(step, pairs, out / "_work" / f"drafts-{key}", config.batch_size, "drafts", runner,
                            resources)
    table = pa.concat_tables(list(parts.iter_tables())) if parts.paths else pairs
    table = remove_duplicates(table, config.dedup)
    limits = quotas(config, categories)
    table = balance(table, limits, config.vlm.seed)
    path = write_manifest(table, out / "manifest.parquet")
    lines = event_lines(table, out)
    atomic_write_text(out / EVENTS_FILE, "".join(line + "\n" for line in lines))
    images_ok = sum(s == OK for s in image_rows["status"].to_pylist())
    extra = {"images": image_rows.num_rows, "images_ok": images_ok, "categories": list(categories.keys),
             "prompt_version": load_draft_prompt(config.vlm.prompt).version_with(categories),
             "model": config.vlm.model, "events": len(lines),
             "by_category": category_summary(table, limits, images_ok)}
    summary = report(table, out, title="draft-events", seconds=time.perf_counter() - started, extra=extra)
    summary["outputs"] = {"events": str(out / EVENTS_FILE), "manifest": str(path)}
    return summary


def check_draft_inputs(images: str, output: str, *args, config: DraftFlowConfig, **kwargs) -> None:
    """Before a Prefect run: the prompt and categories load, the images exist, the output folder is writable."""
    load_draft_prompt(config.vlm.prompt)
    load_categories(config.vlm.categories).subset(list(config.categories))
    if not Path(images).exists():
        raise InputError(images, "does not exist", "pass a folder of start images or an event-images manifest")
    check_writable(output)


DRAFT = StageFlow("draft-events", DraftFlowConfig, checks=check_draft_inputs)


@flow(name="draft-events")
def draft_events_flow(images: str, output: str, config: dict | None = None) -> dict:
    """`config` on top of the defaults (`pipelines.flows`)."""
    return run_draft_events(images, output, DRAFT.config(None, config))


def run_draft_events_flow(images: str, output: str, config: DraftFlowConfig) -> dict:
    return DRAFT.launch(draft_events_flow, images, output, config=config)
