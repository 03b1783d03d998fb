"""What every stage shares: the manifest schema and statuses, atomic storage, media IO, Sekai's format, config."""

from importlib.metadata import PackageNotFoundError, version

from yume_core.errors import RowError
from yume_core.manifest import (
    CLIP_SCHEMA,
    DROPPED,
    FAILED,
    OK,
    SEGMENT_TYPE,
    conform,
    format_summary,
    mark,
    mark_each,
    read_manifest,
    summarize,
    write_manifest,
)
from yume_core.storage import atomic_path, atomic_write_bytes, atomic_write_text

try:
    __version__ = version("yume-data")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CLIP_SCHEMA",
    "DROPPED",
    "FAILED",
    "OK",
    "SEGMENT_TYPE",
    "RowError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "conform",
    "format_summary",
    "mark",
    "mark_each",
    "read_manifest",
    "summarize",
    "write_manifest",
]
