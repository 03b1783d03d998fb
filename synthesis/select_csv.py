"""OpenVid-1M's caption CSV -> an Arrow table with one row per data row, damage counted rather than fatal.

Columns as OpenVid writes them: `video, caption, aesthetic score, motion score, temporal consistency score,
camera motion, frame, fps, seconds`. Every column name is snake_cased (lowercase, runs of anything but letters and
digits -> `_`: `aesthetic score` -> `aesthetic_score`), the same rule for columns this module does not know, so the
output is usable from SQL, DuckDB and pandas attribute access without quoting; the rule is one line, so going back
is easy.

Why pyarrow's CSV reader: it parses the ~1M-row file on all cores in C++. Everything is read as bytes first and
converted here, so one row's bad value cannot abort the whole file the way a typed read would:

- a row with the wrong number of fields (a broken quote, a stray comma) is skipped by the parser and reported
  (`csv_malformed`, with the row's text, since a multithreaded parse does not know line numbers);
- a caption that is not valid UTF-8 fails its row (`caption_not_utf8`); other text columns are decoded with
  replacement characters;
- a number that does not parse ("n/a") becomes null and is counted per column; the caption is still usable.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from yume_core.errors import InputError
from yume_core.manifest import FAILED, OK

OPENVID_COLUMNS = (
    "video", "caption", "aesthetic score", "motion score", "temporal consistency score", "camera motion", "frame",
    "fps", "seconds",
)
NUMERIC_COLUMNS = {
    "aesthetic_score": pa.float64(),
    "motion_score": pa.float64(),
    "temporal_consistency_score": pa.float64(),
    "frame": pa.int64(),
    "fps": pa.float64(),
    "seconds": pa.float64(),
}
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
MAX_SNIPPET = 160


class OpenVidFormatError(InputError, ValueError):
    """The file as a whole is not an OpenVid-style caption CSV (not a per-row problem)."""


def snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


@dataclass
class OpenVidRows:
    """`table`: one row per parsed data row in file order (`row` = its 0-based position among them), with the
    snake_cased OpenVid columns plus status/reason/error. `malformed`: the text of each skipped row.
    `unparsed`: per numeric column, how many non-empty values were not numbers (now null)."""

    table: pa.Table
    malformed: list[str] = field(default_factory=list)
    unparsed: dict[str, int] = field(default_factory=dict)


def read_openvid_csv(path: str | Path) -> OpenVidRows:
    """The CSV's rows (a path, or a URL fetched once: the parser wants a local file to read on all cores)."""
    from yume_core import remote

    if remote.is_url(str(path)):
        with remote.input_file(str(path)) as local:
            return _read_openvid_csv(local)
    return _read_openvid_csv(Path(path))


def _read_openvid_csv(path: Path) -> OpenVidRows:
    try:
        with open(path, "rb") as f:
            header_line = f.readline()
    except OSError as exc:
        raise OpenVidFormatError(path, f"cannot open the caption CSV ({exc.strerror})",
                                 "check the path and its permissions") from exc
    names = _header_names(header_line)
    if "caption" not in [n.strip().lower() for n in names]:
        raise OpenVidFormatError(path, f"has no 'caption' column (header: {names})",
                                 f"export it with OpenVid's columns {', '.join(OPENVID_COLUMNS)} in the first line")
    malformed: list[str] = []

    def skip(row) -> str:
        malformed.append(row.text[:MAX_SNIPPET])
        return "skip"

    try:
        raw = pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.binary() for n in names}, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise OpenVidFormatError(path, f"cannot be parsed as CSV ({exc})",
                                 "save it as comma-separated UTF-8 text with one header line") from exc

    n = raw.num_rows
    cols: dict[str, pa.Array] = {}
    unparsed: dict[str, int] = {}
    bad_caption = np.zeros(n, bool)
    for name in raw.column_names:
        key = snake_case(name)
        text, bad = _decode(raw.column(name).combine_chunks())
        if key == "caption":
            bad_caption = bad
            text = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), text)
        if key in NUMERIC_COLUMNS:
            parses = pc.match_substring_regex(text, _NUMBER)
            empty = pc.equal(pc.utf8_trim_whitespace(text), "")
            unparsed[key] = int(pc.sum(pc.and_(pc.invert(parses), pc.invert(empty))).as_py() or 0)
            numbers = pc.cast(pc.if_else(parses, text, pa.scalar(None, pa.string())), pa.float64())
            text = pc.cast(numbers, NUMERIC_COLUMNS[key], safe=False)
        cols[key] = text
    for name in OPENVID_COLUMNS:  # an export that lacks some metadata column still reads, with nulls
        key = snake_case(name)
        if key not in cols:
            cols[key] = pa.nulls(n, NUMERIC_COLUMNS.get(key, pa.string()))

    caption = pc.utf8_trim_whitespace(cols["caption"])
    empty = pc.fill_null(pc.equal(caption, ""), False).to_numpy(zero_copy_only=False)
    reason = np.where(bad_caption, "caption_not_utf8", np.where(empty, "empty_caption", None))
    error = np.where(
        bad_caption,
        "the caption is not valid UTF-8; re-export the CSV as UTF-8",
        np.where(empty, "the caption is empty; nothing to generate from this row", None),
    )
    failed = bad_caption | empty
    table = pa.table({
        "row": pa.array(np.arange(n), pa.int64()),
        **cols,
        "status": pa.array(np.where(failed, FAILED, OK), pa.string()),
        "reason": pa.array(reason, pa.string()),
        "error": pa.array(error, pa.string()),
    })
    return OpenVidRows(table, malformed, {k: v for k, v in unparsed.items() if v})


def _header_names(line: bytes) -> list[str]:
    """The header's field names, parsed with the csv module's quoting rules (pyarrow needs them to type columns)."""
    return next(csv.reader([line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")]), [])


def _decode(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """bytes -> string; values that are not UTF-8 are decoded with replacement characters and flagged."""
    try:
        return pc.cast(col, pa.string()), np.zeros(len(col), bool)
    except pa.ArrowInvalid:
        values, bad = [], np.zeros(len(col), bool)
        for i, v in enumerate(col.to_pylist()):
            try:
                values.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(v.decode("utf-8", errors="replace"))
                bad[i] = True
        return pa.array(values, pa.string()), bad
