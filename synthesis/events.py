"""Event sets: written event descriptions paired with first-person start images, the input of I2V synthesis.

Yume-1.5's event data pairs first-person images with descriptions in four categories (urban daily life, sci-fi,
fantasy, weather) and animates them with Wan 2.2 I2V. This is the file a person writes for that, and its check.

Format: JSON Lines (`.jsonl`, one object per line; blank lines are ignored) or CSV (`.csv`, a header row), with
the fields

    event_id         optional; letters, digits, `_` and `-` only (it names files and WebDataset keys). When
                     absent, an id is derived from category, description and image (`e` + 16 hex characters)
    category         urban_daily_life | sci_fi | fantasy | weather; spellings such as "Urban daily life",
                     "sci-fi", "Sci Fi", "scifi" are accepted and normalised
    description      the event, in words (the prompt), e.g. "A street vendor sets up a noodle stall as rain starts"
    image            path of the first-person start image, relative to the event file's folder or absolute
    negative_prompt  optional
    seed             optional integer (the generation seed for this event)
    source           optional: `drafted` for events a VLM wrote (`yume-data draft-events`), which also carry
                     `model`, `prompt_version` and `draft_seed` (the drafting seed, not the generation seed). A
                     drafted event's category may be one of the user's own categories (a snake_case key of the
                     categories file it was drafted with); a written one must be one of the four, so a typo fails

Example line: {"event_id": "rain-001", "category": "weather", "description": "Heavy rain starts to fall on the
crossing; people open umbrellas and run for cover.", "image": "images/shibuya_0001.jpg"}

`yume-data event-images` writes a template in this format from real clips, with images filled in and category and
description left for a person to complete.

`read_event_set` returns one row per record (`prompt_id`, `caption`, `category`, `image_path` absolute,
`negative_prompt`, `seed`, `line`, image size, `status`/`reason`/`error`); nothing is dropped silently.
Failed rows and their reasons: `json_malformed` / `csv_malformed` (the line is not a record), `bad_event_id`,
`duplicate_event_id` (a later record reuses an id), `unknown_category`, `empty_prompt` (no description),
`bad_seed`, `image_missing` (not given or no file), `image_unreadable` (PIL cannot decode it whole),
`image_too_small` (shorter side under `min_side`).
"""

from __future__ import annotations

import csv
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from synthesis.dedup import content_id
from synthesis.prompt_rows import PROMPT_FIELDS
from yume_core.errors import InputError, RowError
from yume_core.manifest import FAILED, OK

CATEGORIES = ("urban_daily_life", "sci_fi", "fantasy", "weather")
_ALIASES = {
    "scifi": "sci_fi", "science_fiction": "sci_fi", "urban": "urban_daily_life", "urban_life": "urban_daily_life",
    "daily_life": "urban_daily_life", "urban_daily": "urban_daily_life",
}
FIELDS = ("event_id", "category", "description", "image", "negative_prompt", "seed")
_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_USER_CATEGORY = re.compile(r"^[a-z][a-z0-9_]*$")
MIN_SIDE = 256  # pixels; Wan I2V resizes to 480p/720p, and an upscale from less than this is mush

EVENT_SCHEMA = pa.schema([
    *PROMPT_FIELDS,
    ("category", pa.string()),
    ("negative_prompt", pa.string()),
    ("seed", pa.int64()),
    ("line", pa.int64()),  # 1-based line of the record in the file (the first line of a multi-line CSV record)
    ("image_width", pa.int32()),
    ("image_height", pa.int32()),
])


class EventFormatError(InputError, ValueError):
    """The file as a whole is not an event set (wrong extension, no header with the needed columns)."""


def normalize_category(value) -> str | None:
    """The canonical category for a spelling ("Sci-Fi" -> "sci_fi"), or None if it is none of the four."""
    if value is None:
        return None
    key = re.sub(r"[^a-z0-9]+", "_", str(value).strip().lower()).strip("_")
    key = _ALIASES.get(key, key)
    return key if key in CATEGORIES else None


