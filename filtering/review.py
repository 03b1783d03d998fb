"""Manual screening of generated videos: static review pages, the decisions file they produce, and its verdicts.

Yume-1.5 generated 10,000 Wan 2.2 image-to-video event videos and kept about 4,000 after people watched them. This
module is that step:

1. `make_review(table, videos_root, out_dir)` writes `index.html` and `page-0001.html`, ... : plain HTML a person
   opens from disk (no server, nothing from the network), one card per ok row with a video. Keys move and decide
   (j/k, y/n, e for a note); decisions stay in the browser's localStorage, shared by all pages of the set, until
   "Download decisions" saves them as a CSV `key,decision,note,text`. With a pre-screen score per video
   (`prescreen_score`, `filtering.prescreen`), cards come best first with their scores shown, so the likely
   keepers and the obvious failures are found at the two ends instead of anywhere in 10,000 videos.
   `make_text_review(table, root, out_dir)` writes the same pages for an event set before synthesis: the start
   image, category and text of each event, kept, rejected or with its text edited (`e`), so that only texts
   people accept are rendered; the edited texts travel in the decisions file's `text` column (`read_text_edits`).
2. `read_decisions(path)` reads that CSV (or JSON Lines with the same fields) strictly: a typo in a decisions file
   would otherwise silently keep or drop videos.
3. `apply_review(table, decisions)` adds `review` / `review_note` and drops rejected rows (`rejected_in_review`)
   and, by default, undecided ones (`not_reviewed`); rows are never removed, so counts in equal counts out.
4. `review_counts(table)` gives kept / rejected / not reviewed, overall and per event category, for reports.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from yume_core.errors import InputError
from yume_core.manifest import DROPPED, OK, mark, put_column
from yume_core.storage import atomic_write_text

KEY = "prompt_id"
ORDER = "prescreen_score"  # cards are sorted by it, best first, when the table has it
SCORES = (("prescreen_score", "pre-screen"), ("prescreen_text", "text"), ("prescreen_start", "start image"),
          ("quality_score", "quality"))  # shown on a card, where present
HELP = {
    "video": "j / &darr; / &rarr; next &middot; k / &uarr; / &larr; previous &middot; y keep &middot; n reject "
             "&middot; x clear &middot; e note (Enter or Esc to leave it) &middot; space play/pause",
    "text": "j / &darr; / &rarr; next &middot; k / &uarr; / &larr; previous &middot; y keep &middot; n reject "
            "&middot; x clear &middot; e edit the text &middot; c note (Enter or Esc to leave either)",
}
KEEP, REJECT = "keep", "reject"
DECISIONS = (KEEP, REJECT)
UNREVIEWED_POLICIES = ("drop", "keep", "error")
TEMPLATE = Path(__file__).with_name("review_page.html")
_PAGE = re.compile(r"^page-\d{4,}\.html$")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_SHOW = 10  # keys listed in an error message


class ReviewFormatError(InputError, ValueError):
    """A decisions file (or its pairing with a table) that cannot be trusted as it is; the message says where."""


# ---------------------------------------------------------------------------------------------------------- pages


def make_review(table: pa.Table, videos_root: str | Path, out_dir: str | Path, page_size: int = 200,
                title: str = "Event video screening") -> Path:
    """Write the review pages for the ok rows with a video; return the path of `index.html`.

    Relative `video_path`s (and `image_path`s) are resolved against `videos_root` (the synthesis output folder).
    Rerunning overwrites the pages and removes pages left over from a larger earlier run; decisions already made in
    the browser survive, since they are keyed by `title` and `out_dir`, not by the files.
    """
    missing = {KEY, "status", "video_path"} - set(table.column_names)
    if missing:
        raise ValueError(f"the table has no column(s) {', '.join(sorted(missing))}; pass the synthesis manifest")
    rows = _review_rows(table, Path(os.path.abspath(videos_root)), "video_path")
    return _write_pages(table, rows, out_dir, page_size, title, "video")


def make_text_review(table: pa.Table, images_root: str | Path, out_dir: str | Path, page_size: int = 200,
                     title: str = "Event text review") -> Path:
    """Review pages for the ok rows of an event set (`prompt_id` the event id, `caption` its text, `category`,
    `image_path`): keep, reject or edit each text before any video is rendered. Returns `index.html`'s path."""
    missing = {KEY, "status", "caption", "image_path"} - set(table.column_names)
    if missing:
        raise ValueError(f"the table has no column(s) {', '.join(sorted(missing))}; pass an event set")
    rows = _review_rows(table, Path(os.path.abspath(images_root)), "image_path")
    return _write_pages(table, rows, out_dir, page_size, title, "text")


