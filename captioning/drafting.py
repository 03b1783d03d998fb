"""Drafting events: a VLM looks at a first-person start image and writes one event of one category for it.

Yume-1.5's event set paired 10,000 first-person images with events people wrote in four categories; this stage
writes candidates for people to review instead of writing them from scratch. It is the captioning stage's twin:
the same backends (`openai` for `vllm serve` replicas, `vllm` offline, `transformers` with `tiny-random`), the same
seeding (one seed per image, category and prompt version; a re-ask derives its own, `backends.base.answer_sampling`)
and the same answer checks (`validate.check_caption`: empty, refusal, language, loops, truncation, camera motion,
length), plus the **category check**: an answer whose words fit another category better than the one asked
(`off_category`) is asked again, and fails as `event_off_category` when every answer does.

The category check counts each category's keywords (`draft_prompts.Category.pattern`) in the answer. An answer is
off-category when it has none of the asked category's keywords and at least `min_keyword_hits` of another's. One
word of its own is enough to pass, because events mix: a weather event names the market and the children who run
for cover, a fantasy event may start in the rain; counting "more of another's than its own" failed such answers.
An answer with no keyword of any category passes too: keywords cannot prove grounding, only catch a confusion
("heavy rain starts" drafted as fantasy). The lists are data, in the categories file.

One row in, one row out: a batch of (image, category) rows gets `description` and the `draft_*` columns, or a
failed verdict with the reason (`event_refusal`, `event_camera_motion`, `event_off_category`, ...). Rows that
already hold a description are not sent again, so a rerun over a finished batch costs no request.

Images are sent as one 448 x 448 JPEG each (aspect not kept), as the captioning frames are: one InternVL tile, the
whole picture in view (a crop could cut off what the event needs, and InternVL was trained on resized tiles).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from captioning.backends.base import CaptionBackend, CaptionRequest, CaptionResult
from captioning.draft_prompts import Categories, DraftPrompt, load_categories, load_draft_prompt
from captioning.stage import CaptionConfig
from captioning.validate import ValidationConfig, check_caption
from yume_core.errors import RowError
from yume_core.failfast import FailFast
from yume_core.manifest import OK, mark_each
from yume_core.seeds import stable_seed

__all__ = ["DRAFT_FIELDS", "DraftConfig", "EventCheck", "check_event", "draft_seed", "draft_table",
           "off_category"]

DRAFT_FIELDS = [
    ("description", pa.string()),
    ("draft_model", pa.string()),
    ("draft_prompt_version", pa.string()),
    ("draft_seed", pa.int64()),
    ("draft_attempts", pa.int32()),
    ("draft_prompt_tokens", pa.int64()),
    ("draft_output_tokens", pa.int64()),
]


@dataclass(frozen=True)
class EventCheck:
    """The answer checks: the captions' (`ValidationConfig`, with event-sized word bounds) and the category's."""

    min_words: int = 6  # the prompt asks for 12-40 words; a retry costs a request, so only clear misses fail
    max_words: int = 60
    language: str | None = "en"
    max_repeat_ratio: float = 0.3
    min_keyword_hits: int = 1  # off-category: none of the asked category's keywords, this many of another's

    def caption_checks(self) -> ValidationConfig:
        return ValidationConfig(self.min_words, self.max_words, self.language, self.max_repeat_ratio)


@dataclass(frozen=True)
class DraftConfig:
    """The backend options are the caption command's (`CaptionConfig`), so one served model does both jobs."""

    backend: str = "transformers"  # openai | vllm | transformers
    model: str = "tiny-random"
    endpoints: tuple[str, ...] = ()
    concurrency: int = 32
    timeout: float = 120.0
    tensor_parallel_size: int = 1
    max_tokens: int = 96
    temperature: float = 0.0
    seed: int = 0
    max_answer_retries: int = 2
    fail_fast: int = 8
    prompt: str = "draft-v1"  # a packaged drafting prompt or a YAML path
    categories: str = "categories-v1"  # a packaged categories file or a YAML path (the user's own categories)
    image_size: int = 448
    check: EventCheck = field(default_factory=EventCheck)

    def caption_config(self) -> CaptionConfig:
        """The backend's settings in the captioning stage's terms (`captioning.make_backend` takes them)."""
        return CaptionConfig(backend=self.backend, model=self.model, endpoints=tuple(self.endpoints),
                             concurrency=self.concurrency, timeout=self.timeout,
                             tensor_parallel_size=self.tensor_parallel_size, max_tokens=self.max_tokens,
                             temperature=self.temperature, seed=self.seed,
                             max_answer_retries=self.max_answer_retries, fail_fast=self.fail_fast)


def draft_seed(base_seed: int, image_id: str, category: str, prompt_version: str) -> int:
    """An (image, category)'s sampling seed: its own, so its event does not depend on its batch or worker; re-asks
    derive theirs from it, and a new prompt or categories version draws afresh."""
    return stable_seed(base_seed, image_id, category, prompt_version)