def check_image(path: str | Path, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """(width, height) of an image that decodes completely and is large enough; RowError otherwise."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise RowError("image_missing", f"{p}: no such image file; fix the path (relative to the event file's folder)")
    try:
        with Image.open(p) as img:
            img.load()  # decodes every pixel: a truncated JPEG or PNG fails here, not in the I2V run
            w, h = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise RowError("image_unreadable", f"{p}: cannot decode the image ({exc}); re-export it as JPEG or PNG") from None
    if min(w, h) < min_side:
        raise RowError(
            "image_too_small", f"{p}: {w}x{h} is smaller than {min_side} px on its short side; use a larger image"
        )
    return w, h


def _records(path: Path) -> list[tuple[int, dict | None, str | None]]:
    """(line, record or None, why it is not a record) for each record of a JSONL or CSV file."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if suffix == ".jsonl":
        out = []
        for no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append((no, None, f"json_malformed:line {no} is not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            if not isinstance(rec, dict):
                out.append((no, None, f"json_malformed:line {no} is a JSON {type(rec).__name__}, not an object"))
                continue
            out.append((no, rec, None))
        return out
    if suffix == ".csv":
        reader = csv.reader(text.splitlines(keepends=True))
        header = [h.strip() for h in next(reader, [])]
        check_header(path, header)
        out, line = [], reader.line_num + 1
        for fields in reader:
            if not any(f.strip() for f in fields):
                line = reader.line_num + 1
                continue
            if len(fields) != len(header):
                why = f"line {line} has {len(fields)} fields, the header {len(header)}; quote values with commas"
                out.append((line, None, f"csv_malformed:{why}"))
            else:
                out.append((line, dict(zip(header, fields)), None))
            line = reader.line_num + 1
        return out
    raise EventFormatError(path, f"event sets are .jsonl or .csv files, not {suffix or 'extensionless'}",
                           "save it as JSON Lines or CSV")


def event_records(path: str | Path) -> dict[int, dict]:
    """The records of an event set as written, by their line (`read_event_set`'s `line`): every field kept, so a
    step that rewrites the set (text review) carries fields it does not know (a drafted event's `model`, ...)."""
    return {line: rec for line, rec, _ in _records(Path(path)) if rec is not None}


def check_header(path: Path, header: list[str]) -> None:
    """EventFormatError when an event CSV's header lacks a column every record needs."""
    missing = {"description", "image"} - set(header)
    if missing:
        raise EventFormatError(path, f"the header {header} lacks {sorted(missing)}",
                               f"event CSVs need the columns {', '.join(FIELDS)} in the first line")


def read_event_set(path: str | Path, min_side: int = MIN_SIDE, workers: int = 8) -> pa.Table:
    """Validate an event set (see the module docstring); one row per record, in file order."""
    path = Path(path)
    if not path.is_file():
        raise EventFormatError(path, "no such event file", "check the path")
    base = path.resolve().parent
    rows = []
    seen: dict[str, int] = {}
    for line, rec, problem in _records(path):
        row = {"line": line, "status": OK, "reason": None, "error": None}
        if rec is None:
            reason, msg = problem.split(":", 1)
            rows.append({**row, "status": FAILED, "reason": reason, "error": f"{path.name}: {msg}"})
            continue
        rows.append(_parse_record(rec, row, base, path.name, seen))

    todo = [r for r in rows if r["status"] == OK]
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes in C with the GIL released
        results = list(pool.map(lambda r: _try_image(r["image_path"], min_side), todo))
    for r, res in zip(todo, results):
        if isinstance(res, RowError):
            r.update(status=FAILED, reason=res.reason, error=f"{path.name} line {r['line']}: {res.message}")
        else:
            r["image_width"], r["image_height"] = res
    cols = {f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in EVENT_SCHEMA}
    return pa.table(cols, schema=EVENT_SCHEMA)


def _try_image(p: str, min_side: int):
    try:
        return check_image(p, min_side)
    except RowError as exc:
        return exc


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _parse_record(rec: dict, row: dict, base: Path, fname: str, seen: dict[str, int]) -> dict:
    """Fill one row from a record; the first problem found decides its reason."""
    where = f"{fname} line {row['line']}"
    description = _text(rec.get("description"))
    image = _text(rec.get("image"))
    raw_category = _text(rec.get("category"))
    category = normalize_category(raw_category)
    if category is None and _text(rec.get("source")) == "drafted" and _USER_CATEGORY.match(raw_category):
        category = raw_category  # drafted under a user's categories file, which checked the key
    event_id = _text(rec.get("event_id"))
    seed_raw = rec.get("seed")
    row.update(
        caption=description or None,
        category=category or (raw_category or None),
        image_path=str((base / image).resolve()) if image else None,
        negative_prompt=_text(rec.get("negative_prompt")) or None,
    )
    prompt_id = event_id or content_id(f"{category}\n{description}\n{image}", prefix="e")
    row["prompt_id"] = prompt_id

    def fail(reason: str, msg: str) -> dict:
        return {**row, "status": FAILED, "reason": reason, "error": f"{where}: {msg}"}

    if event_id and not _ID.match(event_id):
        return fail("bad_event_id", f"event_id {event_id!r} may only hold letters, digits, '_' and '-'")
    if prompt_id in seen:
        return fail("duplicate_event_id", f"event_id {prompt_id!r} is already used on line {seen[prompt_id]}")
    seen[prompt_id] = row["line"]
    if category is None:
        got = repr(raw_category) if raw_category else "no category"
        return fail("unknown_category", f"{got}; use one of {', '.join(CATEGORIES)}")
    if not description:
        return fail("empty_prompt", "the description is empty; write the event to generate")
    if seed_raw not in (None, ""):
        try:
            seed = int(str(seed_raw).strip())
        except ValueError:
            return fail("bad_seed", f"seed {seed_raw!r} is not an integer")
        if seed < 0:
            return fail("bad_seed", f"seed {seed} is negative")
        row["seed"] = seed
    if not image:
        return fail("image_missing", "no image given; every event needs a first-person start image")
    return row