def _write_pages(table: pa.Table, rows: list[dict], out_dir: str | Path, page_size: int, title: str,
                 mode: str) -> Path:
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    out = Path(os.path.abspath(out_dir))
    pages = [rows[i:i + page_size] for i in range(0, len(rows), page_size)]
    names = [f"page-{n:04d}.html" for n in range(1, len(pages) + 1)]
    out.mkdir(parents=True, exist_ok=True)
    template = TEMPLATE.read_text(encoding="utf-8")
    fill = {"title": html.escape(title), "store": _store_id(title, out), "download_name": _download_name(title),
            "mode": mode, "help": HELP[mode]}
    card = _text_card if mode == "text" else _card
    for n, (name, cards) in enumerate(zip(names, pages)):
        body = "\n".join(card(row, out) for row in cards)
        atomic_write_text(out / name, _render(template, fill | {"nav": _nav(names, n), "body": body}))
    for stale in out.iterdir():
        if _PAGE.match(stale.name) and stale.name not in names:
            stale.unlink()
    index = out / "index.html"
    body = _index_body(table, rows, names, pages, "videos" if mode == "video" else "events")
    atomic_write_text(index, _render(template, fill | {"nav": "", "body": body}))
    return index


def _review_rows(table: pa.Table, root: Path, required: str) -> list[dict]:
    """The rows that get a card, with absolute video and image paths: in table order, or best first by the
    pre-screen score (ties and unscored rows after, by key) when the table has one."""
    has_file = pc.invert(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(table[required]), ""), True))
    chosen = table.filter(pc.and_(pc.fill_null(pc.equal(table["status"], OK), False), has_file))
    wanted = (KEY, "caption", "category", "image_path", "video_path", *(c for c, _ in SCORES))
    rows = chosen.select([c for c in wanted if c in chosen.column_names]).to_pylist()
    for row in rows:
        video = row.get("video_path")
        row["video_abs"] = root / video if video else None  # an absolute path stays as it is
        image = row.get("image_path")
        row["image_abs"] = root / image if image and image.strip() else None
    if ORDER in chosen.column_names:
        rows.sort(key=lambda r: (r[ORDER] is None, -(r[ORDER] or 0.0), r[KEY]))
    return rows


def _scores(row: dict) -> str:
    shown = [(label, row[name]) for name, label in SCORES if row.get(name) is not None]
    if not shown:
        return ""
    parts = [f'<span class="score">{html.escape(label)} {value:.3f}</span>' for label, value in shown]
    return '<div class="scores">' + " &middot; ".join(parts) + "</div>"


def _store_id(title: str, out: Path) -> str:
    """localStorage namespace: file:// pages of every review set share one storage, so each set needs its own."""
    return hashlib.sha256(f"{title}\0{out}".encode()).hexdigest()[:16]


def _download_name(title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:60]
    return f"decisions-{slug or 'review'}.csv"


def _render(template: str, fill: Mapping[str, str]) -> str:
    """Fill the template in one pass, so text inserted for one placeholder is never read as another."""
    return _PLACEHOLDER.sub(lambda m: fill[m.group(1)], template)


def _src(path: Path, page_dir: Path) -> str:
    """URL of `path` relative to the page's folder (the pages move with the videos), else an absolute file URL."""
    try:
        return quote(os.path.relpath(path, page_dir).replace(os.sep, "/"))
    except ValueError:  # another drive on Windows
        return path.as_uri()


def _card_head(row: dict, media: str, attributes: str = "") -> list[str]:
    """A card's opening, shared by video and text cards: its media, key, category and verdict slot."""
    e = html.escape
    parts = [f'<section class="card" data-key="{e(row[KEY])}"{attributes}>', media, '<div class="info">',
             f'<span class="key">{e(row[KEY])}</span>']
    if row.get("category"):
        parts.append(f'<span class="category">{e(row["category"])}</span>')
    return [*parts, '<span class="verdict"></span>']


