"""The captioning stage over a manifest batch: frames -> event caption -> training prompts, one row in, one row out.

CPU preparation and generation overlap: frames are decoded and JPEG-encoded by a bounded pool (`iter_prepared`)
that feeds the backend's request stream, so a GPU server is never waiting on a decoder and memory stays bounded.
Rows that already hold an accepted caption are not sent again (a rerun over a finished manifest costs nothing);
rows whose video cannot be read fail before any request is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from captioning.assemble import segment_prompts
from captioning.backends.base import CaptionBackend, CaptionRequest, CaptionResult
from captioning.frames import FrameConfig, iter_prepared
from captioning.prompts import load_prompt
from captioning.validate import ValidationConfig, check_caption
from yume_core.errors import RowError
from yume_core.failfast import FailFast
from yume_core.manifest import OK, mark_each
from yume_core.seeds import stable_seed

CAPTION_FIELDS = [
    ("caption_event", pa.string()),
    ("caption_model", pa.string()),
    ("caption_prompt_version", pa.string()),
    ("caption_frames", pa.list_(pa.int32())),
    ("caption_prompt_tokens", pa.int64()),
    ("caption_output_tokens", pa.int64()),
    ("caption_attempts", pa.int32()),
    ("prompt_t2v", pa.list_(pa.string())),
    ("prompt_i2v", pa.list_(pa.string())),
]


@dataclass(frozen=True)
class CaptionConfig:
    backend: str = "transformers"  # openai | vllm | transformers
    model: str = "tiny-random"  # hub id, local path, or tiny-random; for openai: the served model name
    endpoints: tuple[str, ...] = ()  # openai: base URLs of the replicas, e.g. http://node1:8000/v1
    concurrency: int = 32  # openai: requests in flight over all replicas
    timeout: float = 120.0  # openai: seconds per request
    tensor_parallel_size: int = 1  # vllm offline engine
    max_tokens: int = 160
    temperature: float = 0.0
    seed: int = 0  # base seed; each clip samples with a seed derived from it, the clip and the prompt version
    max_answer_retries: int = 2  # answers that fail validation are asked again this many times
    fail_fast: int = 8  # stop the run when its first N clips all fail with the same reason (0: never)
    prompt: str = "event-v1"
    frames: FrameConfig = field(default_factory=FrameConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


def with_caption_columns(table: pa.Table) -> pa.Table:
    for name, kind in CAPTION_FIELDS:
        if name not in table.column_names:
            table = table.append_column(pa.field(name, kind), pa.nulls(table.num_rows, kind))
    return table


def caption_seed(base_seed: int, clip_id: str, prompt_version: str) -> int:
    """A clip's sampling seed: its own, so its caption does not depend on what else was in its batch or which
    worker ran it, and a rerun of a killed batch gives the captions a clean run gives. Re-asks of a rejected answer
    derive theirs from it (`backends.base.answer_sampling`); a new prompt version draws afresh."""
    return stable_seed(base_seed, clip_id, prompt_version)


def _requests(table: pa.Table, todo: np.ndarray, config: CaptionConfig, prompt, failures: dict,
              frames_used: dict) -> Iterator[CaptionRequest]:
    paths = table["video_path"].to_pylist()
    frames = table["video_frames"].to_pylist()
    scene = table["caption"].to_pylist()
    clip_ids = table["clip_id"].to_pylist()
    items = ((int(i), paths[i], 0, frames[i]) for i in todo)
    for i, prepared in iter_prepared(items, config.frames):
        if isinstance(prepared, RowError):
            failures[i] = prepared
            continue
        frames_used[i] = [int(x) for x in prepared.indices]
        yield CaptionRequest(
            key=clip_ids[i],  # unique among ok rows (duplicates were dropped); names the clip in server logs
            messages=prompt.messages_with_images(prepared.jpegs, scene_caption=scene[i]),
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            seed=caption_seed(config.seed, clip_ids[i], prompt.version),
        )


FAIL_FAST_HINT = ("the endpoint, the model name, the prompt or the validation settings are at fault, not the clips: "
                  "check them and rerun; caption.fail_fast: 0 goes on anyway")


def captioning_watch(config: CaptionConfig) -> FailFast:
    """The `FailFast` a run shares over its batches (`yume_core.failfast`)."""
    return FailFast(config.fail_fast, "clips sent to the captioner", FAIL_FAST_HINT)


def caption_table(table: pa.Table, backend: CaptionBackend, config: CaptionConfig,
                  fail_fast: FailFast | None = None) -> pa.Table:
    """Caption the ok rows of `table` that have no accepted caption yet; assemble prompts for every ok row.

    `fail_fast`: the run's watch over its first clips' results (default: this call's own); clips whose video
    fails before any request do not count, they are the data's fault."""
    watch = fail_fast or captioning_watch(config)
    watch.check()
    table = with_caption_columns(table)
    prompt = load_prompt(config.prompt)
    ok = pc.equal(table["status"], OK)
    todo = np.flatnonzero(pc.fill_null(pc.and_(ok, pc.is_null(table["caption_event"])), False).to_numpy(zero_copy_only=False))
    failures: dict[int, RowError] = {}
    frames_used: dict[int, list[int]] = {}

    cleaned: dict[str, str] = {}  # key -> accepted answer, cleaned: judged once, kept for the row

    def validate(result: CaptionResult) -> RowError | None:
        verdict = check_caption(result.text, result.finish_reason, config.validation)
        if not verdict.ok:
            return RowError(f"caption_{verdict.reason}", verdict.message)
        cleaned[result.key] = verdict.cleaned
        return None

    def watched(result: CaptionResult) -> None:
        watch.record(result.error and result.error.reason, result.error.message if result.error else "")

    results = backend.caption(_requests(table, todo, config, prompt, failures, frames_used), watched,
                              validate=validate)
    cols = {name: table[name].to_pylist() for name, _ in CAPTION_FIELDS}
    clip_ids = table["clip_id"].to_pylist()
    row_of = {clip_ids[i]: int(i) for i in todo}
    for res in results:
        i = row_of[res.key]
        if res.error is not None:
            failures[i] = res.error
            continue
        cols["caption_event"][i] = cleaned[res.key]
        cols["caption_model"][i] = backend.model
        cols["caption_prompt_version"][i] = prompt.version
        cols["caption_frames"][i] = frames_used[i]
        cols["caption_prompt_tokens"][i] = res.prompt_tokens
        cols["caption_output_tokens"][i] = res.output_tokens
        cols["caption_attempts"][i] = res.attempts
    for name, kind in CAPTION_FIELDS:
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(cols[name], kind))
    reasons = [failures[i].reason if i in failures else None for i in range(table.num_rows)]
    messages = [failures[i].message if i in failures else None for i in range(table.num_rows)]
    table = mark_each(table, reasons, messages)
    return _assemble(table)


def _assemble(table: pa.Table) -> pa.Table:
    ok = [s == OK for s in table["status"].to_pylist()]
    segments = [segs if keep else None for segs, keep in zip(table["segments"].to_pylist(), ok)]
    for name, text in (("prompt_t2v", "caption"), ("prompt_i2v", "caption_event")):
        table = table.set_column(table.schema.get_field_index(name), name, segment_prompts(table[text].to_pylist(), segments))
    return table