def off_category(text: str, category: str, categories: Categories, min_hits: int) -> RowError | None:
    """`event_off_category` when `text` has none of `category`'s keywords and enough of another's (see above)."""
    hits = {c.key: len(c.pattern.findall(text)) for c in categories.categories}
    own = hits.get(category, 0)
    other, best = max(((k, n) for k, n in hits.items() if k != category), key=lambda kv: kv[1], default=(None, 0))
    if other is not None and own == 0 and best >= min_hits:
        return RowError("event_off_category", f"the event reads as {other} ({best} of its keywords) rather than "
                                              f"{category} ({own})")
    return None


def check_event(text: str | None, finish_reason: str | None, category: str, categories: Categories,
                check: EventCheck = EventCheck()) -> tuple[str | None, RowError | None]:
    """(cleaned text, None) for a usable event, else (cleaned text, the RowError with an `event_` reason)."""
    verdict = check_caption(text, finish_reason, check.caption_checks())
    if not verdict.ok:
        return verdict.cleaned, RowError(f"event_{verdict.reason}", verdict.message)
    return verdict.cleaned, off_category(verdict.cleaned, category, categories, check.min_keyword_hits)


def with_draft_columns(table: pa.Table) -> pa.Table:
    for name, kind in DRAFT_FIELDS:
        if name not in table.column_names:
            table = table.append_column(pa.field(name, kind), pa.nulls(table.num_rows, kind))
    return table


def image_jpeg(path: str, size: int, quality: int = 90) -> bytes:
    """The image as one `size` x `size` JPEG (see the module docstring); RowError when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            small = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    except FileNotFoundError:
        raise RowError("image_missing", f"{path}: the image is gone; rerun after restoring it") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RowError("image_unreadable", f"{path}: cannot decode the image ({exc})") from None
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _requests(table: pa.Table, todo: np.ndarray, config: DraftConfig, prompt: DraftPrompt, categories: Categories,
              version: str, failures: dict) -> Iterator[CaptionRequest]:
    ids, images = table["draft_id"].to_pylist(), table["image_id"].to_pylist()
    paths, cats = table["image_path"].to_pylist(), table["category"].to_pylist()
    for i in todo.tolist():
        try:
            jpeg = image_jpeg(paths[i], config.image_size)
        except RowError as exc:
            failures[i] = exc
            continue
        yield CaptionRequest(key=ids[i], messages=prompt.messages(jpeg, categories.get(cats[i])),
                             max_tokens=config.max_tokens, temperature=config.temperature,
                             seed=draft_seed(config.seed, images[i], cats[i], version))


def draft_table(table: pa.Table, backend: CaptionBackend, config: DraftConfig,
                fail_fast: FailFast | None = None) -> pa.Table:
    """Draft an event for every ok row of `table` (`draft_id`, `image_id`, `image_path`, `category`) that has no
    description yet; one row out per row in."""
    prompt, categories = load_draft_prompt(config.prompt), load_categories(config.categories)
    version = prompt.version_with(categories)
    watch = fail_fast or FailFast(config.fail_fast, "events asked of the model", "check the endpoint, the model "
                                  "name, the prompt and the category file; vlm.fail_fast: 0 goes on anyway")
    watch.check()
    table = with_draft_columns(table)
    ok = pc.equal(table["status"], OK)
    todo = np.flatnonzero(pc.fill_null(pc.and_(ok, pc.is_null(table["description"])), False)
                          .to_numpy(zero_copy_only=False))
    failures: dict[int, RowError] = {}
    cleaned: dict[str, str] = {}
    row_of = {table["draft_id"][int(i)].as_py(): int(i) for i in todo}
    cats = table["category"].to_pylist()

    def validate(result: CaptionResult) -> RowError | None:
        text, problem = check_event(result.text, result.finish_reason, cats[row_of[result.key]], categories,
                                    config.check)
        if problem is None:
            cleaned[result.key] = text
        return problem

    def watched(result: CaptionResult) -> None:
        watch.record(result.error and result.error.reason, result.error.message if result.error else "")

    results = backend.caption(_requests(table, todo, config, prompt, categories, version, failures), watched,
                              validate=validate)
    cols = {name: table[name].to_pylist() for name, _ in DRAFT_FIELDS}
    images = table["image_id"].to_pylist()
    for res in results:
        i = row_of[res.key]
        if res.error is not None:
            failures[i] = res.error
            continue
        cols["description"][i] = cleaned[res.key]
        cols["draft_model"][i] = backend.model
        cols["draft_prompt_version"][i] = version
        cols["draft_seed"][i] = draft_seed(config.seed, images[i], cats[i], version)
        cols["draft_attempts"][i] = res.attempts
        cols["draft_prompt_tokens"][i] = res.prompt_tokens
        cols["draft_output_tokens"][i] = res.output_tokens
    for name, kind in DRAFT_FIELDS:
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(cols[name], kind))
    reasons = [failures[i].reason if i in failures else None for i in range(table.num_rows)]
    messages = [failures[i].message if i in failures else None for i in range(table.num_rows)]
    return mark_each(table, reasons, messages)
