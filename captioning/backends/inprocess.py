"""What the in-process backends (`transformers`, `vllm`) share: reading the OpenAI-style messages, and the batch
loop that keeps the backend contract (one result per request, input order, bounded answer retries).

The loop pulls requests from the caller's iterable a batch at a time (so a frame-decoding pool upstream keeps
running ahead of the model and memory stays bounded), hands each batch to the engine, judges every answer with the
caller's validator and puts rejected ones back at the front of the next batch with other sampling
(`base.answer_sampling`). Retries go first so a request's attempts finish close together and its result is not
held back behind the whole stream. `on_result` fires in completion order, in the calling thread.

An engine reports per-request failures as `RowError`s in its list of outcomes; anything it raises is not a row's
fault (engine died, out of memory, a bug) and propagates, abandoning the call, as the contract says.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from captioning.backends.base import (
    CaptionBackend,
    CaptionRequest,
    CaptionResult,
    Validator,
    answer_sampling,
    judge,
    rejected,
)
from captioning.backends.progress import CaptionProgress
from captioning.backends.totals import Stats
from yume_core.errors import RowError

BAD_INPUT = "caption_bad_input"
PROMPT_TOO_LONG = "caption_prompt_too_long"
ENGINE_ERROR = "caption_engine_error"
IMAGE_PLACEHOLDER = "<image>"  # where vLLM's InternVL chat template puts an image given in its own part


@dataclass(frozen=True)
class Attempt:
    """One ask of one request, with the sampling this ask uses."""

    index: int  # position of the request in the call's input
    request: CaptionRequest
    answer_retry: int  # 0 for the first ask
    temperature: float
    seed: int


@dataclass(frozen=True)
class Generation:
    """What the engine answered to one attempt."""

    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    output_tokens: int


Outcome = Generation | RowError
Engine = Callable[[list[Attempt]], list[Outcome]]


@dataclass
class _Tally:
    start: float
    attempts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0


def run_batched(
    requests: Iterable[CaptionRequest],
    engine: Engine,
    *,
    batch_size: int,
    default_seed: int,
    max_answer_retries: int,
    on_result: Callable[[CaptionResult], None] | None = None,
    validate: Validator | None = None,
    stats: Stats | None = None,
    progress: bool | None = False,
    progress_desc: str = "captioning",
) -> list[CaptionResult]:
    """Drive `engine` over `requests` in batches of at most `batch_size` attempts; see the module docstring.
    `stats` accumulates totals; `progress` shows a `CaptionProgress` bar (None: only on a terminal)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bar = CaptionProgress(len(requests) if isinstance(requests, Sized) else None, progress, progress_desc)
    if stats is not None:
        stats.begin()
    try:
        return _run(requests, engine, batch_size, default_seed, max_answer_retries, on_result, validate, stats, bar)
    finally:
        bar.close()
        if stats is not None:
            stats.end()


def _run(requests, engine, batch_size, default_seed, max_answer_retries, on_result, validate, stats, bar):
    source: Iterator[CaptionRequest] = iter(requests)
    exhausted = False
    retries: deque[Attempt] = deque()
    tallies: dict[int, _Tally] = {}
    results: dict[int, CaptionResult] = {}
    count = 0

    def finish(index: int, request: CaptionRequest, outcome: Outcome, error: RowError | None) -> None:
        tally = tallies.pop(index)
        text = finish_reason = None
        if isinstance(outcome, Generation):
            text, finish_reason = outcome.text, outcome.finish_reason
        result = CaptionResult(
            key=request.key, text=text, finish_reason=finish_reason, prompt_tokens=tally.prompt_tokens,
            output_tokens=tally.output_tokens, attempts=tally.attempts, seconds=time.perf_counter() - tally.start,
            endpoint=None, error=error,
        )
        results[index] = result
        bar.update(result)
        if stats is not None:
            stats.add(result)
        if on_result is not None:
            on_result(result)

    while True:
        batch: list[Attempt] = []
        while retries and len(batch) < batch_size:
            batch.append(retries.popleft())
        while not exhausted and len(batch) < batch_size:
            try:
                request = next(source)
            except StopIteration:
                exhausted = True
                break
            base_seed = default_seed if request.seed is None else int(request.seed)
            tallies[count] = _Tally(start=time.perf_counter())
            batch.append(Attempt(count, request, 0, float(request.temperature), base_seed))
            count += 1
        if not batch:
            break
        outcomes = engine(batch)
        if len(outcomes) != len(batch):
            raise RuntimeError(f"engine returned {len(outcomes)} outcomes for {len(batch)} attempts")
        for attempt, outcome in zip(batch, outcomes):
            tally = tallies[attempt.index]
            tally.attempts += 1
            if isinstance(outcome, RowError):
                finish(attempt.index, attempt.request, outcome, outcome)
                continue
            tally.prompt_tokens += outcome.prompt_tokens
            tally.output_tokens += outcome.output_tokens
            candidate = CaptionResult(
                key=attempt.request.key, text=outcome.text, finish_reason=outcome.finish_reason,
                prompt_tokens=tally.prompt_tokens, output_tokens=tally.output_tokens, attempts=tally.attempts,
                seconds=time.perf_counter() - tally.start, endpoint=None,
            )
            verdict = judge(validate, candidate)
            if verdict is None:
                finish(attempt.index, attempt.request, outcome, None)
            elif attempt.answer_retry < max_answer_retries:
                if stats is not None:
                    stats.retried(verdict.reason)
                retry = attempt.answer_retry + 1
                first_seed = default_seed if attempt.request.seed is None else int(attempt.request.seed)
                temperature, seed = answer_sampling(float(attempt.request.temperature), first_seed, retry)
                retries.append(Attempt(attempt.index, attempt.request, retry, temperature, seed))
            else:
                finish(attempt.index, attempt.request, outcome, rejected(verdict, tally.attempts, outcome.text))
    return [results[i] for i in range(count)]