def _card(row: dict, page_dir: Path) -> str:
    e = html.escape
    video = row["video_abs"]
    parts = _card_head(row, f'<video controls loop muted preload="metadata" src="{e(_src(video, page_dir))}"></video>')
    parts.append(_scores(row))
    if not video.is_file():
        parts.append(f'<div class="missing">video not found: {e(str(video))}</div>')
    parts.append(f'<div class="caption">{e(row.get("caption") or "")}</div>')
    if row["image_abs"] is not None:
        image = e(_src(row["image_abs"], page_dir))
        parts.append(f'<img class="thumb" alt="start image" loading="lazy" src="{image}">')
    parts += ['<button type="button" data-decision="keep">keep (y)</button>',
              '<button type="button" data-decision="reject">reject (n)</button>',
              '<input class="note" type="text" placeholder="note (e)" aria-label="note">',
              '</div>', '</section>']
    return "\n".join(parts)


def _text_card(row: dict, page_dir: Path) -> str:
    """An event before synthesis: its start image, category and text (editable), keep / reject and a note."""
    e = html.escape
    text = " ".join((row.get("caption") or "").split())
    image = row["image_abs"]
    parts = _card_head(row, f'<img class="start" alt="start image" loading="lazy" src="{e(_src(image, page_dir))}">',
                       f' data-text="{e(text)}"')
    if not image.is_file():
        parts.append(f'<div class="missing">image not found: {e(str(image))}</div>')
    parts += [f'<textarea class="text" rows="3" aria-label="event text (e edits)">{e(text)}</textarea>',
              '<button type="button" data-decision="keep">keep (y)</button>',
              '<button type="button" data-decision="reject">reject (n)</button>',
              '<input class="note" type="text" placeholder="note (c)" aria-label="note">',
              '</div>', '</section>']
    return "\n".join(parts)


def _nav(names: list[str], n: int) -> str:
    links = ['<a href="index.html">index</a>']
    if n > 0:
        links.append(f'<a href="{names[n - 1]}">&larr; previous</a>')
    links.append(f"page {n + 1} of {len(names)}")
    if n + 1 < len(names):
        links.append(f'<a href="{names[n + 1]}">next &rarr;</a>')
    return " ".join(links)


def _index_body(table: pa.Table, rows: list[dict], names: list[str], pages: list[list[dict]],
                what: str = "videos") -> str:
    """Counts (what is screened, what is not and why) and one link per page."""
    e = html.escape
    statuses = pc.value_counts(pc.fill_null(table["status"], "(none)")).to_pylist()
    lines = ["<h2>Rows</h2>", '<table class="counts">', "<tr><th>status</th><th>rows</th></tr>"]
    lines += [f"<tr><td>{e(s['values'])}</td><td>{s['counts']}</td></tr>" for s in statuses]
    lines += [f"<tr><td>total</td><td>{table.num_rows}</td></tr>", "</table>",
              f"<p>{len(rows)} {what} to screen (ok rows with a {what[:-1] if what == 'videos' else 'start image'}) "
              f"on {len(pages)} pages.</p>"]
    if "category" in table.column_names and rows:
        cats = Counter(row.get("category") or "(none)" for row in rows)
        lines += ['<table class="counts">', f"<tr><th>category</th><th>{what}</th></tr>"]
        lines += [f"<tr><td>{e(c)}</td><td>{k}</td></tr>" for c, k in cats.items()]
        lines.append("</table>")
    lines.append("<h2>Pages</h2><ol>")
    start = 1
    for name, cards in zip(names, pages):
        lines.append(f'<li><a href="{name}">{name}</a>: {what} {start}&ndash;{start + len(cards) - 1}</li>')
        start += len(cards)
    lines.append("</ol>")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ decisions


