"""One reader for every prompts file synthesis accepts, so the generator sees one table shape.

`read_prompts(path)` returns at least `prompt_id` (string), `caption` (string), `image_path` (string, null for
text-to-video), `status`, `reason`, `error`, in that order, then whatever else the file carried. By extension:

- `.parquet`: `select-prompts` output or any table with a `caption` column; `prompt_id` is kept (derived from the
  caption where missing), as are `image_path` and `status`/`reason`/`error` when present (rows already failed or
  dropped upstream stay so);
- `.jsonl`, or `.csv` whose header has `description`: an event set (`synthesis.events`, images checked);
- `.csv` whose header has `caption`: an OpenVid-style caption CSV, every row (no dedup or sampling; that is
  `select-prompts`);
- `.txt`: one prompt per line (a final newline does not make an extra row; a blank line is an empty prompt).

Ids derived from captions use `dedup.content_id`, the same as `select-prompts`, so a prompt has one id whichever
file it came through. Rows that are still ok get two last checks: an empty caption fails (`empty_prompt`), and a
`prompt_id` seen on an earlier ok row drops the later one (`duplicate_prompt`), since ids name output files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synthesis.dedup import content_ids
from synthesis.prompt_rows import PROMPT_COLUMNS
from yume_core.errors import InputError
from yume_core.manifest import DROPPED, FAILED, OK, mark, read_manifest


class PromptsFormatError(InputError, ValueError):
    """The file as a whole cannot be read as prompts (unknown extension, no caption column, no prompts at all)."""


def read_prompts(path: str | Path, min_side: int | None = None) -> pa.Table:
    """Prompts from any supported file (see the module docstring). `min_side`: event images' minimum short side."""
    path = Path(path)
    kind = prompts_kind(path)
    if kind == "parquet":
        table = read_manifest(path)
    elif kind == "events":
        from synthesis.events import MIN_SIDE, read_event_set

        table = read_event_set(path, min_side=MIN_SIDE if min_side is None else min_side)
    elif kind == "captions":
        table = _from_caption_csv(path)
    else:
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
        table = pa.table({"caption": pa.array(lines, pa.string()), "line": pa.array(np.arange(1, len(lines) + 1))})
    if table.num_rows == 0:
        raise PromptsFormatError(path, "holds no prompts", "write one prompt per line (.txt) or row (.csv, .jsonl)")
    return _finish(table)


def prompts_kind(path: str | Path) -> str:
    """How `read_prompts` reads `path` (`parquet`, `events`, `captions` or `lines`), judged from its name, header
    or schema alone: PromptsFormatError (or EventFormatError) when it is no prompts file. Cheap, so a command checks
    its prompts with it before it starts any work; the rows themselves are judged when read."""
    path = Path(path)
    if not path.is_file():
        raise PromptsFormatError(path, "no such prompts file", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            columns = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise PromptsFormatError(path, f"cannot be read as Parquet ({exc})",
                                     "pass the output of yume-data select-prompts") from exc
        if "caption" not in columns:
            raise PromptsFormatError(path, f"has no 'caption' column (columns: {columns})",
                                     "pass the output of yume-data select-prompts, or a Parquet with a caption column")
        return "parquet"
    if suffix == ".jsonl":
        return "events"
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
        if "description" in [h.lower() for h in header]:
            from synthesis.events import check_header

            check_header(path, header)
            return "events"
        if "caption" not in [h.lower() for h in header]:
            raise PromptsFormatError(path, f"has no 'caption' or 'description' column (header: {header})",
                                     "a prompts CSV is an OpenVid CSV (caption) or an event set (description, image)")
        return "captions"
    if suffix == ".txt":
        if not path.read_text(encoding="utf-8-sig", errors="replace").strip():
            raise PromptsFormatError(path, "holds no prompts", "write one prompt per line")
        return "lines"
    raise PromptsFormatError(path, f"prompts come as .parquet, .jsonl, .csv or .txt, not "
                             f"{suffix or 'a file without extension'}", "save them in one of those formats")


def _from_caption_csv(path: Path) -> pa.Table:
    from synthesis.select_csv import OpenVidFormatError, read_openvid_csv

    try:
        rows = read_openvid_csv(path)
    except OpenVidFormatError as exc:
        raise PromptsFormatError(exc.path, exc.problem, exc.fix) from exc
    table = rows.table
    if rows.malformed:
        m = len(rows.malformed)
        bad = {name: pa.nulls(m, table.schema.field(name).type) for name in table.column_names}
        bad["status"] = pa.array([FAILED] * m, pa.string())
        bad["reason"] = pa.array(["csv_malformed"] * m, pa.string())
        bad["error"] = pa.array([f"{path.name}: wrong number of fields in {t[:80]!r}" for t in rows.malformed])
        table = pa.concat_tables([table, pa.table(bad, schema=table.schema)])
    # the empty-caption verdict is this module's, under its own reason code
    empty = pc.equal(table["reason"], "empty_caption")
    for name, value in (("status", OK), ("reason", None), ("error", None)):
        col = pc.if_else(empty, pa.scalar(value, pa.string()), table[name])
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


def _string_column(table: pa.Table, name: str) -> pa.ChunkedArray | pa.Array:
    if name in table.column_names:
        return table[name].cast(pa.string())
    return pa.nulls(table.num_rows, pa.string())


def _finish(table: pa.Table) -> pa.Table:
    n = table.num_rows
    caption = _string_column(table, "caption")
    ids = _string_column(table, "prompt_id")
    if pc.any(pc.is_null(ids)).as_py():
        derived = pa.array(content_ids(caption.to_pylist()), pa.string())
        ids = pc.coalesce(ids, derived)
    status = _string_column(table, "status") if "status" in table.column_names else pa.array([OK] * n, pa.string())
    cols = {
        "prompt_id": ids,
        "caption": caption,
        "image_path": _string_column(table, "image_path"),
        "status": pc.fill_null(status, OK),
        "reason": _string_column(table, "reason"),
        "error": _string_column(table, "error"),
    }
    out = pa.table(cols)
    for name in table.column_names:
        if name not in PROMPT_COLUMNS:
            out = out.append_column(name, table[name])
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(caption), ""), True)
    out = mark(out, blank, FAILED, "empty_prompt", "the prompt is empty; nothing to generate from this row")
    return _drop_repeated_ids(out)


def _drop_repeated_ids(table: pa.Table) -> pa.Table:
    """Later ok rows with an id an earlier ok row has are dropped, pointing at that row."""
    ok = np.asarray(pc.equal(table["status"], OK).to_numpy(zero_copy_only=False), bool)
    ids = np.asarray(table["prompt_id"].to_numpy(zero_copy_only=False), dtype=object)
    first: dict[str, int] = {}
    repeated = np.zeros(len(ids), bool)
    msgs = [None] * len(ids)
    for i in np.flatnonzero(ok):
        j = first.setdefault(ids[i], i)
        if j != i:
            repeated[i] = True
            msgs[i] = f"prompt_id {ids[i]} already used by row {j}; the same prompt is generated once"
    if not repeated.any():
        return table
    return mark(table, pa.array(repeated), DROPPED, "duplicate_prompt", pa.array(msgs, pa.string()))