# --- reading the messages --------------------------------------------------------------------------------------


def image_bytes(url: str) -> bytes:
    """The bytes behind an `image_url`: a base64 `data:` URL, a `file://` URL or a local path. Raises RowError."""
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep:
            raise RowError(BAD_INPUT, "an image data URL has no ',' between its header and its data")
        if ";base64" not in header:
            return unquote(payload).encode("latin-1")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RowError(BAD_INPUT, f"an image data URL is not valid base64: {exc}") from None
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise RowError(BAD_INPUT, "in-process backends take images as data: URLs or local files, not http(s) URLs")
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else url)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RowError(BAD_INPUT, f"cannot read image {str(path)!r}: {exc.strerror or exc}") from None


def decode_image(data: bytes, where: str):
    """A fully decoded RGB Pillow image (decoding, not just the header, so a truncated JPEG fails here)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RowError(BAD_INPUT, f"{where} is not a decodable image ({len(data)} bytes): {exc}") from None


def split_messages(messages: list[dict], decode: bool = True) -> tuple[list[dict], list]:
    """OpenAI chat messages -> (messages for a chat template, with `{"type": "image"}` where each image was; the
    decoded images in order). With `decode=False` the images are only checked to decode and not returned.
    Raises RowError(caption_bad_input) for anything malformed."""
    if not isinstance(messages, list) or not messages:
        raise RowError(BAD_INPUT, "the request has no messages")
    out: list[dict] = []
    images: list = []
    n_image = 0
    for m, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise RowError(BAD_INPUT, f"message {m} is not a {{'role': ..., 'content': ...}} dict")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise RowError(BAD_INPUT, f"message {m} has content of type {type(content).__name__}")
        parts: list[dict] = []
        for p, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
            elif kind == "image_url":
                spec = part.get("image_url")
                url = spec.get("url") if isinstance(spec, dict) else spec
                if not isinstance(url, str) or not url:
                    raise RowError(BAD_INPUT, f"message {m} part {p} is an image_url without a url")
                image = decode_image(image_bytes(url), f"image {n_image} (message {m} part {p})")
                n_image += 1
                if decode:
                    images.append(image)
                parts.append({"type": "image"})
            else:
                raise RowError(BAD_INPUT, f"message {m} part {p} has unsupported type {kind!r}")
        out.append({"role": message["role"], "content": _place_images(parts)})
    return out, images


def _place_images(parts: list[dict]) -> list[dict]:
    """Put images where the text's `<image>` placeholders say, as vLLM does for InternVL.

    vLLM renders a message's text parts joined by newlines and, when the text holds exactly one `<image>` per
    image part, puts each image at its placeholder (`captioning.prompts` writes `Frame1: <image>` labels for that);
    otherwise images stand where their parts are. Same here, so both backends show the model the same layout.
    """
    n_images = sum(part["type"] == "image" for part in parts)
    text = "\n".join(part["text"] for part in parts if part["type"] == "text")
    if n_images == 0 or text.count(IMAGE_PLACEHOLDER) != n_images:
        return parts
    placed: list[dict] = []
    for i, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i > 0:
            placed.append({"type": "image"})
            piece = piece[1:] if piece.startswith("\n") else piece  # the template ends an image with a newline
        if piece:
            placed.append({"type": "text", "text": piece})
    return placed


def count_images(messages: list[dict]) -> int:
    return sum(
        1
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


class BatchedBackend(CaptionBackend):
    """An in-process engine: batches of attempts go through `_generate_batch`; `run_batched` keeps the contract
    (input order, one result per request, answer retries, totals). Subclasses set `batch_size`, `seed`,
    `max_answer_retries`, `progress` and `_stats` (a `Stats`)."""

    def _generate_batch(self, batch: list[Attempt]) -> list:
        raise NotImplementedError

    def caption(
        self,
        requests: Iterable[CaptionRequest],
        on_result: Callable[[CaptionResult], None] | None = None,
        *,
        validate: Validator | None = None,
    ) -> list[CaptionResult]:
        return run_batched(
            requests, self._generate_batch, batch_size=self.batch_size, default_seed=self.seed,
            max_answer_retries=self.max_answer_retries, on_result=on_result, validate=validate,
            stats=self._stats, progress=self.progress, progress_desc=f"captioning ({self.name})",
        )

    def stats(self) -> dict:
        """Totals over every call so far (`CaptionTotals.summary()`)."""
        return self._stats.summary()