def read_decisions(path: str | Path) -> dict[str, tuple[str, str | None]]:
    """`key -> (decision, note)` from a CSV (`key,decision,note`, note optional) or JSON Lines file.

    Strict on purpose: an unknown word, an empty key or a key decided both ways raises ReviewFormatError with the
    file and line instead of guessing. The same key decided the same way twice is fine; its last non-empty note wins.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ReviewFormatError(path, f"unknown decisions file type {path.suffix!r}",
                                "use .csv (key,decision,note, as downloaded from the review pages) or .jsonl")
    text = path.read_text(encoding="utf-8-sig")
    records = _csv_records(path, text) if suffix == ".csv" else _jsonl_records(path, text)
    out: dict[str, tuple[str, str | None]] = {}
    first_line: dict[str, int] = {}
    for line, key, decision, note in records:
        where = f"line {line}"
        key = (key or "").strip()
        if not key:
            raise ReviewFormatError(path, f"{where}: empty key", "every decision needs the video's key (prompt_id)")
        word = (decision or "").strip().lower()
        if word not in DECISIONS:
            raise ReviewFormatError(path, f"{where}: decision {decision!r} for {key!r} is not one of "
                                    f"{', '.join(DECISIONS)}", "write keep or reject (case does not matter)")
        note = (note or "").strip() or None
        if key in out and out[key][0] != word:
            raise ReviewFormatError(path, f"{where}: {key!r} is decided {word!r} here but {out[key][0]!r} on line "
                                    f"{first_line[key]}", "keep one of them")
        first_line.setdefault(key, line)
        out[key] = (word, note or (out[key][1] if key in out else None))
    return out


def read_text_edits(path: str | Path) -> dict[str, str]:
    """`key -> edited text` from a decisions file's `text` column (CSV) or field (JSON Lines): what the text review
    pages changed. Blank texts mean "not edited" and are left out; whitespace is collapsed, as in the pages."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    edits: dict[str, str] = {}
    if path.suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        names = [h.strip().lower() for h in next(reader, None) or []]
        if "text" not in names or "key" not in names:
            return {}
        k, t = names.index("key"), names.index("text")
        for row in reader:
            if len(row) > max(k, t) and row[t].strip():
                edits[row[k].strip()] = " ".join(row[t].split())
    else:
        for raw in text.splitlines():
            rec = json.loads(raw) if raw.strip() else None
            if isinstance(rec, dict) and isinstance(rec.get("text"), str) and rec["text"].strip():
                edits[str(rec.get("key", "")).strip()] = " ".join(rec["text"].split())
    return edits


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, str, str, str | None]]:
    """(line, key, decision, note) per record; line is where the record starts (notes may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    names = [h.strip().lower() for h in header or []]
    if "key" not in names or "decision" not in names:
        found = ", ".join(repr(h) for h in header) if header else "an empty file"
        raise ReviewFormatError(path, f"line 1: the header has no key and decision columns; found {found}",
                                "name the columns key,decision (and optionally note) in the first line")
    at = {name: names.index(name) for name in ("key", "decision", "note") if name in names}
    start = reader.line_num + 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        cells = row + [""] * (len(names) - len(row))
        yield line, cells[at["key"]], cells[at["decision"]], cells[at["note"]] if "note" in at else None


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, str, str, str | None]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError as err:
            raise ReviewFormatError(path, f"line {line}: not JSON ({err})", "write one JSON object per line") from None
        if not isinstance(rec, dict) or "key" not in rec or "decision" not in rec:
            raise ReviewFormatError(path, f"line {line}: not an object with key and decision: {raw.strip()[:80]}",
                                    'write {"key": ..., "decision": ..., "note": ...} (note optional)')
        fields = [rec["key"], rec["decision"], rec.get("note")]
        if not all(v is None or isinstance(v, str) for v in fields):
            raise ReviewFormatError(path, f"line {line}: key, decision and note are not all strings",
                                    "quote them as JSON strings")
        yield line, *fields


# -------------------------------------------------------------------------------------------------------- verdicts


def apply_review(table: pa.Table, decisions: Mapping[str, tuple[str, str | None]], unreviewed: str = "drop",
                 source: str = "decisions") -> pa.Table:
    """The table with `review` (keep / reject / null) and `review_note`; rejected ok rows dropped.

    `unreviewed` says what happens to ok rows nobody decided: `drop` (reason `not_reviewed`), `keep`, or `error`
    (raise; for runs that must be fully screened). Decisions for keys the table lacks raise: a decisions file from
    another set is a mistake. Rows dropped or failed earlier keep their verdict; their decision is only recorded.
    `source` names the decisions in messages (e.g. the file name). Apply the decisions to the table as it was
    before screening, all at once: rows an earlier `apply_review` dropped stay dropped, like any earlier verdict.
    """
    if unreviewed not in UNREVIEWED_POLICIES:
        raise ValueError(f"unreviewed must be one of {', '.join(UNREVIEWED_POLICIES)}, got {unreviewed!r}")
    keys = pa.array(list(decisions), pa.string())
    words = pa.array([_decision_word(d, k, source) for k, (d, _) in decisions.items()], pa.string())
    notes = pa.array([n or None for _, n in decisions.values()], pa.string())
    ids = table[KEY].cast(pa.string()).combine_chunks()
    unknown = pc.filter(keys, pc.invert(pc.is_in(keys, value_set=ids))).to_pylist()
    if unknown:
        raise ReviewFormatError(source, f"{len(unknown)} key(s) are not in this table: {_listing(unknown)}",
                                "are these the decisions for another set? pass the manifest the pages were made from")
    at = pc.index_in(ids, value_set=keys)
    review, note = pc.take(words, at), pc.take(notes, at)
    table = put_column(put_column(table, pa.field("review", pa.string()), review), pa.field("review_note", pa.string()),
                       note)
    undecided = pc.and_(pc.is_null(review), pc.fill_null(pc.equal(table["status"], OK), False))
    if unreviewed == "error" and pc.any(undecided).as_py():
        left = pc.filter(ids, undecided).to_pylist()
        raise ReviewFormatError(source, f"{len(left)} ok row(s) have no decision: {_listing(left)}",
                                "screen them in the review pages, or pass unreviewed='keep' or 'drop'")
    base = "rejected in manual screening"
    error = pc.if_else(pc.is_null(note), base, pc.binary_join_element_wise(base, note, ": "))
    table = mark(table, pc.equal(review, REJECT), DROPPED, "rejected_in_review", error)
    if unreviewed == "drop":
        table = mark(table, undecided, DROPPED, "not_reviewed",
                     f"not decided in {source}; screen this video in the review pages (make_review) and download "
                     "the decisions again, or pass unreviewed='keep' to keep videos nobody screened")
    return table


def _decision_word(decision: str, key: str, source: str) -> str:
    """Decisions built in code (not read from a file) get the same check as a file's."""
    word = str(decision).strip().lower()
    if word not in DECISIONS:
        raise ReviewFormatError(source, f"decision {decision!r} for {key!r} is not one of {', '.join(DECISIONS)}",
                                "write keep or reject")
    return word


