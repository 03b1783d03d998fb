"""The columns every prompts table starts with, whatever file it came from: the contract between the readers
(`inputs`, `events`) and the generator."""

import pyarrow as pa

PROMPT_FIELDS = [
    ("prompt_id", pa.string()),
    ("caption", pa.string()),
    ("image_path", pa.string()),  # set for image-to-video rows
    ("status", pa.string()),
    ("reason", pa.string()),
    ("error", pa.string()),
]
PROMPT_COLUMNS = tuple(name for name, _ in PROMPT_FIELDS)
