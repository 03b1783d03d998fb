"""The one interface every captioning backend implements, and the answer-retry policy they share.

A backend turns `CaptionRequest`s (OpenAI chat messages with the frames already embedded as `image_url` parts) into
`CaptionResult`s. The contract, for every backend (`openai`, `vllm`, `transformers`):

- `caption(requests, on_result=None, *, validate=None)` returns one result per request, in input order. Every request
  gets exactly one result: none is lost, none is answered twice.
- It never raises for a per-request failure (a server error, a timeout, a refused or rejected answer): that request's
  result carries `error`, a `RowError` whose `reason` a summary counts by and whose `message` says what went wrong and
  where. It does raise for what is not a row's fault: an exception from the caller's iterable or callbacks, bad
  configuration found before any request is sent, or a bug; work already in flight for that call is then abandoned.
- `on_result(result)` is called once per request as soon as its final result is known (completion order, not input
  order), in the thread that called `caption`, so a caller can stream results to disk or a progress display.
- `validate(result)` judges an answer the model gave (transport failures never reach it). It returns None to accept,
  or a reason to reject: a short code (`"refusal"`) or a `RowError` (code and message). A rejected answer is asked
  again up to `max_answer_retries` times with other sampling (`answer_sampling`: a higher temperature and another
  seed, since greedy decoding would repeat itself); if the last answer is rejected too, the result keeps that answer's
  text and finish reason and gets `error` with the validator's reason. Validators must be quick and thread-safe.
- Token counts and `attempts` add up every attempt made for the request, rejected answers included: they are what
  the request cost.
- `close()` releases connections, threads or engines; a backend is also a context manager.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from yume_core.errors import RowError
from yume_core.seeds import SEED_BITS

Validator = Callable[["CaptionResult"], "str | RowError | None"]

# The HTTP headers in which server-backed backends send each request's key (percent-encoded) and attempt number
# (from 1), so that server logs can be tied to clips and retries told apart.
KEY_HEADER = "X-Caption-Key"
ATTEMPT_HEADER = "X-Caption-Attempt"

# Each answer retry raises the temperature by this much (capped at 1.0): enough to leave a greedy refusal behind.
ANSWER_RETRY_TEMPERATURE_STEP = 0.3


@dataclass(frozen=True)
class CaptionRequest:
    """One clip to caption. `key` identifies it in results, logs and (for servers) request headers; keep it unique
    within a call. `messages` are OpenAI chat messages, images embedded. `seed` None means the backend's default;
    the captioning stage gives every clip its own (`captioning.stage.caption_seed`), and every backend samples each
    request from its own seed alone, never from a batch's shared RNG state. `meta` is the caller's bookkeeping;
    backends do not send it."""

    key: str
    messages: list[dict]
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CaptionResult:
    """The final outcome of one request. `error` is None exactly when the request succeeded; a failed request may
    still carry the last (rejected) answer in `text`. `seconds` is wall time from the first attempt to this result,
    backoff included; `endpoint` is where the last attempt went (None for in-process backends)."""

    key: str
    text: str | None
    finish_reason: str | None
    prompt_tokens: int
    output_tokens: int
    attempts: int
    seconds: float
    endpoint: str | None
    error: RowError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class CaptionBackend(ABC):
    """Base class of the backends; see the module docstring for the contract."""

    name: ClassVar[str]
    model: str
    max_answer_retries: int

    @abstractmethod
    def caption(
        self,
        requests: Iterable[CaptionRequest],
        on_result: Callable[[CaptionResult], None] | None = None,
        *,
        validate: Validator | None = None,
    ) -> list[CaptionResult]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def judge(validate: Validator | None, result: CaptionResult) -> RowError | None:
    """The validator's verdict on an answer as a `RowError` (None: accepted)."""
    if validate is None:
        return None
    verdict = validate(result)
    if verdict is None or isinstance(verdict, RowError):
        return verdict
    return RowError(verdict, f"the model's answer was rejected: {verdict}")


def answer_sampling(temperature: float, seed: int, answer_retry: int) -> tuple[float, int]:
    """Sampling for the `answer_retry`-th re-ask of a rejected answer (0: the first ask). The seed depends only on
    the request's own seed and the ask, so a re-ask draws the same whatever else is in flight; it stays 63-bit."""
    if answer_retry == 0:
        return temperature, seed
    temperature = min(1.0, temperature + ANSWER_RETRY_TEMPERATURE_STEP * answer_retry)
    return temperature, (seed + answer_retry) & ((1 << SEED_BITS) - 1)


def rejected(error: RowError, asks: int, text: str | None) -> RowError:
    """The final error of a request whose every answer was rejected, quoting the last answer."""
    shown = text if text is None or len(text) <= 200 else text[:200] + "..."
    return RowError(error.reason, f"{error.message} (asked {asks} times; last answer: {shown!r})")