def _listing(keys: list) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOW])
    return shown + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


# ---------------------------------------------------------------------------------------------------------- counts

OUTCOMES = ("kept", "rejected", "not_reviewed", "earlier")


def review_counts(table: pa.Table) -> dict:
    """Outcome counts of a reviewed table, overall and (with a `category` column) per category.

    Categories are listed in order of first appearance (a stage does not import the synthesis stage's list).
    Outcomes add up to `rows`: `kept` (decided keep, still ok), `rejected` (dropped in review), `not_reviewed` (ok
    rows nobody decided, whether `apply_review` then dropped or kept them), `earlier` (dropped or failed before
    screening). `ok` is what goes on; `keep_rate` is kept / (kept + rejected), the paper's ~40%.
    """
    if "review" not in table.column_names:
        raise ValueError("the table has no review column; run apply_review first")
    outcome = _outcomes(table)
    ok = pc.fill_null(pc.equal(table["status"], OK), False).to_numpy(zero_copy_only=False)
    result = _tally(outcome, ok)
    if "category" in table.column_names:
        cats = pc.fill_null(table["category"], "unknown").to_numpy(zero_copy_only=False)
        result["by_category"] = {c: _tally(outcome[cats == c], ok[cats == c]) for c in dict.fromkeys(cats.tolist())}
    return result


def _outcomes(table: pa.Table) -> np.ndarray:
    """One OUTCOMES entry per row."""
    def flag(mask) -> np.ndarray:
        return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)

    ok, reason = flag(pc.equal(table["status"], OK)), table["reason"]
    decided_keep = flag(pc.equal(table["review"], KEEP))
    rejected = flag(pc.equal(reason, "rejected_in_review"))
    undecided = flag(pc.equal(reason, "not_reviewed")) | (ok & flag(pc.is_null(table["review"])))
    return np.select([ok & decided_keep, rejected, undecided], OUTCOMES[:3], default=OUTCOMES[3])


def _tally(outcome: np.ndarray, ok: np.ndarray) -> dict:
    counts = {name: int((outcome == name).sum()) for name in OUTCOMES}
    screened = counts["kept"] + counts["rejected"]
    return {"rows": int(outcome.size), **counts, "ok": int(ok.sum()),
            "keep_rate": round(counts["kept"] / screened, 4) if screened else None}
